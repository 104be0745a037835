"""Reference statistics of a fidelity scorer, computed once before any cell is scored.

python -m evals.refstats --settings results/scorers/NAME.json --out results/refstats/NAME.json

Computes (or finds in the content-addressed cache) the reference set's feature statistics with the scorer's
extractor and preprocessing, and writes a small pointer JSON. Score jobs then load the cache instead of
computing the same statistics in parallel.
"""
import argparse
import json
from pathlib import Path

from evals.metrics import fid as fidelity
from evals.score import load_extractor, read_settings
from pixart.atomic import write_text_atomic
from pixart.cli import clean_errors


@clean_errors("evals.refstats")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = read_settings(args.settings)
    extractor = load_extractor(settings)
    stats = fidelity.reference_stats(settings["reference"], extractor, preprocess=settings.get("preprocess", "coco256"),
                                     keep_features=settings.get("distance", "fid") == "kid",
                                     cache_dir=settings.get("refstats_dir", fidelity.REFSTATS_DIR))
    pointer = {k: stats[k] for k in ("key", "n", "extractor", "fingerprint", "mode", "preprocessing", "source")}
    pointer["bad_files"] = list(stats.get("bad_files", []))
    write_text_atomic(args.out, json.dumps(pointer, indent=1, default=str))
    print(f"refstats: {pointer['n']} reference images, {pointer['extractor']} ({pointer['preprocessing']}) "
          f"→ key {pointer['key']}")


if __name__ == "__main__":
    main()
