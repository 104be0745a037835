"""Training step throughput and peak memory per ablation variant (random weights have the real FLOPs).

`python -m pixart.train.bench [--arch xl-2] [--resolution 256] [--batch-size 32] [--steps 10] [--warmup 3]
 [--dtype bfloat16] [--gradient-checkpointing] [--variants adaln adaln-single] [--json OUT]`

One step = the real IDDPM loss (MSE + VB), backward, grad clip and an AdamW step, under autocast in `--dtype`
with fp32 master weights (as accelerate's mixed precision does). Reports images/s per device (median over
timed steps) and peak allocated memory (CUDA only; None on CPU).
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from pixart.atomic import write_text_atomic
from pixart.checkpoints import transformer_config
from pixart.runtime import pick_device, torch_dtype
from pixart.train.diffusion import GaussianDiffusion
from pixart.train.variants import VARIANTS, build_variant

MAX_TOKENS = 120


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_variant(variant: str, config: dict, *, batch_size: int, steps: int, warmup: int, dtype: torch.dtype,
                  device: torch.device, gradient_checkpointing: bool = False, tokens: int = MAX_TOKENS) -> dict:
    torch.manual_seed(0)
    model = build_variant(variant, config).to(device).train()
    if gradient_checkpointing:
        model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.03, eps=1e-10)
    diffusion = GaussianDiffusion()
    size = config["sample_size"]
    x0 = torch.randn(batch_size, config["in_channels"], size, size, device=device)
    text = torch.randn(batch_size, tokens, config["caption_channels"], device=device)
    mask = torch.ones(batch_size, tokens, dtype=torch.long, device=device)
    added = {"resolution": torch.full((batch_size, 2), float(size * 8), device=device),
             "aspect_ratio": torch.ones(batch_size, 1, device=device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(warmup + steps):
        _sync(device)
        tick = time.perf_counter()
        t = torch.randint(0, diffusion.num_timesteps, (batch_size,), device=device)
        noise = torch.randn_like(x0)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(diffusion.q_sample(x0, t, noise), encoder_hidden_states=text, encoder_attention_mask=mask,
                        timestep=t, added_cond_kwargs=added).sample
        loss = diffusion.training_losses(out.float(), x0, noise, t)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        optimizer.step()
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - tick)
    step_s = statistics.median(times)
    return {"variant": variant, "batch_size": batch_size, "step_s_median": step_s,
            "images_per_s": batch_size / step_s, "timed_steps": steps,
            "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="xl-2", help="'xl-2' or a PixArt config.json")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    config = transformer_config(args.arch, args.resolution)
    rows = []
    for variant in args.variants:
        row = bench_variant(variant, config, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                            dtype=torch_dtype(args.dtype), device=device,
                            gradient_checkpointing=args.gradient_checkpointing)
        rows.append(row)
        memory = "n/a" if row["peak_memory_bytes"] is None else f"{row['peak_memory_bytes'] / 2**30:.1f} GiB"
        print(f"{variant}: {row['images_per_s']:.1f} images/s, peak {memory}, {row['params']:,} params")
    if args.json:
        report = {"arch": args.arch, "resolution": args.resolution, "dtype": args.dtype, "device": str(device),
                  "gradient_checkpointing": args.gradient_checkpointing, "rows": rows}
        write_text_atomic(args.json, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
