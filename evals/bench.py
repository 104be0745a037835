"""Scoring throughput: images/s of every scorer kind on one synthetic cell (tiny random models on CPU).

python -m evals.bench [--images 40] [--repeats 3] [--json OUT]

The cell holds PNGs for real T2I-CompBench prompts (their frozen parses exist), so each kind runs its real
code path. Times include loading the (tiny) models, as a scoring job pays it. Real-size architectures need a
GPU and real weights.
"""
import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from evals import score, tiny
from evals.benchmarks.loaders import load_prompts
from pixart.atomic import write_text_atomic


def synthetic_cell(root: Path, subset: str, n: int) -> Path:
    """PNGs for the first n samples of a T2I-CompBench subset, or of GenEval (subset "geneval")."""
    cell = root / subset
    cell.mkdir(parents=True)
    benchmark = "geneval" if subset == "geneval" else "t2i_compbench"
    prompts = load_prompts(benchmark, None if subset == "geneval" else subset).head(n).copy()
    rng = np.random.default_rng(0)
    for sid in prompts["sample_id"]:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(cell / f"{sid}.png")
    prompts["file"] = prompts["sample_id"] + ".png"
    prompts.to_parquet(cell / "manifest.parquet")
    return cell


def scorer_settings(models: dict, reference: Path) -> dict:
    clip = {"weights": models["clip"]["weights"], "model_name": models["clip"]["model_name"],
            "config_dir": models["clip"]["config_dir"]}
    return {
        "clip_score": ("non_spatial", {"kind": "clip_score", **clip}),
        "fidelity (CLIP-FID)": ("non_spatial", {"kind": "fidelity", "extractor": "clip", **clip,
                                                "reference": str(reference), "preprocess": "none",
                                                "n_resamples": 50, "refstats_dir": str(reference.parent / "rs")}),
        "compbench_blip_vqa": ("color", {"kind": "compbench_blip_vqa", "weights": models["blip"]}),
        "compbench_spatial_2d": ("spatial", {"kind": "compbench_spatial_2d", "weights": models["owlv2"]}),
        "compbench_spatial_3d": ("3d_spatial", {"kind": "compbench_spatial_3d", "weights": models["owlv2"],
                                                "depth_weights": models["dpt"]}),
        "compbench_numeracy": ("numeracy", {"kind": "compbench_numeracy", "weights": models["owlv2"]}),
        "compbench_complex": ("complex", {"kind": "compbench_complex", "blip_weights": models["blip"],
                                          "detector_weights": models["owlv2"], "clip_weights": clip["weights"],
                                          "clip_model_name": clip["model_name"],
                                          "clip_config_dir": clip["config_dir"]}),
        "geneval": ("geneval", {"kind": "geneval", "detector_weights": models["mask2former"],
                                "clip_weights": clip["weights"], "clip_model": clip["model_name"],
                                "clip_config_dir": clip["config_dir"]}),
    }


def run(args) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = {"clip": tiny.build_tiny_clip(root / "clip"), "blip": tiny.build_tiny_blip(root / "blip"),
                  "owlv2": tiny.build_tiny_owlv2(root / "owlv2"), "dpt": tiny.build_tiny_dpt(root / "dpt"),
                  "mask2former": tiny.build_tiny_mask2former(root / "mask2former")}
        reference = root / "ref" / "shapes"
        tiny.draw_shapes_reference(reference, 64)
        cells = {}
        for name, (subset, settings) in scorer_settings(models, reference).items():
            cell = cells.get(subset) or synthetic_cell(root / "cells", subset, args.images)
            cells[subset] = cell
            manifest = pd.read_parquet(cell / "manifest.parquet")
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                score.KINDS[settings["kind"]]({**settings, "_output": str(root / f"{name}.parquet")}, manifest, cell)
                times.append(time.perf_counter() - t0)
            rows[name] = {"images": len(manifest), "seconds_median": round(statistics.median(times), 3),
                          "images_per_s": round(len(manifest) / statistics.median(times), 2)}
            print(f"bench: {name}: {rows[name]['images_per_s']} images/s "
                  f"(median of {args.repeats}, model load included)")
    return {"date": date.today().isoformat(), "machine": platform.platform(), "images": args.images,
            "repeats": args.repeats, "scorers": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = run(args)
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
