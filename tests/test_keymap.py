"""Original ⇄ diffusers key mapping: exact round trip, full XL key sets, and rejection of foreign keys."""
import pytest
import torch
from accelerate import init_empty_weights

from pixart.checkpoints import xl2_config
from pixart.keymap import KeyMappingError, diffusers_to_original, looks_original, original_to_diffusers


def _xl_state(resolution):
    from diffusers import PixArtTransformer2DModel

    with init_empty_weights():
        model = PixArtTransformer2DModel(**xl2_config(resolution))
    return {k: torch.empty(v.shape, device="meta") for k, v in model.state_dict().items()}


@pytest.mark.parametrize("resolution,n_keys", [(256, 437), (512, 437), (1024, 445)])
def test_xl_key_sets_match_the_original_checkpoint(resolution, n_keys):
    original = diffusers_to_original(_xl_state(resolution), buffers={"pos_embed": None, "y_embedder.y_embedding": None})
    assert len(original) == n_keys  # reference/pixart.md §2: 437 keys, +8 for MS
    assert tuple(original["blocks.27.attn.qkv.weight"].shape) == (3456, 1152)
    assert tuple(original["blocks.0.cross_attn.kv_linear.weight"].shape) == (2304, 1152)
    assert tuple(original["final_layer.linear.weight"].shape) == (32, 1152)
    assert tuple(original["t_block.1.weight"].shape) == (6912, 1152)
    assert tuple(original["y_embedder.y_proj.fc1.weight"].shape) == (1152, 4096)
    assert ("csize_embedder.mlp.0.weight" in original) == (resolution == 1024)


def test_round_trip_is_exact(tiny):
    from pixart.tiny import build_transformer

    state = build_transformer(seed=3).state_dict()
    buffers = {"y_embedder.y_embedding": torch.randn(120, 32), "pos_embed": torch.randn(1, 64, 32)}
    original = diffusers_to_original(state, buffers)
    back, kept = original_to_diffusers(original)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert all(torch.equal(kept[k], buffers[k]) for k in buffers)
    again = diffusers_to_original(back, kept)
    assert set(again) == set(original) and all(torch.equal(again[k], original[k]) for k in original)


def test_fused_projections_split_in_order():
    qkv = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(12, 2)
    kv = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(8, 2)
    mapped, _ = original_to_diffusers({"blocks.0.attn.qkv.weight": qkv, "blocks.0.cross_attn.kv_linear.weight": kv})
    assert torch.equal(mapped["transformer_blocks.0.attn1.to_q.weight"], qkv[:4])
    assert torch.equal(mapped["transformer_blocks.0.attn1.to_v.weight"], qkv[8:])
    assert torch.equal(mapped["transformer_blocks.0.attn2.to_k.weight"], kv[:4])  # K first
    assert torch.equal(mapped["transformer_blocks.0.attn2.to_v.weight"], kv[4:])


def test_foreign_keys_are_named():
    with pytest.raises(KeyMappingError, match="model.fc.weight"):
        original_to_diffusers({"blocks.0.attn.qkv.weight": torch.zeros(3, 1), "model.fc.weight": torch.zeros(1)})
    with pytest.raises(KeyMappingError, match="neither"):
        looks_original(["encoder.layer.0.weight"])
