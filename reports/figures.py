"""Report figures (matplotlib, Agg backend), each written as PNG and SVG.

- fid_vs_clip: paper Fig. 20(a): x = CLIP score, y = FID, one line per model/sampler over cfg, points
  labelled with cfg, 95% CI error bars both ways. One figure per protocol (so versions never share axes).
- compbench_over_cfg: Fig. 20(b/c): each T2I-CompBench category's score over cfg, one panel per category,
  one line per model/sampler, CI error bars. One figure per protocol version.
- metric_vs_step: a checkpoint series' metric over training step with a CI band.
- sample_grid: prompts × cfg from the generated cells' PNGs (`{samples}/{model}/{bench}/{sampler}-{steps}/cfg{cfg}/`).
- worst_k: the k worst images of a cell for a per-image metric
  (`{scores}/{model}/{bench}/{sampler}-{steps}/cfg{cfg}/{metric}.parquet`),
  with their scores (plus a CSV of the same rows).

Every function returns the paths it wrote, or raises tables.NoData with the reason there is nothing to draw.
"""
from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reports import tables  # noqa: E402
from reports.tables import NoData, compbench_rows, is_clip, is_fid, load_paper_values, prepare  # noqa: E402

CELL_RE = re.compile(r"^(?P<sampler>.+)-(?P<steps>\d+)$")
STEP_COLUMNS = ("train_step", "checkpoint_step", "global_step", "step")
STEP_RE = re.compile(r"^(?P<series>.+?)(?:@step|@|[-_]step[-_]?|[-_]ckpt[-_]?)(?P<step>\d+)$")


def _safe(text) -> str:
    return re.sub(r"[^A-Za-z0-9.+=-]+", "_", str(text)).strip("_")


def save(fig, out_dir: str | Path, stem: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _err(values, lows, highs):
    """Asymmetric error-bar array (2, n) from CI bounds; missing bounds → 0."""
    v = np.asarray(values, float)
    lo = np.asarray([x if x is not None and not pd.isna(x) else np.nan for x in lows], float)
    hi = np.asarray([x if x is not None and not pd.isna(x) else np.nan for x in highs], float)
    return np.vstack([np.nan_to_num(np.clip(v - lo, 0, None)), np.nan_to_num(np.clip(hi - v, 0, None))])


def _line_label(row) -> str:
    return f"{row['model']} {row['sampler']}-{int(row['steps'])}"


# ------------------------------------------------------------------------------------------------ Fig. 20a
def fid_vs_clip(frame: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """FID (y) against CLIP score (x) over cfg: per benchmark × (FID metric, CLIP metric) pair one figure. A line
    never joins benchmarks: two prompt sets of one protocol (all 200 captions at cfg 4.5, a 100-caption cfg
    sweep) give FIDs of different bias, which are not points of one curve."""
    frame = prepare(frame)
    written, reasons = [], []
    keys = ["model", "sampler", "steps", "cfg"]
    for (protocol, bench), rows in frame.groupby(["protocol", "bench"], sort=True):
        fid = rows[[is_fid(r) for _, r in rows.iterrows()]]
        clip = rows[[is_clip(r) for _, r in rows.iterrows()]]
        if fid.empty or clip.empty:
            continue
        for fid_metric, f in fid.groupby("metric"):
            for clip_metric, c in clip.groupby("metric"):
                both = f.merge(c, on=keys, suffixes=("_fid", "_clip"))
                lines = both.groupby(["model", "sampler", "steps"])
                if not any(g["cfg"].nunique() >= 2 for _, g in lines):
                    reasons.append(f"{protocol} ({bench}): {fid_metric} × {clip_metric} has one cfg per line "
                                   f"(no sweep)")
                    continue
                fig, ax = plt.subplots(figsize=(6.4, 4.8))
                for (model, sampler, steps), g in lines:
                    g = g.sort_values("cfg")
                    x, y = g["value_clip"].to_numpy(float), g["value_fid"].to_numpy(float)
                    ax.errorbar(x, y, xerr=_err(x, g["ci_low_clip"], g["ci_high_clip"]),
                                yerr=_err(y, g["ci_low_fid"], g["ci_high_fid"]), marker="o", capsize=3,
                                label=f"{model} {sampler}-{int(steps)}")
                    # Labels alternate above and below the line: neighbouring cfg values often sit close.
                    for k, (xi, yi, cfg) in enumerate(zip(x, y, g["cfg"])):
                        ax.annotate(f"cfg {float(cfg):g}", (xi, yi), textcoords="offset points",
                                    xytext=(4, 4 if k % 2 == 0 else -11), fontsize=8)
                ax.set_xlabel(f"CLIP score ({clip_metric})")
                ax.set_ylabel(f"FID ({fid_metric})")
                ax.set_title(f"FID vs CLIP score over cfg — {protocol}, {bench} (n={int(g['n_fid'].max())})",
                             fontsize=10)
                ax.legend(fontsize=8)
                ax.grid(alpha=0.3)
                stem = f"fid_vs_clip__{_safe(protocol)}__{_safe(bench)}__{_safe(fid_metric)}__{_safe(clip_metric)}"
                written += save(fig, out_dir, stem)
    if not written:
        raise NoData("FID-vs-CLIP: " + ("; ".join(reasons) if reasons else
                                        "no protocol has both an FID metric and a CLIP-score metric"))
    return written


# ------------------------------------------------------------------------------------------------ Fig. 20b/c
def compbench_over_cfg(frame: pd.DataFrame, out_dir: str | Path, paper: dict | None = None) -> list[Path]:
    """T2I-CompBench categories over cfg, one panel per category; one figure per protocol version."""
    frame = prepare(frame)
    rows = compbench_rows(frame)
    if rows.empty:
        raise NoData("CompBench over cfg: no t2i_compbench results")
    paper = paper or load_paper_values()
    labels = paper["table3_t2i_compbench"].get("category_labels", {})
    order = list(paper["table3_t2i_compbench"]["categories"])
    written, reasons = [], []
    # the same category scored at np_num 8 and 2 (the two published sets) gives two lines
    rows = rows.assign(_np=[f" np_num={int(n)}" if tables._num(n) is not None else "" for n in rows["np_num"]])
    for tag, group in rows.groupby("_tag", sort=True):
        lines = group.groupby(["model", "sampler", "steps", "_np", "_scope", "category"])  # a limited run: own line
        if not any(g["cfg"].nunique() >= 2 for _, g in lines):
            reasons.append(f"{tag}: one cfg value per line ({sorted(set(group['cfg']))}); needs a cfg sweep")
            continue
        cats = sorted(set(group["category"]), key=lambda c: (order.index(c) if c in order else len(order), c))
        ncols = min(4, len(cats))
        nrows = math.ceil(len(cats) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.8 * nrows), squeeze=False)
        for ax, cat in zip(axes.flat, cats):
            panel = group[group["category"] == cat]
            for (model, sampler, steps, np_label, scope), g in panel.groupby(
                    ["model", "sampler", "steps", "_np", "_scope"]):
                g = g.sort_values("cfg")
                y = g["value"].to_numpy(float)
                ax.errorbar(g["cfg"].to_numpy(float), y, yerr=_err(y, g["ci_low"], g["ci_high"]), marker="o",
                            capsize=3, label=f"{model} {sampler}-{int(steps)}{np_label}{scope}")
            ax.set_title(labels.get(cat, cat), fontsize=9)
            ax.set_xlabel("cfg", fontsize=8)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(cats):]:
            ax.axis("off")
        legend = {}  # every panel's lines (a panel may lack the np_num variants), one entry per label
        for ax in axes.flat:
            for handle, name in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(name, handle)
        handles, names = list(legend.values()), list(legend)
        fig.legend(handles, names, loc="lower center", ncol=min(3, len(names)), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(names) / 3)))
        fig.suptitle(f"T2I-CompBench over cfg — {tag}", fontsize=10)
        fig.tight_layout()
        written += save(fig, out_dir, f"compbench_over_cfg__{_safe(tag)}")
    if not written:
        raise NoData("CompBench over cfg: " + "; ".join(reasons))
    return written


# ------------------------------------------------------------------------------------------------ series
def add_steps(frame: pd.DataFrame) -> pd.DataFrame:
    """`_series` and `_step` columns: from a step column (train_step, checkpoint_step, global_step, step) when
    the table has one, else parsed from the model name (`name@12000`, `name@step12000`, `name-step-12000`,
    `name_ckpt5000`, `train:recipe@12000`). Rows without a step get NaN."""
    out = frame.copy()
    column = next((c for c in STEP_COLUMNS if c in out and out[c].notna().any()), None)
    series, steps = [], []
    for _, row in out.iterrows():
        m = STEP_RE.match(str(row["model"]))
        if column is not None and not pd.isna(row[column]):
            series.append(m["series"] if m else str(row["model"]))
            steps.append(float(row[column]))
        elif m:
            series.append(m["series"])
            steps.append(float(m["step"]))
        else:
            series.append(str(row["model"]))
            steps.append(np.nan)
    out["_series"], out["_step"] = series, steps
    return out


def metric_vs_step(frame: pd.DataFrame, out_dir: str | Path, series: str | None = None) -> list[Path]:
    """Metric over training step with its 95% CI band: one figure per (series, protocol, metric), one line
    per sampler/steps/cfg. Needs at least two checkpoints of one series."""
    frame = add_steps(prepare(frame))
    frame = frame[frame["_step"].notna()]
    if series is not None:
        frame = frame[frame["_series"] == series]
    written = []
    for (name, protocol, metric), group in frame.groupby(["_series", "protocol", "metric"], sort=True):
        lines = group.groupby(["sampler", "steps", "cfg"])
        if not any(g["_step"].nunique() >= 2 for _, g in lines):
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for (sampler, steps, cfg), g in lines:
            g = g.sort_values("_step")
            x, y = g["_step"].to_numpy(float), g["value"].to_numpy(float)
            lo = pd.to_numeric(g["ci_low"], errors="coerce").to_numpy(float)
            hi = pd.to_numeric(g["ci_high"], errors="coerce").to_numpy(float)
            (line,) = ax.plot(x, y, marker="o", label=f"{sampler}-{int(steps)} cfg {float(cfg):g}")
            ok = ~(np.isnan(lo) | np.isnan(hi))
            if ok.any():
                ax.fill_between(x[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.2, linewidth=0)
        better = group["higher_is_better"].dropna()
        arrow = "" if better.empty else (" (↑ better)" if bool(better.iloc[0]) else " (↓ better)")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{metric}{arrow}")
        ax.set_title(f"{name}: {metric} over training — {protocol}", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        written += save(fig, out_dir, f"step__{_safe(name)}__{_safe(protocol)}__{_safe(metric)}")
    if not written:
        raise NoData("metric vs step: no checkpoint series with two or more steps (steps come from a "
                     f"{'/'.join(STEP_COLUMNS)} column or a model name like name@12000)"
                     + (f" for series {series!r}" if series else ""))
    return written


# ------------------------------------------------------------------------------------------------ cells
def find_cells(root: str | Path, filename: str = "manifest.parquet", within: pd.DataFrame | None = None,
               by_metric: bool = False) -> pd.DataFrame:
    """Cell folders `{root}/{model}/{bench}/{sampler}-{steps}/cfg{cfg}/` holding `filename` (a glob).

    within: a results table; when it has rows, only the cells (and, by_metric, the metric files named by the
    file stem) it holds are kept, so cells left on disk by an earlier config never reach the report."""
    root = Path(root)
    rows = []
    for path in sorted(root.glob(f"*/*/*/cfg*/{filename}")):
        model, bench, run, cfg_dir = path.relative_to(root).parts[:4]
        m = CELL_RE.match(run)
        try:
            cfg = float(cfg_dir[3:])
        except ValueError:
            continue
        if not m:
            continue
        rows.append({"model": model, "bench": bench, "sampler": m["sampler"], "steps": int(m["steps"]),
                     "cfg": cfg, "run": run, "dir": path.parent, "path": path})
    cells = pd.DataFrame(rows, columns=["model", "bench", "sampler", "steps", "cfg", "run", "dir", "path"])
    if within is None or len(within) == 0 or cells.empty:
        return cells
    keys = ["model", "bench", "sampler", "steps"] + (["metric"] if by_metric else [])
    within = prepare(within)  # a table without benchmark names: one benchmark per protocol
    within = within.assign(steps=pd.to_numeric(within["steps"], errors="coerce"),
                           cfg=pd.to_numeric(within["cfg"], errors="coerce")).dropna(subset=["steps", "cfg"])
    listed = within[keys + ["cfg"]].astype({"steps": int, "cfg": float})
    listed = listed.assign(cfg=listed["cfg"].round(6)).drop_duplicates()
    probe = cells.assign(metric=[p.stem for p in cells["path"]], cfg=cells["cfg"].round(6))
    return cells[probe.merge(listed, on=keys + ["cfg"], how="left", indicator=True)["_merge"].eq("both").to_numpy()]


def _read_image(path: Path):
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _wrap(text: str, width: int = 28, lines: int = 3) -> str:
    parts = textwrap.wrap(str(text), width) or [""]
    return "\n".join(parts[:lines]) + ("…" if len(parts) > lines else "")


def sample_grid(samples_dir: str | Path, out_dir: str | Path, max_prompts: int = 6,
                frame: pd.DataFrame | None = None) -> list[Path]:
    """One grid per (model, bench, sampler-steps): rows = the first prompts (first image of each), columns =
    cfg values. Prompts are matched across cfg by prompt_id; a missing image leaves its square empty.
    frame: the results table; when given with rows, only its cells are drawn."""
    cells = find_cells(samples_dir, within=frame)
    if cells.empty:
        scope = "" if frame is None or len(frame) == 0 else " that the results table lists"
        raise NoData(f"sample grid: no generated cells (manifest.parquet){scope} under {samples_dir}")
    written = []
    for (model, bench, run), group in cells.groupby(["model", "bench", "run"], sort=True):
        group = group.sort_values("cfg")
        manifests = {}
        for _, cell in group.iterrows():
            m = pd.read_parquet(cell["path"])
            m = m.sort_values(["prompt_id", "image_index"]).drop_duplicates("prompt_id")
            manifests[cell["cfg"]] = (cell["dir"], m.set_index("prompt_id"))
        prompt_ids = sorted(set().union(*(m.index for _, m in manifests.values())))[:max_prompts]
        if not prompt_ids:
            continue
        ncols, nrows = len(manifests), len(prompt_ids)
        width, height = 1.9 * ncols + 2.2, 1.9 * nrows + 0.85
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
        fig.subplots_adjust(left=2.2 / width, right=0.98, bottom=0.02, top=1 - 0.8 / height, wspace=0.05,
                            hspace=0.08)
        for j, (cfg, (folder, m)) in enumerate(manifests.items()):
            axes[0, j].set_title(f"cfg {cfg:g}", fontsize=9)
            for i, pid in enumerate(prompt_ids):
                ax = axes[i, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if pid in m.index:
                    path = Path(folder) / m.loc[pid, "file"]
                    try:
                        ax.imshow(_read_image(path))
                    except (OSError, ValueError):
                        ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
                if j == 0:
                    prompt = next((mm.loc[pid, "prompt"] for _, mm in manifests.values()
                                   if pid in mm.index and "prompt" in mm), pid)
                    ax.set_ylabel(_wrap(prompt), fontsize=7, rotation=0, ha="right", va="center")
        fig.suptitle(f"{model} · {bench} · {run}", fontsize=10)
        written += save(fig, out_dir, f"grid__{_safe(model)}__{_safe(bench)}__{_safe(run)}")
    if not written:
        raise NoData(f"sample grid: the cells under {samples_dir} list no images")
    return written


def _direction(frame: pd.DataFrame | None, cell, metric: str) -> bool | None:
    if frame is None or "higher_is_better" not in frame or len(frame) == 0:
        return None
    cfg = pd.to_numeric(frame["cfg"], errors="coerce")
    hit = frame[(frame["model"] == cell["model"]) & (frame["metric"] == metric) & (frame["sampler"] == cell["sampler"])
                & (frame["steps"] == cell["steps"]) & np.isclose(cfg, cell["cfg"])]
    if "bench" in frame:
        hit = hit[hit["bench"] == cell["bench"]]
    better = hit["higher_is_better"].dropna()
    return None if better.empty else bool(better.iloc[0])


def worst_k(scores_dir: str | Path, samples_dir: str | Path, out_dir: str | Path, k: int = 8,
            frame: pd.DataFrame | None = None) -> list[Path]:
    """Per cell and per-image metric: the k worst images with their scores (lowest when higher is better,
    as recorded in the results table; highest otherwise), as a figure and a CSV. Set-level metrics (FID)
    have no per-image scores and are skipped. Only the (cell, metric) pairs the table holds are drawn when it
    has rows."""
    cells = find_cells(scores_dir, "*.parquet", within=frame, by_metric=True)
    cells = cells[[not p.name.startswith(".") for p in cells["path"]]] if len(cells) else cells
    if cells.empty:
        scope = "" if frame is None or len(frame) == 0 else " that the results table lists"
        raise NoData(f"worst-k: no per-image score parquets{scope} under {scores_dir}")
    written, skipped = [], []
    for _, cell in cells.sort_values(["model", "bench", "run", "cfg"]).iterrows():
        metric = cell["path"].stem
        scores = pd.read_parquet(cell["path"])
        valid = scores[scores["score"].notna()]
        if valid.empty:
            skipped.append(metric)
            continue
        higher = _direction(frame, cell, metric)
        ascending = True if higher is None else higher
        worst = valid.sort_values(["score", "sample_id"], ascending=[ascending, True]).head(k)
        folder = Path(samples_dir) / cell["model"] / cell["bench"] / cell["run"] / f"cfg{cell['cfg']}"
        manifest = pd.read_parquet(folder / "manifest.parquet").set_index("sample_id") \
            if (folder / "manifest.parquet").exists() else pd.DataFrame()
        worst = worst.assign(
            file=[str(folder / manifest.loc[s, "file"]) if s in manifest.index else str(folder / f"{s}.png")
                  for s in worst["sample_id"]],
            prompt=[manifest.loc[s, "prompt"] if s in manifest.index and "prompt" in manifest else ""
                    for s in worst["sample_id"]])
        n_failed = int(len(scores) - len(valid))
        # Where the k-th score is shared by more images than are shown, which ones appear is only the sample-id
        # order: say how many share it, so k zeros are not read as the only zeros.
        boundary = worst["score"].iloc[-1]
        n_tied = int((valid["score"] == boundary).sum())
        ties = f" · {n_tied} images score {boundary:.4g} (first by sample id shown)" \
            if n_tied > int((worst["score"] == boundary).sum()) else ""
        fig, axes = plt.subplots(1, len(worst), figsize=(2.2 * len(worst), 2.9), squeeze=False)
        for ax, (_, r) in zip(axes[0], worst.iterrows()):
            ax.set_xticks([])
            ax.set_yticks([])
            try:
                ax.imshow(_read_image(Path(r["file"])))
            except (OSError, ValueError):
                ax.text(0.5, 0.5, "image missing", ha="center", va="center", fontsize=7)
            ax.set_title(f"{r['score']:.4f}\n{r['sample_id']}", fontsize=8)
            ax.set_xlabel(_wrap(r["prompt"], 26, 2), fontsize=6)
        which = "lowest" if ascending else "highest"
        direction = "" if higher is not None else " (direction unknown: lowest shown)"
        fig.suptitle(f"worst {len(worst)} by {metric} ({which}){direction} — {cell['model']} · {cell['bench']} · "
                     f"{cell['run']} · cfg {cell['cfg']:g}" + ties + (f" · {n_failed} failed" if n_failed else ""),
                     fontsize=9)
        stem = f"worst__{_safe(metric)}__{_safe(cell['model'])}__{_safe(cell['bench'])}__{_safe(cell['run'])}" \
               f"__cfg{cell['cfg']:g}"
        written += save(fig, out_dir, stem)
        csv_path = Path(out_dir) / f"{stem}.csv"
        worst[["sample_id", "prompt_id", "image_index", "score", "prompt", "file"]].to_csv(csv_path, index=False)
        written.append(csv_path)
    if not written:
        raise NoData(f"worst-k: no per-image scores (set-level metrics only: {sorted(set(skipped))})")
    return written
