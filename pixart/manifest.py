"""Merge the shard manifests of a cell into `manifest.parquet`, checking that every sample is there.

python -m pixart.manifest --cell DIR --num-shards N --prompts P.parquet
"""
import argparse
from pathlib import Path

import pandas as pd

from pixart.atomic import write_atomic
from pixart.cli import clean_errors


class ManifestError(RuntimeError):
    pass


def merge(cell: Path, num_shards: int, prompts: Path) -> pd.DataFrame:
    files = [cell / f"manifest.shard{i}of{num_shards}.parquet" for i in range(num_shards)]
    absent = [f.name for f in files if not f.exists()]
    if absent:
        raise ManifestError(f"{cell}: shard manifests missing: {absent}; run those shards first")
    merged = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    expected = set(pd.read_parquet(prompts, columns=["sample_id"])["sample_id"])
    missing = expected - set(merged["sample_id"])
    if missing or len(merged) != len(expected):
        raise ManifestError(f"{cell}: {len(missing)} samples missing, {len(merged)} rows for {len(expected)} "
                            f"samples (e.g. {sorted(missing)[:5]})")
    if merged["cell_key"].nunique() != 1:
        raise ManifestError(f"{cell}: shards were made with different settings: {sorted(merged['cell_key'].unique())}")
    return merged.sort_values("sample_id").reset_index(drop=True)


def write(cell: Path, num_shards: int, prompts: Path) -> pd.DataFrame:
    """Merge and write `{cell}/manifest.parquet` atomically."""
    merged = merge(cell, num_shards, prompts)
    out = write_atomic(cell / "manifest.parquet", lambda tmp: merged.to_parquet(tmp, index=False))
    print(f"manifest: {len(merged)} images, {merged['seconds'].sum():.1f} s of generation → {out}")
    return merged


@clean_errors("pixart.manifest")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", type=Path, required=True)
    parser.add_argument("--num-shards", type=int, required=True)
    parser.add_argument("--prompts", type=Path, required=True)
    args = parser.parse_args(argv)
    write(args.cell, args.num_shards, args.prompts)


if __name__ == "__main__":
    main()
