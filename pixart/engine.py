"""The sampling engine: batched cfg denoising with per-sample seeds, cached embeddings and both null conventions.

The loop is diffusers' PixArtAlphaPipeline loop (same scheduler calls, same guidance and micro-conditions),
rewritten so that (a) conditioning comes from the ragged embedding table, padded only to the batch's longest
prompt; (b) the unconditional branch follows either convention (DESIGN §5); (c) each sample's initial and
per-step noise comes from its own CPU generator, so it does not depend on batch, shard, device or order;
(d) the IDDPM sampler keeps the learned-range variance channels (taken from the conditional branch) instead of
dropping them. Guidance covers every latent channel for every sampler, with both branches evaluated at the same
latents. The original repo's IDDPM path does not: its `forward_with_cfg` (from DiT) guides channels 0–2 only,
and its two halves of the batch draw their own step noise, so the unconditional branch drifts onto another
trajectory. `iddpm` here is IDDPM sampling with standard guidance, not a copy of those images.
"""
import inspect
from dataclasses import dataclass

import torch

from pixart.embeddings import EmbeddingTable
from pixart.samplers import SamplerSpec

NULL_CONVENTIONS = ("diffusers", "original")


class EngineError(ValueError):
    pass


def resolution_bins(transformer) -> dict | None:
    """diffusers' binning table for 256/512/1024 models (sample_size 32/64/128), else None."""
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
        ASPECT_RATIO_256_BIN, ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN)

    return {32: ASPECT_RATIO_256_BIN, 64: ASPECT_RATIO_512_BIN, 128: ASPECT_RATIO_1024_BIN}.get(
        transformer.config.sample_size)


def generation_size(transformer, vae_scale: int, height: int, width: int, binning: bool = True) -> tuple[int, int]:
    """The (h, w) the model samples at for a requested output size; binned like diffusers where tables exist."""
    from diffusers.image_processor import PixArtImageProcessor

    bins = resolution_bins(transformer) if binning else None
    if bins is not None:
        return PixArtImageProcessor.classify_height_width_bin(height, width, ratios=bins)
    multiple = vae_scale * transformer.config.patch_size
    if height % multiple or width % multiple or height <= 0 or width <= 0:
        native = transformer.config.sample_size * vae_scale
        raise EngineError(f"resolution {height}x{width} is not possible for this model: height and width must be "
                          f"positive multiples of {multiple} (native size {native}x{native})")
    return height, width


def sample_noise(seeds, shape, generators=None) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Initial latents, one CPU generator per sample; the generators go on to feed per-step noise."""
    generators = generators or [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    noise = torch.cat([torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in generators])
    return noise, generators


@dataclass
class Engine:
    transformer: torch.nn.Module
    vae: torch.nn.Module
    table: EmbeddingTable
    null: str = "diffusers"
    null_embedding: torch.Tensor | None = None
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    def __post_init__(self):
        from diffusers.image_processor import PixArtImageProcessor

        if self.null not in NULL_CONVENTIONS:
            raise EngineError(f"unknown null convention {self.null!r}; use one of {NULL_CONVENTIONS}")
        if self.null == "original" and self.null_embedding is None:
            raise EngineError("null convention 'original' needs the checkpoint's y_embedder.y_embedding buffer, "
                              "which only original .pth/.safetensors checkpoints carry; use uncond: diffusers")
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = PixArtImageProcessor(vae_scale_factor=self.vae_scale)
        for module in (self.transformer, self.vae):
            if (module.device, module.dtype) != (self.device, self.dtype):  # .to() on a match only warns
                module.to(self.device, self.dtype)

    def conditioning(self, prompts: list[str], guided: bool):
        """(context, mask) for the transformer: [uncond; cond] when guided, padded to the batch's longest."""
        rows = [self.table.row(p) for p in prompts]
        lengths = self.table.lengths(rows)
        length = max(lengths)
        if guided and self.null == "diffusers":
            length = max(length, self.table.negative.shape[0])
        cond, mask = self.table.padded(rows, length, self.dtype, self.device)
        if not guided:
            return cond, mask
        if self.null == "diffusers":
            n = self.table.negative.shape[0]
            uncond = torch.zeros_like(cond)
            uncond[:, :n] = self.table.negative.to(self.device, self.dtype)
            umask = torch.zeros_like(mask)
            umask[:, :n] = 1
        else:  # the original: the fixed null caption under the prompt's own mask
            if length > self.null_embedding.shape[0]:
                raise EngineError(f"prompt of {length} tokens is longer than the null embedding")
            uncond = self.null_embedding[:length].to(self.device, self.dtype).expand_as(cond).clone()
            umask = mask
        return torch.cat([uncond, cond]), torch.cat([umask, mask])

    @torch.no_grad()
    def denoise(self, prompts, seeds, height: int, width: int, sampler: SamplerSpec, cfg: float,
                on_step=None) -> torch.Tensor:
        # cfg 1 is the conditional model alone. PixArtAlphaPipeline also skips guidance below 1; we apply the
        # formula there (cfg 0 = the unconditional model), or a sweep's cfg0/cfg0.5 cells would copy cfg1's images
        guided = cfg != 1.0
        context, mask = self.conditioning(prompts, guided)
        channels = self.transformer.config.in_channels
        shape = (channels, height // self.vae_scale, width // self.vae_scale)
        latents, generators = sample_noise(seeds, shape)
        scheduler = sampler.build()
        scheduler.set_timesteps(sampler.steps, device=self.device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        latents = (latents * scheduler.init_noise_sigma).to(self.device)
        step_kwargs = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
        n = len(prompts) * (2 if guided else 1)
        micro = {"resolution": None, "aspect_ratio": None}
        if self.transformer.use_additional_conditions:
            micro = {"resolution": torch.tensor([[height, width]] * n, dtype=self.dtype, device=self.device),
                     "aspect_ratio": torch.tensor([[height / width]] * n, dtype=self.dtype, device=self.device)}
        learned_variance = self.transformer.config.out_channels == 2 * channels
        for t in scheduler.timesteps:
            model_in = torch.cat([latents] * 2) if guided else latents
            model_in = scheduler.scale_model_input(model_in, t)
            out = self.transformer(model_in.to(self.dtype), encoder_hidden_states=context,
                                   encoder_attention_mask=mask, timestep=t[None].expand(n).to(self.device),
                                   added_cond_kwargs=micro, return_dict=False)[0].float()
            if guided:
                uncond, cond = out.chunk(2)
                eps = uncond[:, :channels] + cfg * (cond[:, :channels] - uncond[:, :channels])
                out = torch.cat([eps, cond[:, channels:]], dim=1)
            if learned_variance and not sampler.uses_learned_variance:
                out = out[:, :channels]
            latents = scheduler.step(out, t, latents, **step_kwargs, return_dict=False)[0]
            if on_step:
                on_step()
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, out_height: int, out_width: int):
        """PIL images exactly as the pipeline post-processes them (resize+crop back when binned)."""
        image = self.vae.decode(latents.to(self.dtype) / self.vae.config.scaling_factor, return_dict=False)[0]
        if image.shape[-2:] != (out_height, out_width):
            image = self.image_processor.resize_and_crop_tensor(image, out_width, out_height)
        return self.image_processor.postprocess(image.float(), output_type="pil")
