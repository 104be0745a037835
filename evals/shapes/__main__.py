"""python -m evals.shapes {train,prompts,geneval,reference} --out DIR [--n N] [--seed S] [--size PX]

  train      the first N scenes of the train split: DIR/00000.png … + captions.jsonl
  reference  the first N scenes of the test split, same layout (the FID reference of prompts' fid.txt
             when N equals its --n-fid)
  prompts    N held-out prompts per category (color, shape, texture, spatial, complex) + fid.txt
             (--n-fid test captions), each with its frozen parse <name>.v1.jsonl, and scenes.jsonl
  geneval    up to N prompts per GenEval task in GenEval's metadata format (geneval.jsonl) and the scene of
             each (geneval_scenes.jsonl): evals/shapes/geneval.py
"""
import argparse
import sys
from pathlib import Path

from evals.shapes import geneval, world


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evals.shapes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("train", "prompts", "geneval", "reference"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=None,
                        help="images (train, reference; default 1000), prompts per category (prompts; default 50) "
                             "or per GenEval task (geneval; default 24)")
    parser.add_argument("--n-fid", type=int, default=200, help="prompts: captions in fid.txt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=world.DEFAULT_SIZE_PX, help="image side in pixels")
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else {"prompts": 50, "geneval": 24}.get(args.what, 1000)
    if n < 1 or args.n_fid < 1 or args.size < world.MIN_SIZE_PX:
        parser.error(f"--n and --n-fid must be >= 1 and --size >= {world.MIN_SIZE_PX}")
    try:
        if args.what == "prompts":
            files = world.write_prompt_sets(args.out, args.seed, n, args.n_fid)
            print(f"shapes prompts (seed {args.seed}): {n} per category × {len(world.PROMPT_CATEGORIES)} + "
                  f"{args.n_fid} fid → {', '.join(p.name for p in files.values())} in {args.out}")
        elif args.what == "geneval":
            prompts, scenes = geneval.write_prompts(args.out, args.seed, n)
            print(f"shapes GenEval prompts (seed {args.seed}): up to {n} per task × {len(geneval.ge.TAGS)} → "
                  f"{prompts.name} ({len(prompts.read_text().splitlines())} lines), {scenes.name} in {args.out}")
        else:
            split = "train" if args.what == "train" else "test"
            world.write_dataset(args.out, n, split, args.seed, args.size)
            print(f"shapes {args.what} ({split} split, seed {args.seed}): {n} images of {args.size} px "
                  f"+ captions.jsonl → {args.out}")
    except ValueError as err:
        sys.exit(f"python -m evals.shapes {args.what}: {err}")


if __name__ == "__main__":
    main()
