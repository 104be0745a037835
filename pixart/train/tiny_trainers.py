"""Pieces shared by the shapes world's small trainers (pixart.train.vae, evals.shapes.train_clip): a seeded
held-out split and a warm-up + cosine learning-rate multiplier."""
import math

import torch


def held_out_split(n: int, seed: int, fraction: float = 0.1, minimum: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint (train, held-out) index tensors; held-out is `fraction` of the data, at least `minimum`
    and at most half."""
    n_held = min(max(round(n * fraction), minimum), n // 2)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_held:], order[:n_held]


def warmup_cosine(steps: int, warmup_fraction: float = 0.05):
    """Linear warm-up then a cosine decay to 0 at `steps`: an LR multiplier for LambdaLR."""
    warmup = max(1, round(steps * warmup_fraction))
    return lambda step: (step + 1) / warmup if step < warmup else \
        0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
