"""Training the shapes world's tiny diffusers AutoencoderKL (`pixart.tiny.TINY_VAE`) on a folder of images.

python -m pixart.train.vae --data DIR --out DIR [--steps N] [--batch-size B] [--lr LR] [--kl-weight W] [--seed S] [--threads T]

DIR holds the PNG images (all the same size, a multiple of 4 px: 64-px images ↔ 16×16×4 latents). The
loss is the L1 reconstruction of a posterior sample plus `kl_weight` × the KL to N(0, I), both per image and
divided by the pixel count: that is LDM's normalisation, so `kl_weight` means what LDM's does (1e-6 for the
SD VAE) — just enough to keep the latents bounded. After training, `scaling_factor` in the saved config is
set to 1 / std of posterior samples of training images (how SD chose 0.18215): PixArt multiplies latents
by it, so the diffusion model sees unit-variance latents. `{out}` is a diffusers folder that
`AutoencoderKL.from_pretrained(out)` and `pixart.checkpoints.load_vae(out, subfolder=None)` load; `{out}/
train_summary.json` holds the training numbers.
"""
import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

KL_WEIGHT = 1e-6
DOWNSAMPLE = 4  # TINY_VAE's three blocks downsample twice
SCALING_SAMPLE = 512  # training images whose latents set scaling_factor (SD used one batch)


class ImageFolderError(ValueError):
    pass


def load_images(data: Path) -> torch.Tensor:
    """Every PNG of `data` (sorted by name) as one float tensor in [-1, 1], N×3×H×W."""
    import numpy as np
    from PIL import Image

    data = Path(data)
    files = sorted(data.glob("*.png"))
    if not files:
        raise ImageFolderError(f"no PNG images in {data}: expected a folder of same-size RGB images "
                               f"(e.g. the shapes world's 00000.png, 00001.png, … beside captions.jsonl)")
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    first = arrays[0].shape
    for file, array in zip(files, arrays):
        if array.shape != first:
            raise ImageFolderError(f"{file} is {array.shape[1]}×{array.shape[0]} px but {files[0].name} is "
                                   f"{first[1]}×{first[0]}: the VAE trains on one size; resize or remove it")
    if first[0] % DOWNSAMPLE or first[1] % DOWNSAMPLE:
        raise ImageFolderError(f"images in {data} are {first[1]}×{first[0]} px: sides must be multiples of "
                               f"{DOWNSAMPLE} (the VAE's downsampling)")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def held_out_split(n: int, seed: int, fraction: float = 0.1, minimum: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint (train, held-out) index tensors; held-out is `fraction` of the images, at least `minimum`."""
    n_held = min(max(round(n * fraction), minimum), n // 2)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_held:], order[:n_held]


def vae_loss(vae, images: torch.Tensor, kl_weight: float, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """(L1 reconstruction + kl_weight × KL, per pixel as in LDM) of a posterior sample, and the L1 alone."""
    posterior = vae.encode(images).latent_dist
    reconstruction = vae.decode(posterior.sample(generator=generator)).sample
    l1 = (reconstruction - images).abs().mean()
    kl = posterior.kl().mean() / images[0].numel()
    return l1 + kl_weight * kl, l1.item()


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Decode of the posterior mode, as the diffusion pipeline round-trips an image."""
    return torch.cat([vae.decode(vae.encode(images[i:i + batch_size]).latent_dist.mode()).sample
                      for i in range(0, len(images), batch_size)])


def psnr(images: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """Mean per-image PSNR in dB over [0, 1] pixel values (8-bit-rounded, like saved images)."""
    to_unit = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round() / 255  # noqa: E731
    mse = ((to_unit(images) - to_unit(reconstruction)) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(1 / mse)).mean().item()


@torch.no_grad()
def latent_scaling_factor(vae, images: torch.Tensor, generator: torch.Generator, batch_size: int = 64) -> tuple[float, float]:
    """1 / std of posterior samples over `images`, and their mean (reported: PixArt applies no shift)."""
    latents = torch.cat([vae.encode(images[i:i + batch_size]).latent_dist.sample(generator=generator)
                         for i in range(0, len(images), batch_size)])
    return 1 / latents.std().item(), latents.mean().item()


def save_vae(vae, out: Path, summary: dict) -> None:
    """save_pretrained + train_summary.json through a temporary sibling folder, so a killed job never leaves
    half a VAE at `out`."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp)
    (tmp / "train_summary.json").write_text(json.dumps(summary, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def train_vae(data: Path, out: Path, steps: int = 150, batch_size: int = 8, lr: float = 1e-3,
              kl_weight: float = KL_WEIGHT, seed: int = 0, threads: int = 2, progress: bool = True) -> dict:
    """Train the tiny VAE on the images of `data`, save it as a diffusers folder at `out`, return the summary."""
    from tqdm.auto import tqdm

    from pixart.tiny import build_vae

    torch.set_num_threads(threads)
    images = load_images(data)
    train, held = held_out_split(len(images), seed)
    vae = build_vae(seed).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, step / max(1, steps)))))
    generator = torch.Generator().manual_seed(seed)
    vae.eval()
    untrained_psnr = psnr(images[held], reconstruct(vae, images[held]))
    vae.train()
    order, cursor, losses = torch.randperm(len(train), generator=generator), 0, []
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="shapes VAE", disable=not progress)
    for _ in bar:
        if cursor + batch_size > len(order):  # a new epoch: reshuffle rather than train on a short batch
            order, cursor = torch.randperm(len(train), generator=generator), 0
        batch = images[train[order[cursor:cursor + batch_size]]]
        cursor += batch_size
        loss, l1 = vae_loss(vae, batch, kl_weight, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(l1)
        bar.set_postfix(l1=f"{l1:.4f}")
    seconds = time.perf_counter() - start
    vae.eval()
    scaling, latent_mean = latent_scaling_factor(vae, images[train[:SCALING_SAMPLE]], generator)
    vae.register_to_config(scaling_factor=scaling)
    summary = {"steps": steps, "batch_size": batch_size, "lr": lr, "kl_weight": kl_weight, "seed": seed,
               "n_train": len(train), "n_held_out": len(held), "first_l1": losses[0] if losses else None,
               "final_l1": sum(losses[-10:]) / len(losses[-10:]) if losses else None, "train_seconds": seconds,
               "psnr_held_out": psnr(images[held], reconstruct(vae, images[held])),
               "psnr_untrained": untrained_psnr, "scaling_factor": scaling, "latent_mean": latent_mean,
               "out": str(out)}
    save_vae(vae, out, summary)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of same-size PNG images")
    parser.add_argument("--out", type=Path, required=True, help="diffusers folder to write")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=KL_WEIGHT, help="LDM-normalised KL weight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    s = train_vae(args.data, args.out, args.steps, args.batch_size, args.lr, args.kl_weight, args.seed, args.threads)
    print(f"shapes VAE: {s['steps']} steps, L1 {s['first_l1']:.4f} → {s['final_l1']:.4f}, "
          f"{s['train_seconds']:.0f} s; held-out ({s['n_held_out']}) PSNR {s['psnr_held_out']:.1f} dB "
          f"(untrained {s['psnr_untrained']:.1f}); scaling_factor {s['scaling_factor']:.4f} "
          f"(latent mean {s['latent_mean']:.3f}) → {s['out']}")


if __name__ == "__main__":
    main()
