"""The paper's adaLN ablation variants (PixArt-α §2.3 and its adaLN / adaLN-single ablation), as diffusers models.

- ``adaln-single``: the released architecture, stock diffusers ``PixArtTransformer2DModel``: one shared
  ``t_block`` (SiLU + Linear(h → 6h)) on the timestep embedding, plus a trainable (6, h) ``scale_shift_table``
  per block.
- ``adaln``: DiT-style per-block modulation, ``PixArtAdaLNTransformer2DModel``. Every block owns a SiLU +
  Linear(h → 6h) on the timestep embedding. As in the paper's baseline the condition is time alone: text
  enters through cross-attention, and DiT's class embedding has no counterpart.
- "no re-param" is not an architecture. It is ``adaln-single`` trained from scratch rather than initialised by
  ``pixart.train.reparam``, so build it with ``build_variant("adaln-single", config)``.

Parameter count of ``adaln`` at XL-2 (h = 1152, 28 blocks; ``python -m pixart.train.params``):
  610,856,096 (adaln-single) − 28 tables (28·6·1152 = 193,536) + 28 per-block Linear(1152, 6912)
  (28·7,969,536 = 223,147,008) = 833,809,568, the paper's "833M". If the shared t_block (7,969,536) were
  dropped as well, as in a pure DiT block, the count would be 825,840,032 ≈ 826M, which does not match. So the
  paper's adaLN model kept t_block, and here it stays as a term common to every block:
  block i's modulation = t_block(SiLU(t)) + Linear_i(SiLU(t)). That spans the same functions as per-block-only
  adaLN (W_shared + W_i is an arbitrary per-block linear). Every parameter also gets a gradient, so DDP needs
  no ``find_unused_parameters``.

Key names (the diffusers layout ⇄ the original layout, DiT's naming):
  ``transformer_blocks.N.adaln_modulation.1.*`` ⇄ ``blocks.N.adaLN_modulation.1.*``. The adaLN model has no
  per-block ``scale_shift_table``; every other key is the stock PixArt key (pixart/keymap.py).
"""
import re

import torch
from diffusers import PixArtTransformer2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.normalization import AdaLayerNormSingle
from torch import nn

from pixart.keymap import diffusers_to_original, original_to_diffusers

VARIANTS = ("adaln", "adaln-single")
ADALN_CLASS = "PixArtAdaLNTransformer2DModel"
_ORIGINAL_MODULATION = re.compile(r"^blocks\.(\d+)\.adaLN_modulation\.(.+)$")
_DIFFUSERS_MODULATION = re.compile(r"^transformer_blocks\.(\d+)\.adaln_modulation\.(.+)$")


class VariantError(ValueError):
    """An unknown variant or a config that names one wrongly; the message names the key and the choices."""


class PackedConditioning(AdaLayerNormSingle):
    """adaLN-single's conditioning that also hands the timestep embedding to every block.

    The parent model's forward gives all blocks the same ``timestep`` tensor. We pack [t_block(SiLU(t)), t]
    into it (B × 7h) so that each block can add its own modulation, and the parent's forward (masks, gradient
    checkpointing, final layer) runs unchanged."""

    def forward(self, timestep, added_cond_kwargs=None, batch_size=None, hidden_dtype=None):
        shared, embedded = super().forward(timestep, added_cond_kwargs, batch_size, hidden_dtype)
        return torch.cat([shared, embedded], dim=-1), embedded


class AdaLNBlock(BasicTransformerBlock):
    """A PixArt block whose modulation is computed by its own SiLU + Linear(h → 6h) (DiT's ``adaLN_modulation``).

    The parent block adds ``scale_shift_table[None]`` to the (B, 6, h) modulation. In this model that table is a
    zero, non-trainable, unsaved buffer, so the block's own linear (its bias included) is the whole per-block
    term."""

    def __init__(self, dim: int, *args, **kwargs):
        super().__init__(dim, *args, **kwargs)
        del self.scale_shift_table
        self.register_buffer("scale_shift_table", torch.zeros(6, dim), persistent=False)
        self.adaln_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        # adaLN-Zero (DiT): the block starts from the shared modulation alone
        nn.init.zeros_(self.adaln_modulation[1].weight)
        nn.init.zeros_(self.adaln_modulation[1].bias)

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                timestep=None, cross_attention_kwargs=None, class_labels=None, added_cond_kwargs=None):
        shared, embedded = timestep.split([6 * self.dim, self.dim], dim=-1)
        own = shared + self.adaln_modulation(embedded)
        return super().forward(hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask, own,
                               cross_attention_kwargs, class_labels, added_cond_kwargs)


class PixArtAdaLNTransformer2DModel(PixArtTransformer2DModel):
    """PixArt with DiT-style per-block adaLN (the paper's ``adaLN`` ablation); see the module docstring.

    The forward signature and output are the parent's, so the sampling engine runs it unchanged. The config
    holds ``modulation: "adaln"``, which ``pixart.checkpoints`` reads to pick this class."""

    _no_split_modules = ["AdaLNBlock", "PatchEmbed"]

    # The full signature is spelled out: diffusers reads config keys from the __init__ signature, so a
    # `**kwargs` pass-through would silently drop every parent key on `from_pretrained`.
    @register_to_config
    def __init__(self, num_attention_heads: int = 16, attention_head_dim: int = 72, in_channels: int = 4,
                 out_channels: int | None = 8, num_layers: int = 28, dropout: float = 0.0, norm_num_groups: int = 32,
                 cross_attention_dim: int | None = 1152, attention_bias: bool = True, sample_size: int = 128,
                 patch_size: int = 2, activation_fn: str = "gelu-approximate", num_embeds_ada_norm: int | None = 1000,
                 upcast_attention: bool = False, norm_type: str = "ada_norm_single",
                 norm_elementwise_affine: bool = False, norm_eps: float = 1e-6, interpolation_scale: int | None = None,
                 use_additional_conditions: bool | None = None, caption_channels: int | None = None,
                 attention_type: str | None = "default", modulation: str = "adaln"):
        if modulation != "adaln":
            raise VariantError(f"{type(self).__name__}: config `modulation` is {modulation!r}; this class is "
                               f"'adaln' only (use diffusers' PixArtTransformer2DModel for 'adaln-single')")
        parent_args = {k: v for k, v in locals().items() if k not in ("self", "modulation", "__class__")}
        # the parent builds no blocks (they would be replaced at once); the config keeps the real depth
        super().__init__(**{**parent_args, "num_layers": 0})
        self.register_to_config(num_layers=num_layers)
        self.transformer_blocks = nn.ModuleList(
            AdaLNBlock(self.inner_dim, num_attention_heads, attention_head_dim, dropout=dropout,
                       cross_attention_dim=cross_attention_dim, activation_fn=activation_fn,
                       num_embeds_ada_norm=num_embeds_ada_norm, attention_bias=attention_bias,
                       upcast_attention=upcast_attention, norm_type=norm_type,
                       norm_elementwise_affine=norm_elementwise_affine, norm_eps=norm_eps,
                       attention_type=attention_type)
            for _ in range(num_layers))
        shared = self.adaln_single
        self.adaln_single = PackedConditioning(self.inner_dim, use_additional_conditions=self.use_additional_conditions)
        self.adaln_single.load_state_dict(shared.state_dict())  # keep the parent's initialisation


def variant_of(config: dict) -> str:
    """The variant a diffusers config describes: its `modulation` entry or its `_class_name`."""
    modulation = config.get("modulation")
    if modulation is None:
        return "adaln" if config.get("_class_name") == ADALN_CLASS else "adaln-single"
    if modulation not in VARIANTS:
        raise VariantError(f"config `modulation: {modulation!r}` is not a variant; choose one of {VARIANTS}")
    return modulation


def variant_class(config: dict) -> type:
    return PixArtAdaLNTransformer2DModel if variant_of(config) == "adaln" else PixArtTransformer2DModel


def build_variant(name: str, config: dict) -> PixArtTransformer2DModel:
    """A fresh model of variant `name` from a PixArt config (`modulation`/private keys are ignored).

    For the "no re-param" recipe, use "adaln-single" and train it from this initialisation."""
    if name not in VARIANTS:
        raise VariantError(f"unknown variant {name!r}; choose one of {VARIANTS}")
    fields = {k: v for k, v in config.items() if k != "modulation" and not k.startswith("_")}
    if name == "adaln":
        return PixArtAdaLNTransformer2DModel(**fields)
    return PixArtTransformer2DModel(**fields)


def has_block_modulation(keys) -> bool:
    """True when a state dict (either layout) holds per-block adaLN modulation, i.e. is the adaLN variant."""
    return any(_ORIGINAL_MODULATION.match(k) or _DIFFUSERS_MODULATION.match(k) for k in keys)


def original_to_diffusers_any(state: dict) -> tuple[dict, dict]:
    """`pixart.keymap.original_to_diffusers`, also mapping adaLN's `blocks.N.adaLN_modulation.*` keys."""
    modulation = {k: v for k, v in state.items() if _ORIGINAL_MODULATION.match(k)}
    mapped, buffers = original_to_diffusers({k: v for k, v in state.items() if k not in modulation})
    for key, tensor in modulation.items():
        index, rest = _ORIGINAL_MODULATION.match(key).groups()
        mapped[f"transformer_blocks.{index}.adaln_modulation.{rest}"] = tensor
    return mapped, buffers


def diffusers_to_original_any(state: dict, buffers: dict | None = None) -> dict:
    """Inverse of `original_to_diffusers_any`, to write either variant in the original `.pth` layout."""
    modulation = {k: v for k, v in state.items() if _DIFFUSERS_MODULATION.match(k)}
    out = diffusers_to_original({k: v for k, v in state.items() if k not in modulation}, buffers)
    for key, tensor in modulation.items():
        index, rest = _DIFFUSERS_MODULATION.match(key).groups()
        out[f"blocks.{index}.adaLN_modulation.{rest}"] = tensor
    return out
