"""Paper tables beside measured numbers: Table 2 (COCO FID-30K), Table 3 (T2I-CompBench), the WISE and GenEval
tables, the ablation (params, peak training memory, FID); and the checkpoint-series table.

Each builder takes the run's tidy results (`results/table.parquet`, one row per number; see evals/table.py)
and the published numbers (`reports/paper_values.yaml`) and returns a `Table` (reports/tabular.py renders it
as Markdown, LaTeX and CSV). The ablation also takes each model's training stats and the series table the series'
status rows and gate reports, as dicts: the builders read no files (reports/build.py does). Columns are
"paper" (published, with their source in the notes) or "measured" (value with its 95% CI, and a footnote per
cell naming the cell's protocol@version, metric, scorer, n and failures).

Protocol versions. Two numbers are comparable only under one protocol version (`bench@version`, DESIGN §3).
A measured column therefore always belongs to exactly one protocol version: its key contains the version
and its header names it, so results of `t2i_compbench@1` and `t2i_compbench@2` land in separate columns
(mixed_versions="separate", the default). With mixed_versions="refuse" a table whose rows come from more
than one version is not built at all (MixedProtocolVersions, with the versions found) — for a paper
artefact that must show a single protocol. Within a T2I-CompBench column the BLIP-VQA `np_num` must also
be one value (it is what separates the two published PixArt-α sets).

No measured rows for a table → NoData with a message naming what the results do contain; an empty table
is never rendered.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import yaml

from reports.tabular import Cell, Column, Table

PAPER_VALUES = Path(__file__).resolve().parent / "paper_values.yaml"
PROTOCOL_RE = re.compile(r"^(?P<name>[^@/]+)@(?P<version>[^/]+)(?:/(?P<subset>.+))?$")
REQUIRED = ("model", "protocol", "sampler", "steps", "cfg", "metric", "value")
MIXED_MODES = ("separate", "refuse")

# The T2I-CompBench scorer of each category (the official rule); a category with several metrics in one
# column uses this one.
COMPBENCH_KIND = {"color": "compbench_blip_vqa", "shape": "compbench_blip_vqa", "texture": "compbench_blip_vqa",
                  "spatial": "compbench_spatial_2d", "non_spatial": "clip_score", "complex": "compbench_complex",
                  "3d_spatial": "compbench_spatial_3d", "numeracy": "compbench_numeracy"}
# The T2I-CompBench rule scorers (not CLIP, which scores other things too); the compbench_rules table collects
# them from any other protocol.
COMPBENCH_RULE_KINDS = sorted(set(COMPBENCH_KIND.values()) - {"clip_score"})
COMPBENCH_SUBSET_ALIASES = {"non-spatial": "non_spatial", "action": "non_spatial", "3d": "3d_spatial",
                            "spatial_3d": "3d_spatial", "2d_spatial": "spatial"}


class NoData(ValueError):
    """The results hold nothing for this table or figure; the message says what they do hold."""


class MixedProtocolVersions(ValueError):
    """Numbers from different protocol versions (or np_num settings) would share one column or table."""


# ------------------------------------------------------------------------------------------------ inputs
def load_paper_values(path: str | Path | None = None) -> dict:
    return yaml.safe_load(Path(path or PAPER_VALUES).read_text())


def parse_protocol(protocol: str) -> tuple[str, str, str | None]:
    """'t2i_compbench@1/color' → ('t2i_compbench', '1', 'color'); a string without '@' has version ''."""
    m = PROTOCOL_RE.match(str(protocol))
    if not m:
        name, _, subset = str(protocol).partition("/")
        return name, "", subset or None
    return m["name"], m["version"], m["subset"]


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Validated copy with parsed protocol columns: _name, _version, _subset, _tag (name@version)."""
    if frame is None or len(frame) == 0:
        raise NoData("the results table is empty (no numbers): run the scoring rules and `python -m evals.table` "
                     "first; no table or figure is written from an empty table")
    missing = [c for c in REQUIRED if c not in frame]
    if missing:
        raise ValueError(f"results table lacks columns {missing}; expected the output of evals/table.py")
    out = frame.copy()
    parsed = [parse_protocol(p) for p in out["protocol"]]
    out["_name"] = [p[0] for p in parsed]
    out["_version"] = [p[1] for p in parsed]
    out["_subset"] = [p[2] for p in parsed]
    out["_tag"] = [f"{n}@{v}" if v else n for n, v, _ in parsed]
    for col in ("ci_low", "ci_high", "n", "n_failed", "scorer", "kind", "np_num", "higher_is_better"):
        if col not in out:
            out[col] = None
    if "bench" not in out:  # a table without benchmark names: one benchmark per protocol
        out["bench"] = out["_name"]
    out["_scope"] = [prompt_scope(r) for _, r in out.iterrows()]
    return out


def prompt_scope(row) -> str:
    """', first N prompts' for a run cut to part of its prompt set (a benchmark's `limit:`), else ''. A limit
    larger than the set (fewer prompts scored than the limit) cut nothing; one equal to the set's size cut
    nothing either but is labelled, since the number does not record the set's size."""
    limit, scored = _num(row.get("prompt_limit")), _num(row.get("n_prompts"))
    if limit is None or (scored is not None and scored < limit):
        return ""
    return f", first {int(limit)} prompts"


def _num(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def config_label(row) -> str:
    return f"{row['model']} {row['sampler']}-{int(row['steps'])} cfg{float(row['cfg']):g}"


def footnote(row) -> str:
    parts = [f"{row['protocol']}: {row['model']}, metric {row['metric']}"]
    if isinstance(row.get("scorer"), str):
        parts.append(f"scorer {row['scorer']}")
    np_num = _num(row.get("np_num"))
    if np_num is not None:
        parts.append(f"np_num={int(np_num)}")
    n, failed = _num(row.get("n")), _num(row.get("n_failed"))
    if n is not None:
        parts.append(f"n={int(n)}" + (f", failed={int(failed)}" if failed is not None else ""))
    parts.append(f"{row['sampler']}-{int(row['steps'])}, cfg {float(row['cfg']):g}")
    if isinstance(row.get("model_fingerprint"), str):
        parts.append(f"model {row['model_fingerprint']}")
    return "; ".join(parts)


def measured_cell(row) -> Cell:
    return Cell(value=_num(row["value"]), ci_low=_num(row.get("ci_low")), ci_high=_num(row.get("ci_high")),
                note=footnote(row), protocol=str(row["protocol"]))


def _check_versions(rows: pd.DataFrame, mixed_versions: str, what: str):
    if mixed_versions not in MIXED_MODES:
        raise ValueError(f"mixed_versions must be one of {MIXED_MODES}, got {mixed_versions!r}")
    tags = sorted(set(rows["_tag"]))
    if mixed_versions == "refuse" and len(tags) > 1:
        raise MixedProtocolVersions(
            f"{what}: the results come from {len(tags)} protocol versions ({', '.join(tags)}); numbers from "
            f"different versions are not comparable and are never put in one table in 'refuse' mode. Filter the "
            f"results to one version, or build with mixed_versions='separate' (one column per version).")


def _present(frame: pd.DataFrame) -> str:
    tags = sorted(set(frame["_tag"])) if "_tag" in frame else sorted(set(frame["protocol"]))
    return ", ".join(tags) or "none"


def _unique(rows: pd.DataFrame, what: str) -> pd.Series:
    if len(rows) > 1:
        detail = "; ".join(f"{r['metric']} from bench {r.get('bench')} ({r['protocol']}, n={r.get('n')})"
                           for _, r in rows.iterrows())
        raise ValueError(f"{what}: {len(rows)} results for one cell ({detail}); keep one (e.g. filter by bench)")
    return rows.iloc[0]


# ------------------------------------------------------------------------------------------------ Table 2
def is_fid(row) -> bool:
    scorer = row.get("scorer")
    if isinstance(scorer, str) and scorer:
        return scorer.lower().startswith("fid")
    metric = str(row["metric"]).lower()
    return "fid" in metric and "kid" not in metric


def is_clip(row) -> bool:
    if isinstance(row.get("kind"), str):
        return row["kind"] == "clip_score"
    return "clip" in str(row["metric"]).lower() and "fid" not in str(row["metric"]).lower()


def _count_label(n) -> str:
    """'' for COCO-30K's full 30,000 images (or an unknown count), else '10K' or 'n=300'."""
    n = _num(n)
    if n is None or int(n) == 30000:
        return ""
    return f"{int(n) // 1000}K" if int(n) % 1000 == 0 else f"n={int(n)}"


def fid_size(n) -> str:
    """'FID-30K' for the full protocol (or an unknown count), 'FID-10K' / 'FID (n=300)' for fewer images."""
    label = _count_label(n)
    return "FID-30K" if not label else f"FID-{label}" if label.endswith("K") else f"FID ({label})"


def clip_size(n) -> str:
    """'CLIP score' over the full protocol, 'CLIP score (10K)' over fewer images."""
    label = _count_label(n)
    return f"CLIP score ({label})" if label else "CLIP score"


def table2(frame: pd.DataFrame, paper: dict | None = None, mixed_versions: str = "separate",
           bench: str = "coco30k") -> Table:
    """Table 2: paper rows (params, images, FID-30K, GPU-days) then one row per measured configuration, with a
    measured FID column (and CLIP score column when scored) per metric and protocol version."""
    paper = paper or load_paper_values()
    spec = paper["table2_coco_fid30k"]
    frame = prepare(frame)
    rows = frame[frame["_name"] == bench]
    if rows.empty:
        raise NoData(f"Table 2: no {bench}@… results (protocols present: {_present(frame)}); nothing to set "
                     f"beside the paper's FID-30K")
    fid = rows[[is_fid(r) for _, r in rows.iterrows()]]
    clip = rows[[is_clip(r) for _, r in rows.iterrows()]]
    if fid.empty:
        raise NoData(f"Table 2: {bench} results hold no FID metric (metrics: {sorted(set(rows['metric']))})")
    _check_versions(pd.concat([fid, clip]), mixed_versions, "Table 2")

    columns = [Column("params", "#Params", "info"), Column("images", "#Images", "info"),
               Column("gpu_days", "GPU days", "info", digits=0),
               Column("paper_fid", "FID-30K (paper)", "paper", digits=2)]
    # a run limited to fewer captions (e.g. the cfg sweep's FID-10K) is labelled by its size, never as FID-30K
    fid = fid.assign(_size=[fid_size(r["n"]) for _, r in fid.iterrows()])
    # CLIP scores of different prompt counts (coco30k beside a cfg sweep's coco10k) get a column each
    clip = clip.assign(_size=[clip_size(r["n"]) for _, r in clip.iterrows()])
    measured = []
    for (tag, metric, size), _ in pd.concat([fid, clip]).groupby(["_tag", "metric", "_size"], sort=True):
        part = "clip" if size.startswith("CLIP score") else "fid"
        measured.append(Column(f"{part}|{tag}|{metric}|{size}", f"{size} measured ({metric}, {tag})", "measured",
                               4 if part == "clip" else 2, tag))
    table = Table("table2", spec["title"], "Method", [], columns + measured)

    for prow in spec["rows"]:
        label = prow["model"] + (f" ({prow['resolution']} px)" if prow.get("resolution") else "")
        table.rows.append(label)
        for key in ("params", "images"):
            if prow.get(key) is not None:
                table.cells[(label, key)] = Cell(text=str(prow[key]))
        if prow.get("gpu_days") is not None:
            table.cells[(label, "gpu_days")] = Cell(value=float(prow["gpu_days"]), note=prow.get("gpu_days_note"))
        if prow.get("fid30k") is not None:
            table.cells[(label, "paper_fid")] = Cell(value=float(prow["fid30k"]), note=prow.get("note"))

    keys = ["model", "sampler", "steps", "cfg"]
    both = pd.concat([fid.assign(_col="fid"), clip.assign(_col="clip")])
    for config, group in both.sort_values(keys).groupby(keys, sort=False):
        label = config_label(group.iloc[0])
        table.rows.append(label)
        for (part, tag, metric, size), cell_rows in group.groupby(["_col", "_tag", "metric", "_size"]):
            row = _unique(cell_rows, f"Table 2 {label} {metric} {tag}")
            table.cells[(label, f"{part}|{tag}|{metric}|{size}")] = measured_cell(row)
    table.notes = [f"Paper: {spec['source']}.",
                   "Rows and numbers of the paper's table that the project's reference notes do not quote are "
                   "left out (see reports/paper_values.yaml).",
                   "Measured: value [95% CI]; each cell's footnote names its protocol@version. Lower FID is better."]
    return table


# ------------------------------------------------------------------------------------------------ Table 3
def compbench_rows(frame: pd.DataFrame, bench: str = "t2i_compbench") -> pd.DataFrame:
    """T2I-CompBench rows with a `category` column, one metric per (configuration, version, category): the
    category's official scorer (COMPBENCH_KIND) when several metrics scored it. Input must be `prepare`d."""
    rows = frame[frame["_name"] == bench].copy()
    if rows.empty:
        return rows.assign(category=pd.Series(dtype=object))
    rows["category"] = [COMPBENCH_SUBSET_ALIASES.get(str(s), str(s)) if s else "all" for s in rows["_subset"]]
    keep = []
    for _, group in rows.groupby(["_tag", "model", "sampler", "steps", "cfg", "_scope", "category"], sort=False):
        if len(group) == 1:
            keep.append(group.index[0])
            continue
        want = COMPBENCH_KIND.get(group["category"].iloc[0])
        kinds = group["kind"].where(group["kind"].notna(), group["metric"]).astype(str)
        chosen = group[kinds == want] if want else group.iloc[0:0]
        keep.extend(chosen.index if len(chosen) else group.index)
    return rows.loc[keep]


def np_num_columns(group: pd.DataFrame, what: str) -> list[tuple[int | None, pd.DataFrame]]:
    """One measured column per BLIP-VQA np_num of a configuration: [(np_num, rows)]. Scoring the same
    categories at np_num 8 and 2 (the two published sets) gives two columns sharing the rows without np_num;
    any other mix of np_num values across categories is refused."""
    np_value = pd.to_numeric(group["np_num"], errors="coerce")
    np_nums = sorted({int(x) for x in np_value.dropna()})
    if len(np_nums) <= 1:
        return [(np_nums[0] if np_nums else None, group)]
    categories = {n: set(group.loc[np_value == n, "category"]) for n in np_nums}
    if any(cats != categories[np_nums[0]] for cats in categories.values()):
        raise MixedProtocolVersions(
            f"{what}: BLIP-VQA np_num differs between categories "
            f"({', '.join(f'np_num={n}: {sorted(c)}' for n, c in categories.items())}); numbers scored with "
            f"different np_num are not comparable (it is what separates the paper's Set A and Set B). Score every "
            f"BLIP category at each np_num, or at one.")
    return [(n, group[(np_value == n) | np_value.isna()]) for n in sorted(np_nums, reverse=True)]


def add_compbench_columns(table: Table, rows: pd.DataFrame, row_label: dict, what: str) -> None:
    """One measured column per (protocol version, model, sampler, steps, cfg, prompt limit) and BLIP-VQA np_num."""
    keys = ["_tag", "model", "sampler", "steps", "cfg", "_scope"]
    for (tag, *_, scope), group in rows.sort_values(keys).groupby(keys, sort=False):
        label = f"measured: {config_label(group.iloc[0])} ({tag}{scope}"
        for np_num, part in np_num_columns(group, f"{what} {label})"):
            column_label = label + (f", np_num={np_num})" if np_num is not None else ")")
            key = f"measured|{tag}|{column_label}"
            table.columns.append(Column(key, column_label, "measured", 4, tag))
            for cat, cat_rows in part.groupby("category"):
                row = _unique(cat_rows, f"{what} {column_label} {cat}")
                table.cells[(row_label[cat], key)] = measured_cell(row)


def table3(frame: pd.DataFrame, paper: dict | None = None, mixed_versions: str = "separate",
           bench: str = "t2i_compbench") -> Table:
    """Table 3: categories as rows; both published PixArt-α sets (A: np_num=2 era, B: np_num=8) and the
    reference rows as paper columns; one measured column per configuration and protocol version."""
    paper = paper or load_paper_values()
    spec = paper["table3_t2i_compbench"]
    frame = prepare(frame)
    rows = compbench_rows(frame, bench)
    if rows.empty:
        raise NoData(f"Table 3: no {bench}@… results (protocols present: {_present(frame)})")
    _check_versions(rows, mixed_versions, "Table 3")
    labels = spec.get("category_labels", {})
    cats = list(spec["categories"]) + sorted(set(rows["category"]) - set(spec["categories"]))
    cats = [c for c in cats if c in set(rows["category"]) or c in spec["categories"]]
    row_label = {c: labels.get(c, c) for c in cats}
    columns = [Column(f"paper|{p['key']}", f"paper: {p['model']}", "paper", 4) for p in spec["rows"]]
    table = Table("table3", spec["title"], "Category", [row_label[c] for c in cats], columns)
    for p in spec["rows"]:
        for cat, value in p["values"].items():
            if cat in row_label:
                table.cells[(row_label[cat], f"paper|{p['key']}")] = Cell(value=float(value))

    add_compbench_columns(table, rows, row_label, "Table 3")
    table.notes = [f"Why the two PixArt-α sets differ: {' '.join(spec['why_sets_differ'].split())}"]
    table.notes += [f"{p['model']}: {p['source']}." + (f" {p['note']}" if p.get("note") else "") for p in spec["rows"]]
    table.notes.append("Measured: value [95% CI]; each cell's footnote names its protocol@version, metric and "
                       "scorer. Compare np_num=8 measurements with Set B, np_num=2 ones with Set A's BLIP columns (its "
                       "complex column also came from the Oct-2023 scripts, whose 3_in_1.py hard-coded 30 images "
                       "per prompt). Categories without a BLIP "
                       "term (spatial, non-spatial, 3D, numeracy) appear in both np_num columns.")
    extra = sorted(set(rows["category"]) - set(spec["categories"]))
    if extra:
        table.notes.append(f"Subsets without a paper value: {', '.join(extra)} (different prompt list or category).")
    return table


def table_compbench_rules(frame: pd.DataFrame, paper: dict | None = None, mixed_versions: str = "separate") -> Table:
    """T2I-CompBench's rules (the compbench_* scorers) on prompt sets other than T2I-CompBench's own, e.g. the
    shapes world's categories or a custom protocol: categories as rows (Table 3's order and labels), one
    measured column per configuration, protocol version and np_num. No paper column: nothing was published
    on these prompts, and Table 3's numbers are not comparable with them."""
    paper = paper or load_paper_values()
    labels = paper["table3_t2i_compbench"].get("category_labels", {})
    frame = prepare(frame)
    rows = frame[(frame["_name"] != "t2i_compbench") & frame["kind"].isin(COMPBENCH_RULE_KINDS)].copy()
    if rows.empty:
        raise NoData(f"T2I-CompBench rules table: no compbench_* scores outside t2i_compbench "
                     f"(protocols present: {_present(frame)})")
    _check_versions(rows, mixed_versions, "T2I-CompBench rules table")
    rows["category"] = [COMPBENCH_SUBSET_ALIASES.get(str(s), str(s)) if s else str(n)
                        for s, n in zip(rows["_subset"], rows["_name"])]
    present = set(rows["category"])
    cats = [c for c in COMPBENCH_KIND if c in present] + sorted(present - set(COMPBENCH_KIND))
    row_label = {c: labels.get(c, c) for c in cats}
    table = Table("compbench_rules", "T2I-CompBench rules on other prompt sets", "Category",
                  [row_label[c] for c in cats], [])
    add_compbench_columns(table, rows, row_label, "T2I-CompBench rules table")
    names = sorted(set(rows["_name"]))
    table.notes = [f"Prompt sets: {', '.join(names)}; each column names its protocol@version, each cell's footnote "
                   f"its scorer. Scored with T2I-CompBench's rules (BLIP-VQA product, 2D spatial, 3-in-1) and "
                   f"whatever backends the scorers name; no published values exist for these prompts.",
                   "Measured: value [95% CI]."]
    if "shapes" in names:
        table.notes.append("shapes: a model that draws exactly what each caption says scores 1.0 in every "
                           "category (tests/test_shapes_oracle.py scores the renders of the prompts' scenes).")
    return table


# ------------------------------------------------------------------------------------------------ WISE, GenEval
def category_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of a scorer that writes a headline plus `metric/category` rows (WISE, GenEval) with `_base` = the
    metric name and `category` = the part after '/' or "overall" for the headline. Input must be `prepare`d."""
    rows = rows.copy()
    parts = rows["metric"].astype(str).str.split("/", n=1)
    rows["_base"] = [p[0] for p in parts]
    rows["category"] = [p[1] if len(p) > 1 else "overall" for p in parts]
    return rows


def wise_rows(frame: pd.DataFrame, bench: str = "wise") -> pd.DataFrame:
    return category_rows(frame[(frame["_name"] == bench) | (frame["kind"].astype(object) == "wise")])


def category_table(key: str, spec: dict, rows: pd.DataFrame, paper_digits: int, measured_digits: int,
                   what: str) -> Table:
    """Categories (spec order, then any others) as rows; one paper column per published row; one measured
    column per (protocol version, metric, model, sampler, steps, cfg, prompt limit)."""
    labels = spec.get("category_labels", {})
    cats = list(spec["categories"]) + sorted(set(rows["category"]) - set(spec["categories"]))
    row_label = {c: labels.get(c, c) for c in cats}
    columns = [Column(f"paper|{p['key']}", f"paper: {p['model']}", "paper", paper_digits) for p in spec["rows"]]
    table = Table(key, spec["title"], "Category", [row_label[c] for c in cats], columns)
    for p in spec["rows"]:
        for cat, value in p["values"].items():
            table.cells[(row_label[cat], f"paper|{p['key']}")] = Cell(value=float(value))
    keys = ["_tag", "_base", "model", "sampler", "steps", "cfg", "_scope"]
    for (tag, base, *_, scope), group in rows.sort_values(keys).groupby(keys, sort=False):
        label = f"measured: {config_label(group.iloc[0])} ({base}, {tag}{scope})"
        column = f"measured|{tag}|{label}"
        table.columns.append(Column(column, label, "measured", measured_digits, tag))
        for cat, cat_rows in group.groupby("category"):
            table.cells[(row_label[cat], column)] = measured_cell(_unique(cat_rows, f"{what} {label} {cat}"))
    table.notes = [f"{spec['metric']}."]
    table.notes += [f"{p['model']}: {p['source']}." + (f" {p['note']}" if p.get("note") else "") for p in spec["rows"]]
    return table


def table_wise(frame: pd.DataFrame, paper: dict | None = None, mixed_versions: str = "separate",
               bench: str = "wise") -> Table:
    """WISE: categories and Overall as rows; the PixArt-Alpha row and reference rows as paper columns; one
    measured column per configuration, judge metric and protocol version."""
    paper = paper or load_paper_values()
    frame = prepare(frame)
    rows = wise_rows(frame, bench)
    if rows.empty:
        raise NoData(f"WISE table: no {bench}@… results (protocols present: {_present(frame)})")
    _check_versions(rows, mixed_versions, "WISE table")
    table = category_table("wise", paper["wise"], rows, 2, 3, "WISE")
    table.notes.append("Measured: value [95% CI]; images the judge could not score are counted (failed=…) and "
                       "drop out of the means, as in the original protocol.")
    return table


GENEVAL_MEASURED_NOTE = ("Measured: fraction of images judged correct [95% CI]; Overall = mean of the six task "
                         "scores. Images that could not be scored are counted (failed=…).")


def table_geneval(frame: pd.DataFrame, paper: dict | None = None, mixed_versions: str = "separate",
                  bench: str = "geneval") -> Table:
    """GenEval: Overall (mean of the six task scores) and the six tasks as rows; published rows as paper
    columns; one measured column per configuration and protocol version."""
    paper = paper or load_paper_values()
    frame = prepare(frame)
    rows = category_rows(frame[frame["_name"] == bench])  # GenEval's rules on other prompts: table_geneval_rules
    if rows.empty:
        raise NoData(f"GenEval table: no {bench}@… results (protocols present: {_present(frame)})")
    _check_versions(rows, mixed_versions, "GenEval table")
    table = category_table("geneval", paper["geneval"], rows, 2, 3, "GenEval")
    table.notes.append(GENEVAL_MEASURED_NOTE)
    return table


def table_geneval_rules(frame: pd.DataFrame, paper: dict | None = None, mixed_versions: str = "separate") -> Table:
    """GenEval's rules (the geneval scorer kind) on prompt sets other than GenEval's own, e.g. the shapes world's:
    Overall and the six tasks as rows, one measured column per configuration and protocol version. No paper
    column: nothing was published on these prompts."""
    paper = paper or load_paper_values()
    frame = prepare(frame)
    rows = category_rows(frame[(frame["_name"] != "geneval") & (frame["kind"] == "geneval")])
    if rows.empty:
        raise NoData(f"GenEval rules table: no geneval scores outside the geneval protocol "
                     f"(protocols present: {_present(frame)})")
    _check_versions(rows, mixed_versions, "GenEval rules table")
    spec = {**paper["geneval"], "title": "GenEval rules on other prompt sets", "rows": [],
            "metric": "Fraction of images judged correct per task by GenEval's rules, with the detector and colour "
                      "classifier each cell's footnote names; Overall = mean of the six task scores; higher is better"}
    table = category_table("geneval_rules", spec, rows, 2, 3, "GenEval rules")
    table.notes += [f"Prompt sets: {', '.join(sorted(set(rows['_name'])))}; no published values exist for these "
                    f"prompts.", GENEVAL_MEASURED_NOTE]
    return table


# ------------------------------------------------------------------------------------------------ ablation
ABLATION_ROWS = ("adaln", "adaln-single", "no-reparam")


def ablation_variant(stats: dict) -> str:
    """The ablation row a training run belongs to, from its stats: adaLN, adaLN-single (re-parameterised from
    the adaLN weights) or adaLN-single without re-parameterisation."""
    if stats.get("variant") == "adaln":
        return "adaln"
    if stats.get("variant") == "adaln-single":
        return "adaln-single" if stats.get("reparam") else "no-reparam"
    raise ValueError(f"training stats name variant {stats.get('variant')!r}; expected 'adaln' or 'adaln-single'")


def table_ablation(frame: pd.DataFrame, variants: dict, stats: dict, paper: dict | None = None,
                   mixed_versions: str = "separate", stats_sources: dict | None = None) -> Table:
    """The ablation: rows adaLN / adaLN-single / no re-param; columns params and peak training GPU memory
    (from each model's training stats), FID measured per protocol version and setting (the paper's is SAM; the
    embedded demo's is its own world's CLIP-FID), and the published values where the reference notes quote them.

    variants: row key (ABLATION_ROWS) → model name; stats: model name → the training code's stats dict
    ({variant, reparam, params, peak_memory_bytes, device}) or None when not written yet; stats_sources:
    model → where the stats came from (footnotes)."""
    paper = paper or load_paper_values()
    spec = paper["ablation"]
    unknown = sorted(set(variants) - set(ABLATION_ROWS))
    if unknown:
        raise ValueError(f"ablation rows {unknown} are not among {list(ABLATION_ROWS)}")
    if not variants:
        raise NoData("ablation table: no model is mapped to a variant (config `ablation:` maps adaln, "
                     "adaln-single and no-reparam to models)")
    frame = prepare(frame)
    models = set(variants.values())
    fid = frame[frame["model"].isin(models)]
    fid = fid[pd.Series([is_fid(r) for _, r in fid.iterrows()], index=fid.index, dtype=bool)]
    if len(fid):
        _check_versions(fid, mixed_versions, "Ablation table")
    prows = {p["key"]: p for p in spec["rows"]}
    labels = {key: prows[key]["model"] for key in ABLATION_ROWS}
    columns = [Column("model", "Model", "info"), Column("params", "#Params", "info", 0, thousands=True),
               Column("params_reference", "#Params (reference)", "paper", 0, thousands=True),
               Column("memory", "Peak GPU memory, training (GiB)", "info", 1)]
    if any("sam_fid" in p for p in spec["rows"]):
        columns.append(Column("paper_fid", "SAM FID (paper)", "paper", 2))
    measured = {}  # column key -> that setting's rows (one per model)
    for (protocol, metric, sampler, steps, cfg), group in fid.groupby(["protocol", "metric", "sampler", "steps",
                                                                        "cfg"], sort=True):
        column = Column(f"fid|{protocol}|{metric}|{sampler}-{int(steps)}|{float(cfg):g}",
                        f"FID measured ({metric}, {protocol}, {sampler}-{int(steps)} cfg{float(cfg):g})",
                        "measured", 2, group["_tag"].iloc[0])
        columns.append(column)
        measured[column.key] = group
    table = Table("ablation", spec["title"], "Variant", [], columns)
    sources = stats_sources or {}
    for key in ABLATION_ROWS:
        if key not in variants:
            continue
        label, model = labels[key], variants[key]
        table.rows.append(label)
        table.cells[(label, "model")] = Cell(text=model)
        if prows[key].get("params_reference") is not None:
            table.cells[(label, "params_reference")] = Cell(value=float(prows[key]["params_reference"]),
                                                             note=prows[key].get("params_source"))
        if prows[key].get("sam_fid") is not None:
            table.cells[(label, "paper_fid")] = Cell(value=float(prows[key]["sam_fid"]), note=prows[key].get("source"))
        record = stats.get(model)
        where = sources.get(model, "training stats")
        if record is None:
            table.cells[(label, "params")] = Cell(text="n/a", note=f"{model}: no training stats ({where}); run "
                                                                   f"its training recipe first")
            table.cells[(label, "memory")] = Cell(text="n/a")
        else:
            found = ablation_variant(record)
            if found != key:
                raise ValueError(f"ablation row {key!r} names model {model!r}, but its training stats ({where}) say "
                                 f"{found!r} (variant {record.get('variant')!r}, reparam {record.get('reparam')!r}); "
                                 f"fix the config's `ablation:` mapping")
            table.cells[(label, "params")] = Cell(value=float(record["params"]), note=f"{model}: {where}")
            peak = record.get("peak_memory_bytes")
            table.cells[(label, "memory")] = (
                Cell(value=peak / 2**30, note=f"{model}: peak allocated during training on {record.get('device')}")
                if peak is not None else
                Cell(text="not measured", note=f"{model}: trained on {record.get('device')} (no GPU memory counter)"))
        for column, group in measured.items():
            hit = group[group["model"] == model]
            if len(hit):
                table.cells[(label, column)] = measured_cell(_unique(hit, f"Ablation {label} {column}"))
    table.notes = [f"The paper compares: {spec['metric']}.",
                   f"Paper: {spec['source']}. {' '.join(spec['missing'].split())}"]
    if fid.empty:
        table.notes.append(f"No FID results for {sorted(models)} yet (protocols present: {_present(frame)}): "
                           f"no measured FID column.")
    table.notes.append("Measured FID: value [95% CI] (bootstrap over generated images), one column per protocol "
                       "version and setting; the prompt/reference list (its sha256) is part of the protocol: "
                       "numbers are comparable only on the same list, and only SAM's with the paper's.")
    return table


# ------------------------------------------------------------------------------------------------ series
def _short(x) -> str:
    return "n/a" if x is None else f"{float(x):.4g}"


def series_table(series: str, status: list[dict], gates: dict, settings: dict) -> Table:
    """One row per checkpoint in step order: status (baseline, evaluated, or why it was left out), the gate's
    verdict against the baseline, and per gated metric the value (candidates: value, difference [CI], verdict).

    status: rows of the series_check table (series, step, model, path, status, reason); gates: candidate
    model → reports.regress JSON (with `verdict`); settings: the series settings (baseline, alpha, …)."""
    baseline = settings.get("baseline")
    # a gate file left from an earlier run (another baseline, a checkpoint no longer listed) is not this series'
    current = {row["model"] for row in status if row["status"] == "ok"}
    gates = {model: g for model, g in gates.items()
             if model in current and model != baseline and g.get("baseline_model", baseline) == baseline}
    comparisons = [c for g in gates.values() for c in g.get("comparisons", [])]
    metric_keys = sorted({(c["bench"], c["metric"], c["sampler"], c["steps"], c["cfg"]) for c in comparisons},
                         key=str)
    columns = [Column("step", "Step", "info"), Column("status", "Status", "info"),
               Column("gate", f"Gate vs {baseline}", "info")]
    columns += [Column(f"m|{k}", f"{k[1]} ({k[0]}, {k[2]}-{k[3]} cfg{float(k[4]):g})", "info") for k in metric_keys]
    table = Table(f"series__{series}", f"Checkpoint series {series}", "Checkpoint", [], columns)
    baseline_values = {(c["bench"], c["metric"], c["sampler"], c["steps"], c["cfg"]): c["baseline_value"]
                       for c in comparisons}
    excluded = []
    for row in status:
        label = row["model"] or Path(row["path"]).name
        table.rows.append(label)
        table.cells[(label, "step")] = Cell(text="" if row["step"] is None else str(row["step"]))
        if row["status"] != "ok":
            table.cells[(label, "status")] = Cell(text=f"not evaluated: {row['status']}")
            excluded.append(f"{row['path']}: {row['status']} — {row['reason']}")
            continue
        if row["model"] == baseline:
            table.cells[(label, "status")] = Cell(text="baseline")
            for key, value in baseline_values.items():
                table.cells[(label, f"m|{key}")] = Cell(text=_short(value))
            continue
        table.cells[(label, "status")] = Cell(text="evaluated")
        gate = gates.get(row["model"])
        if gate is None:
            table.cells[(label, "gate")] = Cell(text="not gated (no baseline)")
            continue
        verdict = gate.get("verdict", "")
        regressed = sorted({c["metric"] for c in gate.get("comparisons", []) if c["status"] == "regression"})
        detail = (f": {', '.join(regressed)}" if regressed else
                  f": {gate['refused'][0]}" if gate.get("refused") else "")
        table.cells[(label, "gate")] = Cell(text=f"{verdict}{detail}")
        for c in gate.get("comparisons", []):
            key = (c["bench"], c["metric"], c["sampler"], c["steps"], c["cfg"])
            word = "REGRESSED" if c["status"] == "regression" else c["status"]  # warnings too, as the gate says
            table.cells[(label, f"m|{key}")] = Cell(
                text=f"{_short(c['candidate_value'])} (diff {c['diff']:+.4g} [{_short(c['ci_low'])}, "
                     f"{_short(c['ci_high'])}], {word})")
    rule = settings.get("baseline_rule")
    table.notes = [f"Checkpoints in step order; baseline {baseline or 'none'} (series key `baseline: {rule}`)."]
    if baseline is None:
        table.notes.append("No readable baseline checkpoint: nothing was gated.")
    table.notes += [f"Not evaluated: {e}" for e in excluded]
    table.notes.append(f"Gate: reports.regress of each later checkpoint against the baseline (paired bootstrap over "
                       f"shared prompts; FID from both runs' CIs), Holm-adjusted across metrics, alpha "
                       f"{settings.get('alpha')}, thresholds {settings.get('thresholds') or 'none'}. REGRESSED = "
                       f"worse beyond the threshold with Holm p < alpha; details in gate/<model>.md.")
    return table


# Tables built from the results table alone (the ablation also needs training stats, series their gates).
BUILDERS = {"table2": table2, "table3": table3, "compbench_rules": table_compbench_rules, "wise": table_wise,
            "geneval": table_geneval, "geneval_rules": table_geneval_rules}
