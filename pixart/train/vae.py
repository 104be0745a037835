"""Training the shapes world's tiny diffusers AutoencoderKL on a folder of images.

python -m pixart.train.vae --data DIR --out DIR [--steps N] [--batch-size B] [--lr LR] [--kl-weight W] [--seed S]
                           [--threads T] [--crop PX]

DIR holds the PNG images (all the same size, a multiple of 4 px: 64-px images ↔ 16×16×4 latents, what the
tiny PixArt of `pixart.tiny` takes). The loss is the L1 + MSE reconstruction of a posterior sample (MSE gets
the colours right early: L1 alone was 2 dB behind after 300 steps) plus `kl_weight` × the KL to N(0, I), all
per image and divided by the pixel count: that is LDM's normalisation, so `kl_weight` means what LDM's does
(1e-6 for the SD VAE), just enough to keep the latents bounded. Small batches (4) with more steps beat larger
ones for the same time, and 32-px random crops (`crop`) beat whole images: 1500 crop steps reach the 26.7 dB
held-out PSNR of 1000 whole-image steps in 60% of the time. The sharpness matters to the compositional
metrics: the exact scene parser reads ~100% of colour/shape/spatial test renders back through a 26-dB VAE
and ~10% through a 21-dB one (stripes and dots survive neither), but the sharper latents are also harder for
a small PixArt to learn in a few hundred steps (docs/status.md).

After training, `scaling_factor` in the saved config is set to 1 / std of posterior samples of training
images (how SD chose 0.18215): PixArt multiplies latents by it, so the diffusion model sees unit-variance
latents; their mean is not removed (PixArt has no shift) and is reported. `{out}` is a diffusers folder that
`AutoencoderKL.from_pretrained(out)` and `pixart.checkpoints.load_vae(out, subfolder=None)` load;
`{out}/train_summary.json` holds the training numbers, but neither the time (the log line gives it) nor the folder's
own path: the same training (data, seed, settings and torch threads) writes the same bytes, so a retrained VAE
keeps its fingerprint and the features extracted through it stay valid.
"""
import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from pixart.tiny import TINY_VAE
from pixart.train.tiny_trainers import held_out_split, warmup_cosine

# pixart.tiny's VAE (same latents: 4 channels, ×4 downsampling) at a third of the convolution cost: 16/32/32
# channels reach the PSNR of 32/64/64 per step (18.5 vs 18.2 dB after 300 steps on the shapes world). GroupNorm
# with 4 groups: one channel per group (TINY_VAE's 32 on 32) normalises each channel alone, discarding how
# strongly it fires, i.e. the colour (+0.6 dB at 300 steps).
SHAPES_VAE = {**TINY_VAE, "block_out_channels": (16, 32, 32), "norm_num_groups": 4}
KL_WEIGHT = 1e-6
DOWNSAMPLE = 2 ** (len(SHAPES_VAE["block_out_channels"]) - 1)  # every block but the last halves the side
SCALING_SAMPLE = 512  # training images whose latents set scaling_factor (SD used one batch)


class ImageFolderError(ValueError):
    pass


def load_images(data: Path) -> torch.Tensor:
    """Every PNG of `data` (sorted by name) in memory as one float tensor in [-1, 1], N×3×H×W."""
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


def build_shapes_vae(seed: int):
    """A freshly initialised (seeded) AutoencoderKL with the SHAPES_VAE architecture."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**SHAPES_VAE)


def vae_loss(vae, images: torch.Tensor, kl_weight: float, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """(L1 + MSE reconstruction + kl_weight × KL, per pixel as in LDM) of a posterior sample, and the
    reconstruction term alone."""
    posterior = vae.encode(images).latent_dist
    error = vae.decode(posterior.sample(generator=generator)).sample - images
    reconstruction = error.abs().mean() + error.pow(2).mean()
    kl = posterior.kl().mean() / images[0].numel()
    return reconstruction + kl_weight * kl, reconstruction.item()


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Decodes of the posterior means: the deterministic round trip through the latent space."""
    return torch.cat([vae.decode(vae.encode(images[i:i + batch_size]).latent_dist.mode()).sample
                      for i in range(0, len(images), batch_size)])


def _as_saved(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images as the [0, 1] values of their 8-bit PNGs."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round() / 255


def psnr(images: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """Mean per-image PSNR in dB, on the pixel values the images would have once saved."""
    mse = ((_as_saved(images) - _as_saved(reconstruction)) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(1 / mse)).mean().item()


@torch.no_grad()
def latent_scaling_factor(vae, images: torch.Tensor, generator: torch.Generator,
                          batch_size: int = 64) -> tuple[float, float]:
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


def random_crops(batch: torch.Tensor, side: int | None, generator: torch.Generator) -> torch.Tensor:
    """One random `side`-px square per image (None or the full side: the images themselves)."""
    height, width = batch.shape[-2:]
    if side is None or side >= min(height, width):
        return batch
    tops = torch.randint(0, height - side + 1, (len(batch),), generator=generator).tolist()
    lefts = torch.randint(0, width - side + 1, (len(batch),), generator=generator).tolist()
    return torch.stack([image[:, t:t + side, l:l + side] for image, t, l in zip(batch, tops, lefts)])


def train_vae(data: Path, out: Path, steps: int = 300, batch_size: int = 4, lr: float = 2e-3,
              kl_weight: float = KL_WEIGHT, seed: int = 0, threads: int = 2, progress: bool = True,
              crop: int | None = None) -> dict:
    """Train the shapes VAE on the images of `data`, save it as a diffusers folder at `out`, return the summary.

    `crop`: train on random crops of this side (the model is convolutional apart from the mid-block attention,
    so it applies to whole images; a 32-px crop of a 64-px image is a quarter of the cost per step)."""
    from tqdm.auto import tqdm

    torch.set_num_threads(threads)
    images = load_images(data)
    if len(images) < 2:
        raise ImageFolderError(f"{data} holds {len(images)} PNG image: training needs at least 2 (a tenth, at "
                               f"least 8 and at most half, is held out for the PSNR)")
    train, held = held_out_split(len(images), seed)
    vae = build_shapes_vae(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
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
        batch = random_crops(images[train[order[cursor:cursor + batch_size]]], crop, generator)
        cursor += batch_size
        loss, recon = vae_loss(vae, batch, kl_weight, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(recon)
        bar.set_postfix(recon=f"{recon:.4f}")
    seconds = time.perf_counter() - start
    vae.eval()
    scaling, latent_mean = latent_scaling_factor(vae, images[train[:SCALING_SAMPLE]], generator)
    vae.register_to_config(scaling_factor=scaling)
    saved = {"steps": steps, "batch_size": batch_size, "crop": crop, "lr": lr, "kl_weight": kl_weight, "seed": seed,
             "n_train": len(train), "n_held_out": len(held), "first_recon_loss": losses[0] if losses else None,
             "final_recon_loss": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
             "psnr_held_out": psnr(images[held], reconstruct(vae, images[held])),
             "psnr_untrained": untrained_psnr, "scaling_factor": scaling, "latent_mean": latent_mean}
    save_vae(vae, out, saved)
    return {**saved, "train_seconds": seconds, "out": str(out)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of same-size PNG images")
    parser.add_argument("--out", type=Path, required=True, help="diffusers folder to write")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4, help="small batches, more updates: better per second")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--kl-weight", type=float, default=KL_WEIGHT, help="LDM-normalised KL weight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--crop", type=int, default=0, help="train on random crops of this side (0: whole images)")
    args = parser.parse_args(argv)
    s = train_vae(args.data, args.out, args.steps, args.batch_size, args.lr, args.kl_weight, args.seed, args.threads,
                  crop=args.crop or None)
    print(f"shapes VAE: {s['steps']} steps, recon loss (L1 + MSE) {s['first_recon_loss']:.4f} → "
          f"{s['final_recon_loss']:.4f}, "
          f"{s['train_seconds']:.0f} s; held-out ({s['n_held_out']}) PSNR {s['psnr_held_out']:.1f} dB "
          f"(untrained {s['psnr_untrained']:.1f}); scaling_factor {s['scaling_factor']:.4f} "
          f"(latent mean {s['latent_mean']:.3f}) → {s['out']}")


if __name__ == "__main__":
    main()
