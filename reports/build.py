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
artefact and a one-line summary.

Every input is read and checked before anything is written (reports/inputs.py), and the report is built in a
hidden folder inside --out and moved in whole: a bad input, or a failure part-way, leaves an earlier report as it
was. Exit status 2, with one `error:` line naming the file and the fix, when the table, paper values, checks or a
series folder is missing or malformed, a --train-stats path exists but is not a readable JSON object, or mixed
protocol versions are refused. Not errors: a --train-stats file that does not exist yet (training has not run:
the ablation shows n/a and names the path) and --samples / --scores folders with no cells (the DAG passes them
before anything is generated): those artefacts are listed as not written, with the reason.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from pixart.cli import UsageError, clean_errors, non_negative_int, positive_int
from reports import checks as reports_checks
from reports import figures, inputs, tables, tabular
from reports.tables import MixedProtocolVersions, NoData

OWNED = ("tables", "figures", "checks.json", "README.md")  # what a build writes in --out (see publish)


def build(table_path: str | Path | None, out: str | Path, samples: str | Path | None = None,
          scores: str | Path | None = None, paper_values: str | Path | None = None,
          mixed_versions: str = "separate", worst_k: int = 8, grid_prompts: int = 6,
          series_dirs=(), ablation: dict | None = None, train_stats: dict | None = None,
          checks: dict | None = None, log=print) -> dict:
    """Returns {"tables": [paths], "figures": [paths], "skipped": {artefact: reason}, "excluded": [lines]}, and
    "checks": {name: result} when checks are given.

    series_dirs: results/series/NAME folders; ablation: row (adaln, adaln-single, no-reparam) → model;
    train_stats: model → its training stats.json; checks: name → spec (reports/checks.py).

    Every input is read and checked first (ReportInputError, CheckInputError); the report is then built in a
    hidden folder inside `out` and moved in by `publish`, so a bad input or a failure part-way leaves `out` as
    it was, never new tables beside an old README."""
    out = Path(out)
    required = (*tables.REQUIRED, *(reports_checks.TABLE_COLUMNS if checks else ()))
    frame = inputs.read_results_table(table_path, dict.fromkeys(required)) if table_path else pd.DataFrame()
    paper = inputs.read_paper_values(paper_values)
    folders = [inputs.read_series(folder) for folder in series_dirs]
    stats = inputs.read_train_stats(train_stats or {})
    if checks is not None:  # before anything is written (run_checks validates again for its other callers)
        reports_checks.validate(checks, "--checks")
    for flag, folder in (("--samples", samples), ("--scores", scores)):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise inputs.ReportInputError(f"{flag} {folder} is a file; give the folder of the generated cells")
    if out.exists() and not out.is_dir():
        raise inputs.ReportInputError(f"--out {out} is a file; give a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    # inside `out`: one filesystem with it whatever `out` is (a symlink, a mount), so publish only renames
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=out))
    try:
        result = write_report(staging, frame, paper, samples, scores, mixed_versions, worst_k, grid_prompts,
                              folders, ablation, stats, checks, log, table_path)
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for key in ("tables", "figures"):
        result[key] = [out / p.relative_to(staging) for p in result[key]]
    return result


def write_report(out: Path, frame: pd.DataFrame, paper: dict, samples, scores, mixed_versions: str, worst_k: int,
                 grid_prompts: int, folders: list, ablation: dict | None, stats: tuple, checks: dict | None,
                 log, table_path) -> dict:
    """Writes every artefact the checked inputs support into `out` (see `build`)."""
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
            attempt("ablation", lambda: tabular.write_table(
                tables.table_ablation(frame, ablation, stats[0], paper, mixed_versions, stats_sources=stats[1]),
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
    absent = _absent_folders(samples=samples, scores=scores)
    if absent.get("samples"):
        result["skipped"]["sample_grid"] = absent["samples"]
    else:
        attempt("sample_grid", lambda: figures.sample_grid(samples, figs, grid_prompts, None if empty else frame),
                "figures")
    if worst_k <= 0:
        result["skipped"]["worst_k"] = "--worst-k 0"
    elif "scores" in absent or "samples" in absent:
        reasons = "; ".join(absent[name] for name in ("scores", "samples") if name in absent)
        result["skipped"]["worst_k"] = f"needs both --scores and --samples (scores name the images): {reasons}"
    else:
        attempt("worst_k", lambda: figures.worst_k(scores, samples, figs, worst_k, None if empty else frame),
                "figures")
    for folder in folders:
        table = tables.series_table(folder.name, folder.status, folder.gates, folder.settings)
        result["tables"] += tabular.write_table(table, out / "tables")
        result["excluded"] += [f"series {folder.name}: {r['path']}: {r['status']} ({r['reason']})"
                               for r in folder.status if r["status"] != "ok"]
    for line in result["excluded"]:
        log(f"report: not evaluated: {line}")
    write_index(result, out, table_path)
    return result


def _absent_folders(**folders) -> dict:
    """flag name → why its folder cannot be read, for those not given or not there (nothing generated yet, or a
    mistyped path: the reason names it)."""
    return {name: f"no --{name} folder given" if not folder else f"the --{name} folder {folder} does not exist"
            for name, folder in folders.items() if not folder or not Path(folder).is_dir()}


def publish(staging: Path, out: Path) -> None:
    """Move the report built in `staging` (a folder inside `out`) into `out`. What a build owns there (OWNED) is
    replaced as a whole: an entry this build did not write goes too, so no stale table or checks.json sits beside
    the new README; any other file in `out` is left alone. The old entries go into `staging`, which the caller
    removes; if a rename fails or is interrupted, the ones done are undone first, so `out` keeps the old report."""
    aside, moved_in = [], []
    try:
        for name in OWNED:
            if (out / name).exists() or (out / name).is_symlink():
                os.replace(out / name, staging / f".old-{name}")
                aside.append(name)
        for name in OWNED:
            if (staging / name).exists():
                os.replace(staging / name, out / name)
                moved_in.append(name)
    except BaseException:
        for name in moved_in:
            os.replace(out / name, staging / name)
        for name in aside:
            os.replace(staging / f".old-{name}", out / name)
        raise


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
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


@clean_errors("reports.build")
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
    p.add_argument("--worst-k", type=non_negative_int, default=8, help="images per worst-k figure (0: none)")
    p.add_argument("--grid-prompts", type=positive_int, default=6, help="prompts (rows) per sample grid")
    p.add_argument("--series", type=Path, action="append", default=[],
                   help="a checkpoint series folder results/series/NAME (checkpoints.csv, settings.json, gate/*.json)")
    p.add_argument("--ablation", action="append", default=[], metavar="ROW=MODEL",
                   help=f"ablation row ({', '.join(tables.ABLATION_ROWS)}) and the model evaluated for it")
    p.add_argument("--train-stats", action="append", default=[], metavar="MODEL=PATH",
                   help="a model's training stats.json (variant, reparam, params, peak_memory_bytes, device)")
    p.add_argument("--checks", type=Path, help="JSON: check name → spec (reports/checks.py): the checks table")
    args = p.parse_args(argv)
    result = build(args.table, args.out, args.samples, args.scores, args.paper_values, args.mixed_versions,
                   args.worst_k, args.grid_prompts, args.series, pairs(args.ablation, "--ablation"),
                   pairs(args.train_stats, "--train-stats"), reports_checks.read_checks(args.checks) if args.checks
                   else None)
    print(summary(result, args.out))
    return result


if __name__ == "__main__":
    main()
