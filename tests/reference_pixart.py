"""An independent forward pass of PixArt-α written from the ORIGINAL checkpoint layout (reference/pixart.md §1).

Used only by tests: it reads `blocks.N.attn.qkv`, `cross_attn.kv_linear`, `t_block`, `y_embedder` … directly,
removes caption padding exactly (per-sample slicing, as the original's BlockDiagonalMask does) and computes
the 2-D sin-cos position embedding with NumPy the way the original code does.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F


def _linear(x, sd, prefix):
    return F.linear(x, sd[prefix + ".weight"], sd[prefix + ".bias"])


def timestep_embedding(t, dim=256, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _mlp2(x, sd, prefix, act):
    return _linear(act(_linear(x, sd, prefix + ".0")), sd, prefix + ".2")


def pos_embed_2d(dim, grid_h, grid_w, lewei_scale, base_size):
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gh = np.arange(grid_h, dtype=np.float32) / (grid_h / base_size) / lewei_scale
    gw = np.arange(grid_w, dtype=np.float32) / (grid_w / base_size) / lewei_scale
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, 1, grid_h, grid_w)
    emb = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    return torch.from_numpy(emb).float()[None]


def forward(sd, x, t, y, mask, *, heads, patch, base_size, lewei_scale=1.0, csize=None, ar=None):
    """x [B,C,H,W] latents, t [B], y [B,L,Cy] caption states, mask [B,L] → model output [B,2C,H,W]."""
    gelu = lambda v: F.gelu(v, approximate="tanh")  # noqa: E731
    B, C, H, W = x.shape
    h, w = H // patch, W // patch
    tokens = F.conv2d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=patch)
    tokens = tokens.flatten(2).transpose(1, 2)
    D = tokens.shape[-1]
    tokens = tokens + pos_embed_2d(D, h, w, lewei_scale, base_size)
    temb = _mlp2(timestep_embedding(t), sd, "t_embedder.mlp", F.silu)
    if csize is not None:
        def size_embed(values, prefix):
            flat = values.reshape(-1)
            emb = _mlp2(timestep_embedding(flat), sd, prefix, F.silu)
            return emb.reshape(values.shape[0], -1)
        temb = temb + torch.cat([size_embed(csize, "csize_embedder.mlp"), size_embed(ar, "ar_embedder.mlp")], 1)
    t0 = _linear(F.silu(temb), sd, "t_block.1")
    ctx = _linear(gelu(_linear(y, sd, "y_embedder.y_proj.fc1")), sd, "y_embedder.y_proj.fc2")
    lengths = mask.sum(1).tolist()
    hd = D // heads
    n_blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    norm = lambda v: F.layer_norm(v, (D,), eps=1e-6)  # noqa: E731
    for i in range(n_blocks):
        p = f"blocks.{i}"
        mod = sd[f"{p}.scale_shift_table"][None] + t0.reshape(B, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        a = norm(tokens) * (1 + scale_msa) + shift_msa
        q, k, v = _linear(a, sd, f"{p}.attn.qkv").reshape(B, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
        tokens = tokens + gate_msa * _linear(att.transpose(1, 2).reshape(B, -1, D), sd, f"{p}.attn.proj")
        cross = []
        for b in range(B):  # each sample attends to its own valid caption tokens only
            qb = _linear(tokens[b], sd, f"{p}.cross_attn.q_linear").reshape(-1, heads, hd).transpose(0, 1)
            kv = _linear(ctx[b, : int(lengths[b])], sd, f"{p}.cross_attn.kv_linear").reshape(-1, 2, heads, hd)
            kb, vb = kv[:, 0].transpose(0, 1), kv[:, 1].transpose(0, 1)
            ob = torch.softmax(qb @ kb.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ vb
            cross.append(_linear(ob.transpose(0, 1).reshape(-1, D), sd, f"{p}.cross_attn.proj"))
        tokens = tokens + torch.stack(cross)
        m = norm(tokens) * (1 + scale_mlp) + shift_mlp
        tokens = tokens + gate_mlp * _linear(gelu(_linear(m, sd, f"{p}.mlp.fc1")), sd, f"{p}.mlp.fc2")
    shift, scale = (sd["final_layer.scale_shift_table"][None] + temb[:, None]).chunk(2, dim=1)
    out = _linear(norm(tokens) * (1 + scale) + shift, sd, "final_layer.linear")
    c_out = out.shape[-1] // (patch * patch)
    out = out.reshape(B, h, w, patch, patch, c_out)
    return torch.einsum("nhwpqc->nchpwq", out).reshape(B, c_out, h * patch, w * patch)
