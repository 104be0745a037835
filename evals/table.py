"""Gather aggregate JSONs into one tidy table: one row per number with its provenance.

python -m evals.table --out results/table.parquet METRIC.json [METRIC.json …]     this run's numbers
python -m evals.table --out results/history.parquet --history results/history     every run so far
"""
import argparse
import json
from pathlib import Path

import pandas as pd

from pixart.atomic import write_atomic
from pixart.cli import clean_errors

COLUMNS = ("model", "bench", "protocol", "sampler", "steps", "cfg", "seeds", "metric", "value", "ci_low", "ci_high",
           "n", "n_failed", "scorer", "weights_fingerprint", "model_fingerprint", "uncond", "seconds", "code_version",
           "time")


class TableInputError(ValueError):
    """A metric file that is not a score job's aggregate; the message names the file."""


def read_metric(path) -> dict:
    """One score job's aggregate JSON, checked before any table is written (a bad file must not replace a good
    table): an object with `metric` and a numeric (or null) `value`."""
    fix = "delete it and rerun its score job (Snakemake reruns the job whose output is missing)"
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TableInputError(f"{path}: not a readable metric JSON ({err}); {fix}") from None
    if not isinstance(result, dict):
        raise TableInputError(f"{path}: a metric JSON is an object, this is a {type(result).__name__}; {fix}")
    missing = [k for k in ("metric", "value") if k not in result]
    if missing:
        raise TableInputError(f"{path}: no {', '.join(missing)}: not a score job's aggregate; {fix}")
    value = result["value"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TableInputError(f"{path}: value {value!r} is not a number; {fix}")
    if not isinstance(result.get("breakdown") or {}, dict):
        raise TableInputError(f"{path}: breakdown is not an object (category → numbers); {fix}")
    return result


def gather(files) -> pd.DataFrame:
    rows = []
    for f in files:
        result = read_metric(f)
        breakdown = result.pop("breakdown", {}) or {}
        rows.append(result)
        for part, numbers in breakdown.items():  # e.g. WISE categories: metric "wise/cultural"
            rows.append({**result, **numbers, "metric": f"{result['metric']}/{part}"})
    if not rows:
        raise TableInputError("no metric files given: name metric JSONs, or a --history folder holding them (does "
                              "the config list any scorers?)")
    frame = pd.DataFrame.from_records(rows)
    ordered = [c for c in COLUMNS if c in frame] + sorted(c for c in frame if c not in COLUMNS)
    keys = [c for c in ("bench", "metric", "model", "sampler", "cfg") if c in frame]
    return frame[ordered].sort_values(keys).reset_index(drop=True)


def history_files(folder: Path) -> list[Path]:
    """The run history's metric JSONs (one per score job); a folder that is missing is named."""
    if not folder.is_dir():
        raise TableInputError(f"--history {folder} is not a folder; give the run's history folder "
                              f"(results/history, written by evals.score --history-dir)")
    return sorted(folder.glob("*.json"))


@clean_errors("evals.table")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--history", type=Path, help="folder of per-job history files (append-only) to merge")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args(argv)
    files = list(args.files) + (history_files(args.history) if args.history else [])
    if not files and args.history:
        raise TableInputError(f"--history {args.history} holds no metric JSON: no score job has run with "
                              f"--history-dir {args.history}")
    frame = gather(files)
    write_atomic(args.out, lambda tmp: frame.to_parquet(tmp, index=False))
    source = f" from {len(files)} score jobs" if args.history else ""
    models = frame["model"].nunique() if "model" in frame else 0  # a cell scored outside the DAG may name none
    print(f"{'history' if args.history else 'table'}: {len(frame)} numbers{source} ({frame['metric'].nunique()} "
          f"metrics × {models} models) → {args.out}")


if __name__ == "__main__":
    main()
