"""Trainable parameter counts of the adaLN ablation variants, next to the paper's figures.

`python -m pixart.train.params [--arch xl-2] [--resolution 256|512|1024] [--json OUT]`

Models are built on the meta device (no memory, no init). Counted: parameters with requires_grad. Buffers
(pos_embed, the adaLN model's zero per-block tables) are not counted, and neither is the original checkpoint's
y_embedding buffer, which diffusers does not hold. Reference figures (reference/pixart.md §1, the paper's
adaLN ablation):
- paper: adaLN 833M, adaLN-single 611M (whole millions; 610.86M rounds to 611M, while 833.81M shows as 833M,
  so the two figures follow different roundings and agree with exact counts only to within 1M).
- original code (`sum(p.numel() for p in model.parameters())`): PixArt-XL-2 610,856,096 at 256/512 and
  611,349,152 for the 1024-MS model (+493,056 for the micro-condition embedders). The adaLN ablation was not
  released, so it has no code count.
"""
import argparse
import json
from pathlib import Path

import torch

from pixart.checkpoints import transformer_config
from pixart.train.variants import VARIANTS, build_variant

PAPER = {"adaln": 833_000_000, "adaln-single": 611_000_000}
ORIGINAL_CODE = {("adaln-single", 256): 610_856_096, ("adaln-single", 512): 610_856_096,
                 ("adaln-single", 1024): 611_349_152}


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def variant_counts(arch: str | dict = "xl-2", resolution: int | None = 512) -> dict:
    """{variant: {"trainable", "paper", "original_code"}}; the figures are None where no source gives one."""
    config = transformer_config(arch, resolution)
    xl2 = arch == "xl-2"
    counts = {}
    for name in VARIANTS:
        with torch.device("meta"):
            model = build_variant(name, config)
        counts[name] = {"trainable": trainable_parameters(model),
                        "paper": PAPER[name] if xl2 else None,
                        "original_code": ORIGINAL_CODE.get((name, resolution)) if xl2 else None}
    return counts


def format_table(counts: dict) -> str:
    def exact(n):
        return "—" if n is None else f"{n:,} ({n / 1e6:.2f}M)"

    def paper(n):  # the paper gives whole millions
        return "—" if n is None else f"{n // 10**6}M"

    rows = [f"{'variant':<14}{'trainable (ours)':>28}{'paper':>8}{'original code':>28}"]
    rows += [f"{name:<14}{exact(c['trainable']):>28}{paper(c['paper']):>8}{exact(c['original_code']):>28}"
             for name, c in counts.items()]
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="xl-2", help="'xl-2' or a PixArt config.json")
    parser.add_argument("--resolution", type=int, default=512, choices=(256, 512, 1024))
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args(argv)
    counts = variant_counts(args.arch, args.resolution)
    print(f"{args.arch} @ {args.resolution}px\n{format_table(counts)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"arch": args.arch, "resolution": args.resolution, "variants": counts},
                                        indent=1))


if __name__ == "__main__":
    main()
