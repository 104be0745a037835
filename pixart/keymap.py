"""Original PixArt-α state-dict keys ⇄ diffusers `PixArtTransformer2DModel` keys (reference/pixart.md §5).

Both directions are exact inverses on the tensors they map: fused `attn.qkv` is split into to_q/to_k/to_v
(three equal chunks along the output dim) and `cross_attn.kv_linear` into to_k/to_v (K first); the reverse
concatenates them. Buffers that diffusers recomputes or drops (`pos_embed`, `y_embedder.y_embedding`) are
returned apart so the caller can keep the null embedding for the `original` unconditional convention.
"""
import re

import torch

# Keys that diffusers does not hold as weights: pos_embed is recomputed, y_embedding is discarded.
ORIGINAL_BUFFERS = ("pos_embed", "y_embedder.y_embedding")

_RENAMES = {  # original prefix -> diffusers prefix, for one-to-one tensors
    "x_embedder.proj.": "pos_embed.proj.",
    "y_embedder.y_proj.fc1.": "caption_projection.linear_1.",
    "y_embedder.y_proj.fc2.": "caption_projection.linear_2.",
    "t_embedder.mlp.0.": "adaln_single.emb.timestep_embedder.linear_1.",
    "t_embedder.mlp.2.": "adaln_single.emb.timestep_embedder.linear_2.",
    "csize_embedder.mlp.0.": "adaln_single.emb.resolution_embedder.linear_1.",
    "csize_embedder.mlp.2.": "adaln_single.emb.resolution_embedder.linear_2.",
    "ar_embedder.mlp.0.": "adaln_single.emb.aspect_ratio_embedder.linear_1.",
    "ar_embedder.mlp.2.": "adaln_single.emb.aspect_ratio_embedder.linear_2.",
    "t_block.1.": "adaln_single.linear.",
    "final_layer.linear.": "proj_out.",
    "final_layer.scale_shift_table": "scale_shift_table",
}
_BLOCK_RENAMES = {  # within blocks.N / transformer_blocks.N
    "scale_shift_table": "scale_shift_table",
    "attn.proj.": "attn1.to_out.0.",
    "cross_attn.q_linear.": "attn2.to_q.",
    "cross_attn.proj.": "attn2.to_out.0.",
    "mlp.fc1.": "ff.net.0.proj.",
    "mlp.fc2.": "ff.net.2.",
}
_FUSED = {  # original fused projection -> diffusers pieces, in concatenation order
    "attn.qkv.": ("attn1.to_q.", "attn1.to_k.", "attn1.to_v."),
    "cross_attn.kv_linear.": ("attn2.to_k.", "attn2.to_v."),
}
_ORIGINAL_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_DIFFUSERS_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")


class KeyMappingError(ValueError):
    """A state dict has keys that belong to neither layout; the message lists them."""


def _rename(key: str, table: dict) -> str | None:
    for src, dst in table.items():
        if key == src or (src.endswith(".") and key.startswith(src)):
            return dst + key[len(src):]
    return None


def original_to_diffusers(state: dict) -> tuple[dict, dict]:
    """Map an original-layout state dict; returns (diffusers weights, the original-only buffers)."""
    out, buffers, unknown = {}, {}, []
    for key, tensor in state.items():
        if key in ORIGINAL_BUFFERS:
            buffers[key] = tensor
            continue
        block = _ORIGINAL_BLOCK.match(key)
        if block is None:
            new = _rename(key, _RENAMES)
            if new is None:
                unknown.append(key)
            else:
                out[new] = tensor
            continue
        index, rest = block.groups()
        prefix = f"transformer_blocks.{index}."
        fused = next(((src, dsts) for src, dsts in _FUSED.items() if rest.startswith(src)), None)
        if fused is not None:
            src, dsts = fused
            for dst, piece in zip(dsts, torch.chunk(tensor, len(dsts), dim=0)):
                out[prefix + dst + rest[len(src):]] = piece.clone()
            continue
        new = _rename(rest, _BLOCK_RENAMES)
        if new is None:
            unknown.append(key)
        else:
            out[prefix + new] = tensor
    if unknown:
        raise KeyMappingError(f"not original PixArt keys: {sorted(unknown)[:20]}{' …' if len(unknown) > 20 else ''}")
    return out, buffers


def diffusers_to_original(state: dict, buffers: dict | None = None) -> dict:
    """Inverse of `original_to_diffusers`; `buffers` (pos_embed, y_embedding) are copied through."""
    out, unknown = dict(buffers or {}), []
    pieces: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    inverse_top = {v: k for k, v in _RENAMES.items()}
    inverse_block = {v: k for k, v in _BLOCK_RENAMES.items()}
    for key, tensor in state.items():
        block = _DIFFUSERS_BLOCK.match(key)
        if block is None:
            new = _rename(key, inverse_top)
            if new is None:
                unknown.append(key)
            else:
                out[new] = tensor
            continue
        index, rest = block.groups()
        fused = next(((src, dst) for src, dsts in _FUSED.items() for dst in dsts if rest.startswith(dst)), None)
        if fused is not None:
            src, dst = fused
            suffix = rest[len(dst):]
            pieces.setdefault((index, src, suffix), {})[dst] = tensor
            continue
        new = _rename(rest, inverse_block)
        if new is None:
            unknown.append(key)
        else:
            out[f"blocks.{index}.{new}"] = tensor
    for (index, src, suffix), parts in pieces.items():
        order = _FUSED[src]
        missing = [p for p in order if p not in parts]
        if missing:
            unknown.extend(f"transformer_blocks.{index}.{p}{suffix} (missing)" for p in missing)
            continue
        out[f"blocks.{index}.{src}{suffix}"] = torch.cat([parts[p] for p in order], dim=0)
    if unknown:
        raise KeyMappingError(f"not diffusers PixArt keys: {sorted(unknown)[:20]}{' …' if len(unknown) > 20 else ''}")
    return out


def looks_original(keys) -> bool:
    """True for the original layout (blocks.N / x_embedder), False for diffusers (transformer_blocks.N)."""
    keys = list(keys)
    if any(k.startswith("blocks.") or k.startswith("x_embedder.") for k in keys):
        return True
    if any(k.startswith("transformer_blocks.") or k.startswith("pos_embed.proj.") for k in keys):
        return False
    raise KeyMappingError(
        f"neither an original nor a diffusers PixArt state dict (first keys: {keys[:8]})"
    )
