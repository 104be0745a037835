"""Tiny evaluation models built from configs (tests, embedded demo): a small open_clip CLIP.

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


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"tiny CLIP written: {build_tiny_clip(args.out, args.seed)}")


if __name__ == "__main__":
    main()
