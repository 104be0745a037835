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


def gather(files) -> pd.DataFrame:
    rows = []
    for f in files:
        result = json.loads(Path(f).read_text())
        breakdown = result.pop("breakdown", {}) or {}
        rows.append(result)
        for part, numbers in breakdown.items():  # e.g. WISE categories: metric "wise/cultural"
            rows.append({**result, **numbers, "metric": f"{result['metric']}/{part}"})
    if not rows:
        raise SystemExit("table: no metric files given (does the config list any scorers?)")
    frame = pd.DataFrame.from_records(rows)
    ordered = [c for c in COLUMNS if c in frame] + sorted(c for c in frame if c not in COLUMNS)
    keys = [c for c in ("bench", "metric", "model", "sampler", "cfg") if c in frame]
    return frame[ordered].sort_values(keys).reset_index(drop=True)


@clean_errors("evals.table")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--history", type=Path, help="folder of per-job history files (append-only) to merge")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args(argv)
    files = list(args.files) + (sorted(args.history.glob("*.json")) if args.history else [])
    frame = gather(files)
    write_atomic(args.out, lambda tmp: frame.to_parquet(tmp, index=False))
    source = f" from {len(files)} score jobs" if args.history else ""
    print(f"{'history' if args.history else 'table'}: {len(frame)} numbers{source} ({frame['metric'].nunique()} "
          f"metrics × {frame['model'].nunique()} models) → {args.out}")


if __name__ == "__main__":
    main()
