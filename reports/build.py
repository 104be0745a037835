"""Build every paper table and figure the results support.

python -m reports.build --table results/table.parquet --out results/report \
    [--samples results/samples --scores results/scores] [--paper-values reports/paper_values.yaml] \
    [--mixed-versions separate|refuse] [--worst-k 8] [--grid-prompts 6] \
    [--series results/series/NAME …] \
    [--ablation adaln=MODEL … --train-stats MODEL=results/train/RECIPE/stats.json …] [--checks checks.json]

Writes {out}/tables/{table2,table3,wise,geneval}.{md,tex,csv}, the ablation table when rows are mapped
(--ablation), the checks table (--checks: reports/checks.py), one series__{name} table per --series folder
(status, gate verdicts; built from the series_check table and the gate JSONs, so it exists even when nothing
could be scored), and {out}/figures/*.{png,svg} (worst-k also .csv; sample grids and worst-k draw only the
cells the results table holds, not every cell on disk); {out}/README.md showing every table and figure, every
checkpoint a series left out and, for every artefact not written, why. Prints one message per skipped
artefact and a one-line summary. Exit status 0 unless an input is missing or unreadable, or mixed protocol
versions are refused.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from pixart.cli import positive_int
from reports import checks as reports_checks
from reports import figures, series, tables, tabular
from reports.tables import MixedProtocolVersions, NoData


def build(table_path: str | Path | None, out: str | Path, samples: str | Path | None = None,
          scores: str | Path | None = None, paper_values: str | Path | None = None,
          mixed_versions: str = "separate", worst_k: int = 8, grid_prompts: int = 6,
          series_dirs=(), ablation: dict | None = None, train_stats: dict | None = None,
          checks: dict | None = None, log=print) -> dict:
    """Returns {"tables": [paths], "figures": [paths], "skipped": {artefact: reason}, "excluded": [lines]}, and
    "checks": {name: result} when checks are given.

    series_dirs: results/series/NAME folders; ablation: row (adaln, adaln-single, no-reparam) → model;
    train_stats: model → its training stats.json; checks: name → spec (reports/checks.py)."""
    out = Path(out)
    paper = tables.load_paper_values(paper_values)
    frame = pd.read_parquet(table_path) if table_path else pd.DataFrame()
    result = {"tables": [], "figures": [], "skipped": {}, "excluded": []}

    # the rule's outputs exist even when no table or figure can be built
    for folder in ("tables", "figures"):
        (out / folder).mkdir(parents=True, exist_ok=True)

    def attempt(name, fn, key):
        try:
            paths = fn()
        except MixedProtocolVersions:
            raise  # 'refuse' mode stops the report
        except (NoData, ValueError) as err:  # ValueError: results the table cannot place (named in the message)
            result["skipped"][name] = str(err)
            log(f"report: skipped {name}: {err}")
            return
        result[key] += [Path(p) for p in paths]

    empty = len(frame) == 0
    if empty:
        reason = (f"the results table {table_path} has no rows: nothing measured yet (run the scoring rules "
                  f"and `python -m evals.table`); no table is written from an empty table")
        log(f"report: {reason}")
        for name in (*tables.BUILDERS, *(["ablation"] if ablation else []), "fid_vs_clip", "compbench_over_cfg",
                     "metric_vs_step"):
            result["skipped"][name] = reason
    else:
        for name, builder in tables.BUILDERS.items():
            attempt(name, lambda b=builder: tabular.write_table(b(frame, paper, mixed_versions), out / "tables"),
                    "tables")
        if ablation:
            stats, sources = read_train_stats(train_stats or {})
            attempt("ablation", lambda: tabular.write_table(
                tables.table_ablation(frame, ablation, stats, paper, mixed_versions, stats_sources=sources),
                out / "tables"), "tables")
        figs = out / "figures"
        attempt("fid_vs_clip", lambda: figures.fid_vs_clip(frame, figs), "figures")
        attempt("compbench_over_cfg", lambda: figures.compbench_over_cfg(frame, figs, paper), "figures")
        attempt("metric_vs_step", lambda: figures.metric_vs_step(frame, figs), "figures")
    if checks:
        results, paths = reports_checks.write_checks(frame, checks, out)
        result["tables"] += paths
        result["checks"] = results
        for name, r in results.items():
            log(f"report: check {name}: {reports_checks.verdict(r['holds'])} — {r['measured']}")
    figs = out / "figures"
    if samples:
        attempt("sample_grid", lambda: figures.sample_grid(samples, figs, grid_prompts, None if empty else frame),
                "figures")
    else:
        result["skipped"]["sample_grid"] = "no --samples folder given"
    if scores and samples and worst_k > 0:
        attempt("worst_k", lambda: figures.worst_k(scores, samples, figs, worst_k, None if empty else frame),
                "figures")
    else:
        result["skipped"]["worst_k"] = ("--worst-k 0" if worst_k <= 0 else
                                        "needs both --scores and --samples (scores name the images)")
    for folder in map(Path, series_dirs):
        name, status = folder.name, series.read_status(folder / "checkpoints.csv")
        settings = json.loads((folder / "settings.json").read_text())
        gates = series.read_gates(sorted((folder / "gate").glob("*.json")))
        table = tables.series_table(name, status, gates, settings)
        result["tables"] += tabular.write_table(table, out / "tables")
        result["excluded"] += [f"series {name}: {r['path']}: {r['status']} ({r['reason']})" for r in status
                               if r["status"] != "ok"]
    for line in result["excluded"]:
        log(f"report: not evaluated: {line}")
    write_index(result, out, table_path)
    return result


def read_train_stats(paths: dict) -> tuple[dict, dict]:
    """Training stats by model (None where the file is absent: training has not run) and where each came from."""
    stats, sources = {}, {}
    for model, path in paths.items():
        path = Path(path)
        stats[model] = json.loads(path.read_text()) if path.is_file() else None
        sources[model] = str(path) if path.is_file() else f"{path} not found"
    return stats, sources


def write_index(result: dict, out: Path, table_path) -> Path:
    """{out}/README.md: the report to read in a Markdown viewer: every table inline (the checks first) with links to
    its other formats, what was left out and why, then every figure shown with links to its SVG (worst-k: CSV)."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Report", "", f"Built from `{table_path}`.", "", "## Tables", ""]
    tables_by_stem = _by_stem(result["tables"])
    for stem in sorted(tables_by_stem, key=lambda s: s != "checks"):  # the checks answer "did it work?": first
        paths = tables_by_stem[stem]
        markdown = next((p for p in paths if p.suffix == ".md"), None)
        if markdown is not None:
            lines += [markdown.read_text().rstrip(), ""]
        lines += [f"{stem}: " + ", ".join(_link(p, out) for p in paths), ""]
    if not tables_by_stem:
        lines += ["- none", ""]
    if result["excluded"]:
        lines += ["## Checkpoints not evaluated", ""] + [f"- {e}" for e in result["excluded"]] + [""]
    lines += ["## Not written", ""]
    lines += [f"- **{k}**: {v}" for k, v in result["skipped"].items()] or ["- nothing skipped"]
    lines += ["", "## Figures", ""]
    for stem, paths in _by_stem(result["figures"]).items():
        png = next((p for p in paths if p.suffix == ".png"), None)
        lines += [f"### {stem}", ""] + ([f"![{stem}]({png.relative_to(out)})", ""] if png else [])
        others = [_link(p, out) for p in paths if p is not png]
        lines += [", ".join(others), ""] if others else []
    if not result["figures"]:
        lines += ["- none"]
    path = out / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _link(path: Path, out: Path) -> str:
    """A Markdown link to one format of a table or figure, named by that format ("[svg](figures/x.svg)")."""
    return f"[{path.suffix[1:]}]({path.relative_to(out)})"


def _by_stem(paths) -> dict[str, list[Path]]:
    """Files grouped by name without suffix, in first-seen order (one table or figure in several formats)."""
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(p.stem, []).append(p)
    return groups


def summary(result: dict, out: Path) -> str:
    n_tables = len({p.stem for p in result["tables"]})
    n_figs = len({p.stem for p in result["figures"] if p.suffix == ".png"})
    skipped = ", ".join(result["skipped"]) or "none"
    excluded = f"; {len(result['excluded'])} checkpoint(s) not evaluated" if result["excluded"] else ""
    checks = f"checks: {reports_checks.tally(result['checks'])}; " if result.get("checks") else ""
    return (f"report: {checks}{n_tables} tables, {n_figs} figures (PNG+SVG) → {out}; "
            f"not written: {skipped}{excluded} (reasons in {out}/README.md)")


def pairs(values: list[str], flag: str) -> dict:
    """['key=value', …] → {key: value}; a malformed entry names the flag."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"report: {flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


# columns older tables lack: without them a limited run is labelled as the whole benchmark, a CI as absent
LABELLING_COLUMNS = ("ci_low", "ci_high", "prompt_limit", "n_prompts")


def check_columns(table: Path) -> None:
    """A table without the required columns is refused (it gave an empty report and exit 0); one without the
    columns that label its numbers is built, with a warning naming them."""
    import pyarrow.parquet as pq

    names = set(pq.read_schema(table).names)
    missing = [c for c in tables.REQUIRED if c not in names]
    if missing:
        raise SystemExit(f"report: {table} lacks the columns {missing}: not a results table of evals.table; "
                         f"rebuild it with `python -m evals.table`")
    unlabelled = [c for c in LABELLING_COLUMNS if c not in names]
    if unlabelled:
        print(f"report: warning: {table} lacks {unlabelled} (written by an older evals.table?): a run cut to its "
              f"first N prompts is labelled as the whole benchmark and CIs show as absent; rebuild the table with "
              f"`python -m evals.table`", file=sys.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, required=True, help="results/table.parquet (evals/table.py)")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--samples", type=Path, help="cells: {samples}/{model}/{bench}/{sampler}-{steps}/cfg{cfg}/")
    p.add_argument("--scores", type=Path, help="per-image scores: {scores}/…/cfg{cfg}/{metric}.parquet")
    p.add_argument("--paper-values", type=Path, default=None,
                   help="published numbers (default reports/paper_values.yaml)")
    p.add_argument("--mixed-versions", choices=tables.MIXED_MODES, default="separate",
                   help="results of several protocol versions: one column per version (separate, default) or "
                        "refuse to build the table (refuse)")
    p.add_argument("--worst-k", type=int, default=8, help="images per worst-k figure (0: none)")
    p.add_argument("--grid-prompts", type=positive_int, default=6, help="prompts (rows) per sample grid")
    p.add_argument("--series", type=Path, action="append", default=[],
                   help="a checkpoint series folder results/series/NAME (checkpoints.csv, settings.json, gate/*.json)")
    p.add_argument("--ablation", action="append", default=[], metavar="ROW=MODEL",
                   help=f"ablation row ({', '.join(tables.ABLATION_ROWS)}) and the model evaluated for it")
    p.add_argument("--train-stats", action="append", default=[], metavar="MODEL=PATH",
                   help="a model's training stats.json (variant, reparam, params, peak_memory_bytes, device)")
    p.add_argument("--checks", type=Path, help="JSON: check name → spec (reports/checks.py): the checks table")
    args = p.parse_args(argv)
    if not args.table.is_file():
        raise SystemExit(f"report: results table {args.table} does not exist or is not a file (run "
                         f"`python -m evals.table` first)")
    check_columns(args.table)
    try:
        result = build(args.table, args.out, args.samples, args.scores, args.paper_values, args.mixed_versions,
                       args.worst_k, args.grid_prompts, args.series, pairs(args.ablation, "--ablation"),
                       pairs(args.train_stats, "--train-stats"),
                       json.loads(args.checks.read_text()) if args.checks else None)
    except MixedProtocolVersions as err:
        print(f"report: refused: {err}", file=sys.stderr)
        raise SystemExit(2)
    print(summary(result, args.out))
    return result


if __name__ == "__main__":
    main()
