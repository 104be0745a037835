"""DiT → PixArt re-parameterisation: DiT without class is reproduced at t = 500; text is inert at init."""
import copy
import math

import pytest
import torch

from pixart.train.reparam import (REPARAM_T, ReparamError, caption_projection_std, main, pixart_config_from_dit,
                                  reparameterize)
from pixart.train.variants import AdaLNBlock, PixArtAdaLNTransformer2DModel

CAPTION_CHANNELS = 24
TINY_DIT = dict(sample_size=16, patch_size=2, num_layers=2, num_attention_heads=2, attention_head_dim=16,
                in_channels=4, out_channels=8, num_embeds_ada_norm=1000, norm_eps=1e-6)


def tiny_dit(seed=0, tie_embedders=False, original_sinusoid=False):
    """A random DiT. `tie_embedders` copies block 0's timestep/class embedders into every block, as converted
    DiT checkpoints have them; `original_sinusoid` projects t like the original DiT/PixArt code (shift 0)."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    dit = DiTTransformer2DModel(**TINY_DIT)
    with torch.no_grad():
        for p in dit.parameters():  # nothing zero, nothing symmetric
            p.add_(0.05 * torch.randn_like(p))
    for block in dit.transformer_blocks:
        if tie_embedders:
            block.norm1.emb.load_state_dict(dit.transformer_blocks[0].norm1.emb.state_dict())
        if original_sinusoid:
            block.norm1.emb.time_proj.downscale_freq_shift = 0
    return dit.double().eval()


def without_class(dit):
    """DiT whose class embedding is zero: its conditioning is the timestep embedding alone."""
    ref = copy.deepcopy(dit)
    with torch.no_grad():
        for block in ref.transformer_blocks:
            block.norm1.emb.class_embedder.embedding_table.weight.zero_()
    return ref


def dit_modulation(dit, index, t):
    norm = dit.transformer_blocks[index].norm1
    return norm.linear(norm.silu(norm.emb(t, torch.zeros_like(t), hidden_dtype=torch.float64)))


def pixart_modulation(model, index, t):
    """The (B, 6h) modulation block `index` applies, computed the way the model's forward does."""
    block = model.transformer_blocks[index]
    t0, _ = model.adaln_single(t, None, batch_size=len(t), hidden_dtype=torch.float64)
    if isinstance(block, AdaLNBlock):
        shared, embedded = t0.split([6 * model.inner_dim, model.inner_dim], dim=-1)
        t0 = shared + block.adaln_modulation(embedded)
    return (block.scale_shift_table[None] + t0.reshape(len(t), 6, -1)).reshape(len(t), -1)


def inputs(batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 16, 16, generator=gen, dtype=torch.float64)
    text = torch.randn(batch, 7, CAPTION_CHANNELS, generator=gen, dtype=torch.float64)
    mask = torch.ones(batch, 7, dtype=torch.long)
    mask[1, 3:] = 0
    return x, text, mask


def pixart_out(model, x, text, mask, t):
    return model(x, encoder_hidden_states=text, encoder_attention_mask=mask, timestep=t, return_dict=False)[0]


def dit_out(dit, x, t):
    return dit(x, timestep=t, class_labels=torch.zeros_like(t), return_dict=False)[0]


def relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def dit():
    return tiny_dit()


@pytest.fixture(scope="module", params=["adaln-single", "adaln"])
def pair(request, dit):
    config = pixart_config_from_dit(dict(dit.config), CAPTION_CHANNELS, request.param)
    return request.param, reparameterize(dit, config)


def test_every_block_modulation_equals_dit_at_500(dit, pair):
    _, model = pair
    t = torch.tensor([REPARAM_T])
    ref = without_class(dit)
    for index in range(len(dit.transformer_blocks)):
        assert relative(pixart_modulation(model, index, t), dit_modulation(ref, index, t)) < 1e-12


def test_forward_equals_dit_without_class_at_500_for_any_text(dit, pair):
    _, model = pair
    x, text, mask = inputs()
    t = torch.full((2,), REPARAM_T)
    with torch.no_grad():
        expected = dit_out(without_class(dit), x, t)
        ours = pixart_out(model, x, text, mask, t)
        other_text = pixart_out(model, x, torch.randn_like(text), torch.ones_like(mask), t)
    assert ours.shape == expected.shape == (2, 8, 16, 16)
    assert relative(ours, expected) < 1e-10
    assert torch.equal(ours, other_text)  # zero cross-attention output: text has no effect at init


def test_away_from_500_the_forward_differs(dit, pair):
    variant, model = pair
    x, text, mask = inputs()
    t = torch.tensor([250, 900])
    with torch.no_grad():
        gap = relative(pixart_out(model, x, text, mask, t), dit_out(without_class(dit), x, t))
    assert gap > 1e-3  # adaln-single: one shared t_block; both: PixArt's final layer is exact at 500 only


def _last_block_output(model, call):
    captured = []
    handle = model.transformer_blocks[-1].register_forward_hook(lambda m, a, out: captured.append(out))
    with torch.no_grad():
        call()
    handle.remove()
    return captured[0]


def test_adaln_variant_trunk_equals_dit_at_every_t_with_matching_sinusoid():
    dit = tiny_dit(seed=3, tie_embedders=True, original_sinusoid=True)
    ref = without_class(dit)
    models = {v: reparameterize(dit, pixart_config_from_dit(dict(dit.config), CAPTION_CHANNELS, v))
              for v in ("adaln", "adaln-single")}
    x, text, mask = inputs()
    for t in (0, 250, 999):
        steps = torch.full((2,), t)
        expected = _last_block_output(ref, lambda: dit_out(ref, x, steps))
        gaps = {v: relative(_last_block_output(m, lambda: pixart_out(m, x, text, mask, steps)), expected)
                for v, m in models.items()}
        for index in range(len(dit.transformer_blocks)):
            modulation = pixart_modulation(models["adaln"], index, steps)
            assert relative(modulation, dit_modulation(ref, index, steps)) < 1e-12, (t, index)
        assert gaps["adaln"] < 1e-10, t
        assert gaps["adaln-single"] > 1e-3, t


def test_adaln_variant_from_diffusers_dit_is_exact_at_500_only(dit):
    # diffusers' DiT projects t with downscale_freq_shift=1, PixArt with 0: the sinusoids differ away from 500
    model = reparameterize(dit, pixart_config_from_dit(dict(dit.config), CAPTION_CHANNELS, "adaln"))
    ref = without_class(dit)
    steps = torch.tensor([250, REPARAM_T])
    gaps = [relative(pixart_modulation(model, 0, steps)[i], dit_modulation(ref, 0, steps)[i]) for i in (0, 1)]
    assert gaps[0] > 1e-3 and gaps[1] < 1e-12


def test_one_step_on_a_text_loss_makes_text_matter(dit):
    dit = copy.deepcopy(dit).float()
    model = reparameterize(dit, pixart_config_from_dit(dict(dit.config), CAPTION_CHANNELS)).train()
    x, text, mask = (v.float() if v.is_floating_point() else v for v in inputs())
    t = torch.full((2,), REPARAM_T)
    other = torch.randn_like(text)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    target = torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(9))
    loss = ((pixart_out(model, x, text, mask, t) - target) ** 2).mean()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        a = pixart_out(model, x, text, mask, t)
        b = pixart_out(model, x, other, mask, t)
    assert relative(a, b) > 1e-5  # exactly 0 before the step


def test_text_path_is_initialised_like_the_original(pair):
    _, model = pair
    for block in model.transformer_blocks:
        assert not block.attn2.to_out[0].weight.any() and not block.attn2.to_out[0].bias.any()
        assert block.attn2.to_q.weight.abs().sum() > 0 and not block.attn2.to_q.bias.any()
    hidden = model.caption_projection.linear_2.in_features
    for linear, expected in ((model.caption_projection.linear_1, 0.02 * math.sqrt(4096 / CAPTION_CHANNELS)),
                             (model.caption_projection.linear_2, 0.02 * math.sqrt(1152 / hidden))):
        assert abs(linear.weight.std().item() / expected - 1) < 0.15 and not linear.bias.any()


def test_caption_projection_std_is_the_originals_at_xl_width_and_keeps_its_scale_at_others():
    assert caption_projection_std(4096, 4096) == 0.02 and caption_projection_std(1152, 1152) == 0.02
    torch.manual_seed(0)
    captions = torch.randn(4096, 32)  # unit-variance T5 states of a tiny encoder
    xl_scale = 0.02 * math.sqrt(4096)  # std of XL's first projection on unit-variance T5-XXL states
    weight = torch.randn(128, 32) * caption_projection_std(32, 4096)
    assert abs((captions @ weight.T).std().item() / xl_scale - 1) < 0.1


def test_micro_conditions_add_nothing_at_init():
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(5)  # micro-conditions embed to h/3 each: 3 heads × 16
    dit = DiTTransformer2DModel(**{**TINY_DIT, "num_attention_heads": 3}).double().eval()
    config = {**pixart_config_from_dit(dict(dit.config), CAPTION_CHANNELS), "use_additional_conditions": True}
    model = reparameterize(dit, config)
    x, text, mask = inputs()
    t = torch.full((2,), REPARAM_T)
    micro = {"resolution": torch.tensor([[64.0, 64.0], [48.0, 80.0]]), "aspect_ratio": torch.tensor([[1.0], [0.6]])}
    with torch.no_grad():
        ours = model(x, encoder_hidden_states=text, encoder_attention_mask=mask, timestep=t,
                     added_cond_kwargs=micro, return_dict=False)[0]
        assert relative(ours, dit_out(without_class(dit), x, t)) < 1e-10


def test_incompatible_target_is_named(dit):
    config = {**pixart_config_from_dit(dict(dit.config), CAPTION_CHANNELS), "num_layers": 3}
    with pytest.raises(ReparamError, match="num_layers: DiT 2 vs PixArt 3"):
        reparameterize(dit, config)


def test_cli_writes_a_loadable_folder(tmp_path):
    from pixart.checkpoints import load_transformer

    dit = tiny_dit(seed=4).float()
    dit.save_pretrained(tmp_path / "dit" / "transformer")  # a pipeline-style folder
    main(["--dit", str(tmp_path / "dit"), "--out", str(tmp_path / "pixart"), "--variant", "adaln",
          "--caption-channels", str(CAPTION_CHANNELS)])
    loaded = load_transformer(str(tmp_path / "pixart")).transformer
    assert isinstance(loaded, PixArtAdaLNTransformer2DModel)
    x, text, mask = (v.float() if v.is_floating_point() else v for v in inputs())
    t = torch.full((2,), REPARAM_T)
    with torch.no_grad():
        assert relative(pixart_out(loaded, x, text, mask, t), dit_out(without_class(dit), x, t)) < 1e-5


def test_cli_names_a_missing_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as ended:  # one error line (pixart.cli.clean_errors), not a traceback
        main(["--dit", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "pixart.train.reparam: error: " in err and "could not be loaded" in err and "(ReparamError;" in err
