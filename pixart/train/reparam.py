"""DiT → PixArt re-parameterisation: stage 1 (class-conditional DiT) → stage 2 (text-conditional PixArt).

`python -m pixart.train.reparam --dit SRC --out DIR [--variant adaln-single|adaln]` reads a diffusers
`DiTTransformer2DModel` (a folder, a pipeline folder with `transformer/`, or a cached hub id) and writes a
PixArt transformer folder (`save_pretrained`).

What is copied and what is constructed (h = hidden size, e(t) = timestep embedding, mod_i(t) = DiT block i's
adaLN-Zero output Linear_i(SiLU(e_i(t))) **without the class embedding**, as the paper specifies):
- patch embedding, self-attention, MLP and output projection (`proj_out_2` → `proj_out`) are copied. The sin-cos
  `pos_embed` is recomputed from the config, so there is nothing to copy.
- PixArt's timestep embedder = DiT block 0's (diffusers DiT keeps a copy per block; block 0's also feeds DiT's
  final layer).
- adaLN-single: t_block = the mean over blocks of DiT's Linear_i, and table_i = mod_i(500) − t_block(SiLU(e(500))).
  Every block's modulation therefore equals DiT's at t = 500 exactly (up to float64 → model-dtype rounding), and
  it differs at other t, as in the paper.
- adaLN variant: Linear_i = DiT's Linear_i, with the bias set so that the block's modulation equals mod_i(500).
  The shared t_block is zero. When PixArt's e(t) equals DiT's, as between the original PixArt and DiT code,
  this bias is DiT's own and the modulation is exact at every t. **Diffusers' DiT projects t with
  `downscale_freq_shift=1`, while PixArt uses 0** (frequencies 1e4^(−k/127) against 1e4^(−k/128)), so from a
  diffusers DiT the adaLN variant is exact at t = 500 and close elsewhere. It is exact at every t only when the
  source's projection matches.
- final layer: DiT modulates it with proj_out_1(SiLU(e(t))), PixArt with scale_shift_table + e(t). So
  table = proj_out_1(SiLU(e_DiT(500))) − e(500) (shift row first, as in both chunk orders): exact at t = 500 only.
- new text path, the original PixArt initialisation: cross-attention q/k/v xavier-uniform, its output projection
  zero (so at initialisation text has no effect and the forward equals DiT's without class), caption projection
  weights normal(0.02) at PixArt-XL's widths (4096 → 1152 → 1152), scaled by sqrt(XL fan-in / fan-in) at others
  so the projected caption has XL's scale, with zero biases. For 1024-MS configs, the micro-condition embedders'
  output layers are zero as well, so they too add nothing at initialisation.
Both libraries order the six chunks the same way (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp):
AdaLayerNormZero does `emb.chunk(6, dim=1)`, and the PixArt block does `(table + t0.reshape(B, 6, h)).chunk(6, 1)`.
So no reordering is needed.
Exact forward equality also needs the same LayerNorm eps: DiT's MLP norm uses its config `norm_eps`, which
defaults to 1e-5 in diffusers, while PixArt's is 1e-6. The difference is of order 1e-5, relative.
"""
import argparse
import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixart.cli import clean_errors
from pixart.train.variants import VARIANTS, build_variant, variant_of

REPARAM_T = 500  # the paper's matching timestep
CAPTION_PROJECTION_XL_FAN_IN = (4096, 1152)  # PixArt-XL's y_proj: T5-XXL width → hidden → hidden
# config fields that DiT and PixArt name alike and that must agree for the weights to be copied
_SHARED_FIELDS = ("num_attention_heads", "attention_head_dim", "num_layers", "patch_size", "in_channels",
                  "attention_bias", "activation_fn")


class ReparamError(ValueError):
    """A DiT source cannot be re-parameterised into the requested PixArt config; the message says why."""


def pixart_config_from_dit(dit_config: dict, caption_channels: int = 4096, variant: str = "adaln-single") -> dict:
    """The PixArt config that matches a DiT: same trunk, cross-attention at width h, T5-XXL captions by default."""
    hidden = dit_config["num_attention_heads"] * dit_config["attention_head_dim"]
    config = {k: dit_config[k] for k in _SHARED_FIELDS}
    config.update(out_channels=dit_config.get("out_channels") or dit_config["in_channels"],
                  sample_size=dit_config["sample_size"], interpolation_scale=1, use_additional_conditions=False,
                  cross_attention_dim=hidden, caption_channels=caption_channels, norm_type="ada_norm_single",
                  norm_elementwise_affine=False, norm_eps=1e-6, num_embeds_ada_norm=1000)
    if variant == "adaln":
        config["modulation"] = "adaln"
    return config


def check_compatible(dit_config: dict, target_config: dict):
    wrong = [f"{k}: DiT {dit_config.get(k)!r} vs PixArt {target_config.get(k)!r}" for k in _SHARED_FIELDS
             if dit_config.get(k) != target_config.get(k)]
    dit_out = dit_config.get("out_channels") or dit_config["in_channels"]
    if dit_out != target_config.get("out_channels"):
        wrong.append(f"out_channels: DiT {dit_out} vs PixArt {target_config.get('out_channels')}")
    if dit_config.get("norm_type") != "ada_norm_zero" or dit_config.get("norm_elementwise_affine"):
        wrong.append("DiT must use norm_type 'ada_norm_zero' without elementwise-affine norms")
    if wrong:
        raise ReparamError("the DiT and the PixArt target differ: " + "; ".join(wrong) +
                           ". Build the target with pixart_config_from_dit(dit.config).")


def _f64(module: nn.Module) -> nn.Module:
    """A float64 CPU copy: the re-parameterisation is solved on CPU, whatever device the DiT is on."""
    return copy.deepcopy(module).to("cpu", torch.float64)


def _f64_tensor(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", torch.float64)


def _embed(time_proj: nn.Module, embedder: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """e(t) in float64: the sinusoid (always computed in float32 by diffusers) through the timestep MLP."""
    return _f64(embedder)(time_proj(t).to(torch.float64))


def dit_block_modulation(block: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """DiT block's adaLN-Zero output (B, 6h) at timesteps t, from the timestep embedding alone (no class)."""
    emb = block.norm1.emb
    return _f64(block.norm1.linear)(F.silu(_embed(emb.time_proj, emb.timestep_embedder, t)))


def _copy_(dst: torch.Tensor, src: torch.Tensor, name: str):
    if dst.shape != src.shape:
        raise ReparamError(f"{name}: DiT shape {tuple(src.shape)} vs PixArt {tuple(dst.shape)}")
    dst.copy_(src.to(dst.dtype))


def _copy_trunk(dit: nn.Module, model: nn.Module):
    """Patch embedding, self-attention, MLP, output projection and timestep embedder, by (mostly shared) key."""
    target = dict(model.named_parameters())
    for key, tensor in dit.state_dict().items():
        block_part = key.split(".")[2] if key.startswith("transformer_blocks.") else None
        if key.startswith("pos_embed.proj.") or block_part in ("attn1", "ff"):
            if key not in target:
                raise ReparamError(f"DiT key {key} has no PixArt counterpart; check the two configs")
            _copy_(target[key], tensor, key)
        elif key.startswith("proj_out_2."):
            _copy_(target[key.replace("proj_out_2.", "proj_out.")], tensor, key)
        elif key.startswith("transformer_blocks.0.norm1.emb.timestep_embedder."):
            new = key.replace("transformer_blocks.0.norm1.emb.", "adaln_single.emb.")
            _copy_(target[new], tensor, key)


def caption_projection_std(fan_in: int, xl_fan_in: int) -> float:
    """PixArt's normal(0.02), scaled by sqrt(xl_fan_in / fan_in) so the projected caption keeps PixArt-XL's
    scale at any width (exactly 0.02 at XL's). Unscaled, T5 states of width 32 reach the cross-attention ~30×
    weaker than XL's 4096 do, and a small model learns to ignore the text (docs/status.md, session 5)."""
    return 0.02 * math.sqrt(xl_fan_in / fan_in)


def _init_text_path(model: nn.Module):
    """The original PixArt initialisation of what DiT lacks; zero outputs keep the DiT function at init."""
    for block in model.transformer_blocks:
        for proj in (block.attn2.to_q, block.attn2.to_k, block.attn2.to_v):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)
        nn.init.zeros_(block.attn2.to_out[0].weight)
        nn.init.zeros_(block.attn2.to_out[0].bias)
    for linear, xl_fan_in in zip((model.caption_projection.linear_1, model.caption_projection.linear_2),
                                 CAPTION_PROJECTION_XL_FAN_IN):
        nn.init.normal_(linear.weight, std=caption_projection_std(linear.in_features, xl_fan_in))
        nn.init.zeros_(linear.bias)
    emb = model.adaln_single.emb
    if emb.use_additional_conditions:
        for embedder in (emb.resolution_embedder, emb.aspect_ratio_embedder):
            nn.init.zeros_(embedder.linear_2.weight)
            nn.init.zeros_(embedder.linear_2.bias)


def _set_modulation(dit: nn.Module, model: nn.Module, variant: str):
    """Per-block modulation and final-layer table that reproduce DiT (without class) at t = REPARAM_T."""
    t = torch.tensor([REPARAM_T])
    hidden = model.inner_dim
    targets = [dit_block_modulation(block, t)[0] for block in dit.transformer_blocks]  # (6h,) each
    e = _embed(model.adaln_single.emb.time_proj, model.adaln_single.emb.timestep_embedder, t)[0]
    t_block = model.adaln_single.linear
    if variant == "adaln-single":
        linears = [block.norm1.linear for block in dit.transformer_blocks]
        weight = sum(_f64_tensor(linear.weight) for linear in linears) / len(linears)
        bias = sum(_f64_tensor(linear.bias) for linear in linears) / len(linears)
        shared = weight @ F.silu(e) + bias
        for block, target in zip(model.transformer_blocks, targets):
            _copy_(block.scale_shift_table, (target - shared).reshape(6, hidden), "scale_shift_table")
    else:
        weight, bias = torch.zeros_like(t_block.weight), torch.zeros_like(t_block.bias)
        for block, dit_block, target in zip(model.transformer_blocks, dit.transformer_blocks, targets):
            linear = block.adaln_modulation[1]
            dit_weight = _f64_tensor(dit_block.norm1.linear.weight)
            _copy_(linear.weight, dit_weight, "adaln_modulation.1.weight")
            _copy_(linear.bias, target - dit_weight @ F.silu(e), "adaln_modulation.1.bias")
    _copy_(t_block.weight, weight, "adaln_single.linear.weight")
    _copy_(t_block.bias, bias, "adaln_single.linear.bias")
    e_dit = _embed(dit.transformer_blocks[0].norm1.emb.time_proj,
                   dit.transformer_blocks[0].norm1.emb.timestep_embedder, t)
    final = _f64(dit.proj_out_1)(F.silu(e_dit))[0].reshape(2, hidden) - e
    _copy_(model.scale_shift_table, final, "scale_shift_table")


@torch.no_grad()
def reparameterize(dit: nn.Module, target_config: dict, seed: int = 0) -> nn.Module:
    """A PixArt model (variant from `target_config['modulation']`, default adaln-single) initialised from `dit`.

    Deterministic for a given `seed` (the new text path is random). Returned on CPU in the DiT's dtype, in eval mode."""
    variant = variant_of(target_config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_variant(variant, target_config)
        _init_text_path(model)
    check_compatible(dict(dit.config), dict(model.config))  # the built config has every default filled in
    dtype = next(dit.parameters()).dtype
    if model.dtype != dtype:  # diffusers warns on every dtype cast, even a no-op one
        model.to(dtype)
    _copy_trunk(dit, model)
    _set_modulation(dit, model, variant)
    return model.eval()


def load_dit(source: str) -> nn.Module:
    """A diffusers DiT from a transformer folder, a pipeline folder (`transformer/`) or a cached hub id."""
    from diffusers import DiTTransformer2DModel

    path = Path(source)
    subfolder = "transformer" if (path / "transformer").is_dir() or not path.exists() else None
    try:
        return DiTTransformer2DModel.from_pretrained(source, subfolder=subfolder).eval()
    except (OSError, ValueError) as err:
        raise ReparamError(
            f"DiT source {source!r} could not be loaded: {str(err).splitlines()[0]}. Give a local folder holding "
            f"a DiTTransformer2DModel (config.json + weights, or a pipeline folder with transformer/); offline, a "
            f"hub id such as facebook/DiT-XL-2-256 must already be in the HF cache."
        ) from None


@clean_errors("pixart.train.reparam")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dit", required=True, help="diffusers DiT folder, pipeline folder or cached hub id")
    parser.add_argument("--out", type=Path, required=True, help="output folder (PixArt save_pretrained)")
    parser.add_argument("--variant", choices=VARIANTS, default="adaln-single")
    parser.add_argument("--caption-channels", type=int, default=4096, help="text-encoder width (T5-XXL: 4096)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new text-path weights")
    args = parser.parse_args(argv)
    dit = load_dit(args.dit)
    config = pixart_config_from_dit(dict(dit.config), args.caption_channels, args.variant)
    model = reparameterize(dit, config, seed=args.seed)
    model.save_pretrained(args.out)
    print(f"{args.variant} PixArt re-parameterised from {args.dit} at t={REPARAM_T}: {args.out}")


if __name__ == "__main__":
    main()
