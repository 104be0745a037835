"""Tiny evaluation components for tests and the embedded demo: a small open_clip CLIP, a shapes reference set.

`python -m evals.tiny clip --out DIR` / `python -m evals.tiny shapes --out DIR --n N`.
`build_tiny_clip(out, seed)` writes `{out}/tiny-clip-32.json` (an open_clip model config, registered with
`open_clip.add_model_config(out)`) and `{out}/tiny-clip-32.bin` (random weights), so scorers load it through
the same local-weights path as real CLIP.
"""
import json
from pathlib import Path

import torch

TINY_CLIP_NAME = "tiny-clip-32"
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def build_tiny_clip(out: Path, seed: int = 0) -> dict:
    import open_clip

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = out / f"{TINY_CLIP_NAME}.json"
    config.write_text(json.dumps(TINY_CLIP, indent=1))
    open_clip.add_model_config(str(out))
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    weights = out / f"{TINY_CLIP_NAME}.bin"
    torch.save(model.state_dict(), weights)
    return {"config_dir": str(out), "model_name": TINY_CLIP_NAME, "weights": str(weights)}


SHAPE_COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
                 "purple": (140, 60, 180), "orange": (240, 140, 30)}


def draw_shapes_reference(out: Path, n: int, seed: int = 0, size: int = 64) -> int:
    """A reference image set of simple scenes: 1–3 coloured circles, squares or triangles on white."""
    import random

    from PIL import Image, ImageDraw

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        image = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 3)):
            r = rng.randint(size // 10, size // 5)
            cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
            colour = SHAPE_COLOURS[rng.choice(sorted(SHAPE_COLOURS))]
            shape = rng.choice(("circle", "square", "triangle"))
            if shape == "circle":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
            elif shape == "square":
                draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        image.save(out / f"ref{i:05d}.png")
    return n


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("clip", "shapes"), nargs="?", default="clip")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=64, help="shapes: number of reference images")
    args = parser.parse_args(argv)
    if args.what == "clip":
        print(f"tiny CLIP written: {build_tiny_clip(args.out, args.seed)}")
    else:
        print(f"shapes reference: {draw_shapes_reference(args.out, args.n, args.seed)} images → {args.out}")


if __name__ == "__main__":
    main()
