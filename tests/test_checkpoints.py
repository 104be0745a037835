"""Checkpoint loading: every source kind, parity with an independent original-layout forward, clear refusals."""
import pytest
import torch

from pixart.checkpoints import CheckpointError, load_transformer
from pixart.keymap import diffusers_to_original
from pixart.tiny import build_transformer, null_embedding
from tests import reference_pixart


def _inputs(seed=0, batch=3, length=9, channels=32, size=16):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, size, size, generator=gen)
    y = torch.randn(batch, length, channels, generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 5:] = 0  # ragged captions: padding must not change the result
    mask[2, 2:] = 0
    t = torch.tensor([999, 500, 3])
    return x, y, mask, t


def _relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("micro", [False, True])
def test_converted_original_checkpoint_matches_independent_forward(tmp_path, micro):
    # micro-conditions embed to hidden/3 each, so that variant needs a hidden size divisible by 3 (3 × 16)
    overrides = {"use_additional_conditions": True, "num_attention_heads": 3, "cross_attention_dim": 48} if micro else {}
    heads = 3 if micro else 2
    source = build_transformer(seed=5, **overrides)
    original = diffusers_to_original(source.state_dict(), {"y_embedder.y_embedding": null_embedding(5, 32),
                                                           "pos_embed": source.pos_embed.pos_embed.clone()})
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": original}, path)
    arch = dict(source.config)
    loaded = load_transformer(str(path), arch={k: v for k, v in arch.items() if not k.startswith("_")})
    x, y, mask, t = _inputs()
    kwargs = {}
    added = {"resolution": None, "aspect_ratio": None}
    if micro:
        csize = torch.tensor([[64.0, 64.0], [64.0, 48.0], [32.0, 64.0]])
        ar = csize[:, :1] / csize[:, 1:]
        kwargs = {"csize": csize, "ar": ar}
        added = {"resolution": csize, "aspect_ratio": ar}
    with torch.no_grad():
        ours = loaded.transformer(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t,
                                  added_cond_kwargs=added).sample
        ref = reference_pixart.forward(original, x, t, y, mask, heads=heads, patch=2, base_size=8, **kwargs)
    assert ours.shape == ref.shape == (3, 8, 16, 16)
    assert _relative(ours, ref) <= 1e-5
    assert torch.equal(loaded.null_embedding, original["y_embedder.y_embedding"])


def test_all_sources_load_the_same_weights(tiny, tmp_path):
    from safetensors.torch import save_file

    from_folder = load_transformer(str(tiny["pipeline"]))
    from_pth = load_transformer(str(tiny["original"]), arch=str(tiny["arch"]))
    from_ema = load_transformer(str(tiny["original"]), arch=str(tiny["arch"]), weights="state_dict_ema")
    original = torch.load(tiny["original"], weights_only=True)["state_dict"]
    save_file(original, str(tmp_path / "orig.safetensors"))
    save_file(from_folder.transformer.state_dict(), str(tmp_path / "diff.safetensors"))
    from_st_orig = load_transformer(str(tmp_path / "orig.safetensors"), arch=str(tiny["arch"]))
    from_st_diff = load_transformer(str(tmp_path / "diff.safetensors"), arch=str(tiny["arch"]))
    prints = {m.fingerprint for m in (from_folder, from_pth, from_ema, from_st_orig, from_st_diff)}
    assert len(prints) == 1
    assert from_folder.null_embedding is None and from_st_diff.null_embedding is None
    assert from_pth.null_embedding.shape == (120, 32)


def test_fingerprint_changes_with_any_weight(tiny, tmp_path):
    state = torch.load(tiny["original"], weights_only=True)
    state["state_dict"]["blocks.1.mlp.fc2.bias"][0] += 1e-3
    torch.save(state, tmp_path / "changed.pth")
    a = load_transformer(str(tiny["original"]), arch=str(tiny["arch"])).fingerprint
    b = load_transformer(str(tmp_path / "changed.pth"), arch=str(tiny["arch"])).fingerprint
    assert a != b


class Payload:  # an object that can only be unpickled by running code
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"refused, the file needs pickled code .*Unsupported global: GLOBAL print was not an allowed global by default\)"):
        load_transformer(str(path), arch={})
    # random bytes fail the same unpickler, but re-saving "in a trusted environment" is no fix for a damaged file
    (tmp_path / "noise.pth").write_bytes(bytes(range(256)) * 16)
    with pytest.raises(CheckpointError, match="noise.pth: cannot be read .*damaged: download it again"):
        load_transformer(str(tmp_path / "noise.pth"), arch={})


def test_bad_checkpoints_are_named(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_transformer(str(tmp_path / "missing.pth"), resolution=256)
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a PixArt state dict"):
        load_transformer(str(tmp_path / "other.pth"), resolution=256)
    with pytest.raises(CheckpointError, match="no 'state_dict_ema' entry"):
        torch.save({"state_dict": {"a": torch.zeros(1)}, "step": 3}, tmp_path / "noema.pth")
        load_transformer(str(tmp_path / "noema.pth"), resolution=256, weights="state_dict_ema")
    state = torch.load(tiny["original"], weights_only=True)["state_dict"]
    del state["blocks.1.mlp.fc1.weight"]
    torch.save({"state_dict": state}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: \['transformer_blocks.1.ff.net.0.proj.weight'\]"):
        load_transformer(str(tmp_path / "partial.pth"), arch=str(tiny["arch"]))
    with pytest.raises(CheckpointError, match="no 384px model"):
        load_transformer(str(tiny["original"]), resolution=384)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_download_is_named(tmp_path, suffix):
    from safetensors.torch import save_file

    whole = tmp_path / f"whole{suffix}"
    state = {"pos_embed": torch.zeros(1, 64, 32), "x_embedder.proj.weight": torch.zeros(32, 4, 2, 2)}
    torch.save({"state_dict": state}, whole) if suffix == ".pth" else save_file(state, whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"cut{suffix}: cannot be read .*truncated or damaged: download it again"):
        load_transformer(str(cut), resolution=256)


def test_resolution_mismatch_is_explained(tiny):
    # the tiny checkpoint's pos_embed has 64 tokens (a 128px grid in XL terms); claiming 256 px is refused
    with pytest.raises(CheckpointError, match="pos_embed has 64 tokens"):
        load_transformer(str(tiny["original"]), resolution=256)


def test_unreachable_hub_id_says_how_to_supply_it():
    with pytest.raises(CheckpointError, match="hf download PixArt-alpha/PixArt-XL-2-512x512"):
        load_transformer("PixArt-alpha/PixArt-XL-2-512x512")


def _random_adaln(seed=7):
    from pixart.tiny import TINY_TRANSFORMER
    from pixart.train.variants import build_variant

    torch.manual_seed(seed)
    model = build_variant("adaln", TINY_TRANSFORMER)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


def test_adaln_variant_loads_from_folder_pth_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    from pixart.checkpoints import fingerprint_state
    from pixart.tiny import TINY_TRANSFORMER
    from pixart.train.variants import PixArtAdaLNTransformer2DModel, diffusers_to_original_any

    model = _random_adaln()
    state = model.state_dict()
    model.save_pretrained(tmp_path / "pipeline" / "transformer")
    original = diffusers_to_original_any(state, {"y_embedder.y_embedding": null_embedding(7, 32),
                                                 "pos_embed": model.pos_embed.pos_embed.clone()})
    assert "blocks.1.adaLN_modulation.1.weight" in original and "t_block.1.weight" in original
    torch.save({"state_dict": original}, tmp_path / "adaln.pth")
    save_file(original, str(tmp_path / "original.safetensors"))
    save_file(state, str(tmp_path / "diffusers.safetensors"))
    arch = dict(TINY_TRANSFORMER)  # a stock config: the per-block modulation keys say "adaln"
    loaded = [load_transformer(str(tmp_path / "pipeline"))] + [
        load_transformer(str(tmp_path / name), arch=arch)
        for name in ("adaln.pth", "original.safetensors", "diffusers.safetensors")]
    x, y, mask, t = _inputs()
    with torch.no_grad():
        expected = model(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t).sample
        for item in loaded:
            assert isinstance(item.transformer, PixArtAdaLNTransformer2DModel), item.source
            assert item.fingerprint == fingerprint_state(state)
            out = item.transformer(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t).sample
            assert torch.equal(out, expected), item.source


def test_adaln_checkpoint_missing_a_block_modulation_is_named(tmp_path):
    from pixart.tiny import TINY_TRANSFORMER
    from pixart.train.variants import diffusers_to_original_any

    original = diffusers_to_original_any(_random_adaln().state_dict())
    del original["blocks.1.adaLN_modulation.1.bias"]
    torch.save({"state_dict": original}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: \['transformer_blocks.1.adaln_modulation.1.bias'\]"):
        load_transformer(str(tmp_path / "partial.pth"), arch=dict(TINY_TRANSFORMER))


def _arch(model):
    return {k: v for k, v in dict(model.config).items() if not k.startswith("_")}


def _original(model, null_seed=0, **buffers):
    return diffusers_to_original(model.state_dict(), {"y_embedder.y_embedding": null_embedding(null_seed, 32),
                                                      "pos_embed": model.pos_embed.pos_embed.clone(), **buffers})


def test_ema_weights_come_from_transformer_ema_or_are_refused(tmp_path):
    """`weights: state_dict_ema` loads a step folder's transformer_ema/ (as pixart/train/saving.py writes it), and is
    refused where the source holds one set of weights: it used to load them under an EMA provenance."""
    from safetensors.torch import save_file

    from pixart.checkpoints import fingerprint_state

    live, ema = build_transformer(seed=1), build_transformer(seed=2)
    step = tmp_path / "step_0000100"
    live.save_pretrained(step / "transformer")
    ema.save_pretrained(step / "transformer_ema")
    loaded = load_transformer(str(step), weights="state_dict_ema")
    assert loaded.fingerprint == fingerprint_state(ema.state_dict()) != fingerprint_state(live.state_dict())
    assert load_transformer(str(step)).fingerprint == fingerprint_state(live.state_dict())
    with pytest.raises(CheckpointError, match=r"subfolder transformer_ema/, which it does not have .*; use "
                                              r"`weights: state_dict`"):
        load_transformer(str(step / "transformer"), weights="state_dict_ema")
    original = {k: v.contiguous() for k, v in _original(live).items()}
    torch.save(original, tmp_path / "bare.pth")
    save_file(original, str(tmp_path / "w.safetensors"))
    for name in ("bare.pth", "w.safetensors"):
        with pytest.raises(CheckpointError, match=rf"{name}: the file holds one set of weights .*use `weights: "
                                                  rf"state_dict`"):
            load_transformer(str(tmp_path / name), arch=_arch(live), weights="state_dict_ema")
        assert load_transformer(str(tmp_path / name), arch=_arch(live)).fingerprint == \
            fingerprint_state(live.state_dict())


def test_series_reads_checkpoints_with_the_loaders_weights_rule(tmp_path):
    from safetensors.torch import save_file

    from reports.series import probe

    model = build_transformer(seed=1)
    torch.save(_original(model), tmp_path / "step_1.pth")
    save_file({k: v.contiguous() for k, v in _original(model).items()}, str(tmp_path / "step_2.safetensors"))
    model.save_pretrained(tmp_path / "step_3" / "transformer")
    for name in ("step_1.pth", "step_2.safetensors", "step_3"):
        assert probe(tmp_path / name) == ("ok", ""), name
        status, reason = probe(tmp_path / name, "state_dict_ema")
        assert status == "unreadable" and "use `weights: state_dict`" in reason, (name, reason)
    build_transformer(seed=2).save_pretrained(tmp_path / "step_3" / "transformer_ema")
    assert probe(tmp_path / "step_3", "state_dict_ema") == ("ok", "")


def test_null_caption_is_part_of_the_model_under_original_uncond(tmp_path):
    """Two original checkpoints that differ only in y_embedder.y_embedding run differently with `uncond: original`,
    so their cell fingerprints differ; the weights fingerprint (shared with the folder form, which discards the null
    caption) and the `uncond: diffusers` one, which never reads it, do not."""
    model = build_transformer(seed=0)
    for name, seed in (("a.pth", 0), ("b.pth", 7)):
        torch.save({"state_dict": _original(model, null_seed=seed)}, tmp_path / name)
    a, b = (load_transformer(str(tmp_path / name), arch=_arch(model)) for name in ("a.pth", "b.pth"))
    assert not torch.equal(a.null_embedding, b.null_embedding)
    assert a.fingerprint_for("original") != b.fingerprint_for("original")
    assert a.fingerprint == b.fingerprint == a.fingerprint_for("diffusers") == b.fingerprint_for("diffusers")
    model.save_pretrained(tmp_path / "folder")
    folder = load_transformer(str(tmp_path / "folder"))
    assert folder.fingerprint == a.fingerprint and folder.fingerprint_for("original") == folder.fingerprint


def test_pos_embed_of_another_interpolation_scale_is_refused(tmp_path):
    """Same token count, other values: a PixArt-Σ-256-style pos_embed (scale 0.5) under α's config (scale 1)."""
    alpha, sigma = build_transformer(seed=0), build_transformer(seed=0, interpolation_scale=0.5)
    torch.save({"state_dict": _original(sigma)}, tmp_path / "sigma_like.pth")
    with pytest.raises(CheckpointError, match=r"sigma_like.pth: interpolation-scale mismatch: the checkpoint's "
                                              r"pos_embed was made with interpolation_scale 0.5, the config builds "
                                              r"interpolation_scale 1 .*Fix `arch:`.*`interpolation_scale` is 0.5"):
        load_transformer(str(tmp_path / "sigma_like.pth"), arch=_arch(alpha))
    assert load_transformer(str(tmp_path / "sigma_like.pth"), arch=_arch(sigma)).transformer.pos_embed \
        .interpolation_scale == 0.5
    # a half-precision copy of the right pos_embed still loads (its rounding is within the tolerance)
    half = {k: v.half() if k == "pos_embed" else v for k, v in _original(alpha).items()}
    torch.save({"state_dict": half}, tmp_path / "half_pos.pth")
    load_transformer(str(tmp_path / "half_pos.pth"), arch=_arch(alpha))


def test_null_caption_length_is_checked_against_alpha(tmp_path):
    """`arch: xl-2` is PixArt-α (120-token captions): a 300-row null caption (PixArt-Σ) is refused before the
    model is built. A tiny state dict is enough: the check runs first."""
    model = build_transformer(seed=0)
    state = _original(model, pos_embed=torch.zeros(1, 256, 32),  # 256 tokens: what xl-2 at 256 px expects
                      **{"y_embedder.y_embedding": torch.randn(300, 32)})
    torch.save({"state_dict": state}, tmp_path / "sigma_null.pth")
    with pytest.raises(CheckpointError, match=r"sigma_null.pth: y_embedder.y_embedding \(the null caption\) has 300 "
                                              r"rows, but `arch: xl-2` is PixArt-α, whose captions are 120"):
        load_transformer(str(tmp_path / "sigma_null.pth"), resolution=256)


def test_transformer_only_folder_is_not_loaded_as_a_vae(tmp_path):
    """A folder without vae/ falls back to its own config.json only when that is a VAE's; a transformer's config used
    to come back as an AutoencoderKL with meta weights that failed much later ("Cannot copy out of meta tensor")."""
    from pixart.checkpoints import load_vae
    from pixart.modelspec import load_model
    from pixart.tiny import build_vae

    folder = tmp_path / "transformer_only"
    build_transformer(seed=0).save_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"transformer_only has no vae/ subfolder; set vae: to a VAE folder"):
        load_model({"checkpoint": str(folder)})
    build_vae(0).save_pretrained(tmp_path / "vae_only")  # a VAE folder itself still stands in for vae/
    vae = load_vae(str(tmp_path / "vae_only"))
    assert {p.device.type for p in vae.parameters()} == {"cpu"}
    assert load_transformer(str(folder)).transformer.config.sample_size == 16  # the transformer itself loads
