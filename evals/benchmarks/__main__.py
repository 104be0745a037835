"""Benchmark prompt sets and data tools.

Prompt set (what generation consumes):
  python -m evals.benchmarks --benchmark t2i_compbench --subset color --out results/prompts/t2i_color.parquet
         [--limit N] [--source PATH] [--images DIR] [--height H --width W]
Tools:
  python -m evals.benchmarks list
  python -m evals.benchmarks build-coco30k --captions annotations/captions_val2014.json --seed 0 --out LIST.csv
  python -m evals.benchmarks freeze-sam --images SA1B_DIR --n 2000 --seed 0 --out LIST.csv
  python -m evals.benchmarks export-t2i-compbench --prompts P.parquet --samples DIR --out DIR [--mode copy]
  python -m evals.benchmarks export-geneval --prompts P.parquet --samples DIR --out DIR [--mode copy]
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

from evals.benchmarks import loaders
from evals.benchmarks.protocols import list_protocols, load_protocol
from pixart.cli import UsageError, clean_errors, positive_int


def prompts(argv):
    parser = argparse.ArgumentParser(prog="python -m evals.benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", required=True, help="protocol name (evals/benchmarks/NAME.yaml) or path")
    parser.add_argument("--subset", help="subset of the protocol (default: the protocol's default_subset)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--source", type=Path, help="user-supplied data: WISE folder, SAM list, prompt file, COCO list")
    parser.add_argument("--images", type=Path, help="SA-1B folder to re-verify a SAM list against")
    parser.add_argument("--limit", type=positive_int, help="keep the first N prompts (smoke runs)")
    parser.add_argument("--height", type=positive_int)
    parser.add_argument("--width", type=positive_int)
    args = parser.parse_args(argv)
    protocol = load_protocol(args.benchmark)
    frame = loaders.load_prompts(protocol, args.subset, source=args.source, images=args.images,
                                 limit=args.limit, height=args.height, width=args.width)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(args.out, index=False)
    print(f"{protocol.tag} {frame.attrs['protocol']['subset']}: {frame['prompt_id'].nunique()} prompts × "
          f"{protocol.images_per_prompt} → {len(frame)} samples (seeds {protocol.seed_rule} from "
          f"{protocol.seed_base}) → {args.out}")


def build_coco30k(argv):
    parser = argparse.ArgumentParser(prog="python -m evals.benchmarks build-coco30k")
    parser.add_argument("--captions", type=Path, required=True, help="COCO annotations/captions_val2014.json")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    sha = loaders.write_caption_list(loaders.build_coco30k(args.captions, args.seed, args.n), args.out)
    print(f"coco30k list: {args.n} images, one caption each (seed {args.seed}) → {args.out} sha256 {sha}")


def freeze_sam(argv):
    parser = argparse.ArgumentParser(prog="python -m evals.benchmarks freeze-sam")
    parser.add_argument("--images", type=Path, required=True, help="folder of sa_*.jpg with sa_*.txt captions")
    parser.add_argument("--n", type=int, required=True, help="2000 (FID-2K) or 5000 (FID-5K)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    sha = loaders.freeze_sam_subset(args.images, args.n, args.seed, args.out)
    print(f"sam subset: {args.n} images (seed {args.seed}) → {args.out} sha256 {sha} (state it with every result)")


def _export_args(name: str, argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m evals.benchmarks {name}")
    parser.add_argument("--prompts", type=Path, required=True, help="prompt-set parquet of the samples")
    parser.add_argument("--samples", type=Path, required=True, help="folder with {sample_id}.png")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", choices=["symlink", "hardlink", "copy"], default="symlink")
    args = parser.parse_args(argv)
    if not args.prompts.is_file():
        raise FileNotFoundError(f"--prompts {args.prompts}: no such file")
    return args


def export_t2i_compbench(argv):
    args = _export_args("export-t2i-compbench", argv)
    frame = pd.read_parquet(args.prompts)
    count = loaders.export_t2i_compbench(frame, args.samples, args.out,
                                         images_per_prompt=int(frame["image_index"].max()) + 1, mode=args.mode)
    print(f"t2i_compbench export: {count} images ({args.mode}) → {args.out}")


def export_geneval(argv):
    args = _export_args("export-geneval", argv)
    count = loaders.export_geneval(pd.read_parquet(args.prompts), args.samples, args.out, mode=args.mode)
    print(f"geneval export: {count} images ({args.mode}) → {args.out} (run GenEval's evaluation/evaluate_images.py "
          f"on it)")


def list_benchmarks(argv):
    for name in list_protocols():
        protocol = load_protocol(name)
        print(f"{protocol.tag}: subsets {', '.join(protocol.spec['sources'])}")


COMMANDS = {"list": list_benchmarks, "build-coco30k": build_coco30k, "freeze-sam": freeze_sam,
            "export-t2i-compbench": export_t2i_compbench, "export-geneval": export_geneval}


@clean_errors("evals.benchmarks")
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        command(argv[1:]) if command else prompts(argv)
    except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError) as err:
        # a path the user gave (UserDataError is a FileNotFoundError of ours): one error line, as ours are
        raise UsageError(str(err)) from err


if __name__ == "__main__":
    main()
