"""The adaLN / adaLN-single ablation variants: parameter counts, per-block modulation, save/load, the engine."""
import json

import pytest
import torch

from pixart.tiny import TINY_TRANSFORMER, build_transformer
from pixart.train.params import main as params_main
from pixart.train.params import variant_counts
from pixart.train.variants import (VARIANTS, AdaLNBlock, PixArtAdaLNTransformer2DModel, VariantError,
                                   build_variant, variant_of)

XL2_ADALN_SINGLE = 610_856_096  # original code, PixArt-XL-2 (256 / 512)
XL2_MS_ADALN_SINGLE = 611_349_152  # original code, PixArt-XL-2-1024-MS (micro-conditions)
PAPER_ADALN = 833_000_000  # the paper's "833M", given in whole millions


def _inputs(seed=0, batch=2):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 16, 16, generator=gen)
    y = torch.randn(batch, 6, 32, generator=gen)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[1, 2:] = 0
    return x, y, mask, torch.tensor([999, 3])[:batch]


def _out(model, x, y, mask, t):
    return model(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t, return_dict=False)[0]


def _adaln_from(stock):
    """An adaLN model holding `stock`'s weights, each block's table moved into its own linear's bias."""
    model = build_variant("adaln", dict(stock.config))
    state = {k: v for k, v in stock.state_dict().items()
             if not (k.startswith("transformer_blocks.") and k.endswith(".scale_shift_table"))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("adaln_modulation" in k for k in missing)
    with torch.no_grad():
        for block, source in zip(model.transformer_blocks, stock.transformer_blocks):
            block.adaln_modulation[1].bias.copy_(source.scale_shift_table.reshape(-1))
    return model.eval()


def test_xl2_counts_match_the_original_code_and_the_paper():
    for resolution in (256, 512):
        counts = variant_counts("xl-2", resolution)
        assert counts["adaln-single"]["trainable"] == XL2_ADALN_SINGLE
        # 611M − 28 tables + 28 Linear(1152, 6912) = 833,809,568: the paper's 833M within its whole-million figure
        assert counts["adaln"]["trainable"] == 833_809_568
        assert abs(counts["adaln"]["trainable"] - PAPER_ADALN) < 1_000_000
    assert variant_counts("xl-2", 1024)["adaln-single"]["trainable"] == XL2_MS_ADALN_SINGLE


def test_params_cli_writes_json(tmp_path, capsys):
    params_main(["--resolution", "256", "--json", str(tmp_path / "counts.json")])
    report = json.loads((tmp_path / "counts.json").read_text())
    assert report["variants"]["adaln-single"] == {"trainable": XL2_ADALN_SINGLE, "paper": 611_000_000,
                                                  "original_code": XL2_ADALN_SINGLE}
    assert report["variants"]["adaln"]["paper"] == PAPER_ADALN
    assert "833M" in capsys.readouterr().out


def test_adaln_with_tables_as_biases_equals_adaln_single():
    # block i's own bias plays the role of table_i: with zero own weights, the two variants compute the same
    stock = build_transformer(seed=1)
    model = _adaln_from(stock)
    x, y, mask, t = _inputs()
    with torch.no_grad():
        assert torch.allclose(_out(model, x, y, mask, t), _out(stock, x, y, mask, t), atol=1e-6, rtol=0)


def test_each_block_uses_its_own_modulation():
    model = _adaln_from(build_transformer(seed=2))
    x, y, mask, t = _inputs()
    with torch.no_grad():
        before = _out(model, x, y, mask, t)
        model.transformer_blocks[1].adaln_modulation[1].weight.normal_(0, 0.1)
        after = _out(model, x, y, mask, t)
    assert not torch.allclose(before, after, atol=1e-4)
    table = model.transformer_blocks[0].scale_shift_table
    assert not table.any() and "transformer_blocks.0.scale_shift_table" not in model.state_dict()


def test_every_parameter_trains_with_gradient_checkpointing():
    model = _adaln_from(build_transformer(seed=3)).train()
    model.enable_gradient_checkpointing()
    x, y, mask, t = _inputs()
    _out(model, x, y, mask, t).square().mean().backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert not no_grad  # DDP needs no find_unused_parameters


def test_save_and_load_keeps_class_config_and_output(tmp_path):
    model = build_variant("adaln", TINY_TRANSFORMER)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "PixArtAdaLNTransformer2DModel" and config["modulation"] == "adaln"
    loaded = PixArtAdaLNTransformer2DModel.from_pretrained(tmp_path).eval()
    x, y, mask, t = _inputs()
    with torch.no_grad():
        assert torch.equal(_out(loaded, x, y, mask, t), _out(model.eval(), x, y, mask, t))
    assert isinstance(loaded.transformer_blocks[0], AdaLNBlock)


def test_engine_samples_with_the_adaln_variant_unchanged():
    from pixart.embeddings import EmbeddingTable
    from pixart.engine import Engine
    from pixart.samplers import parse_sampler
    from pixart.tiny import build_vae

    gen = torch.Generator().manual_seed(0)
    table = EmbeddingTable(prompts=["a", "b"], states=torch.randn(7, 32, generator=gen),
                           offsets=torch.tensor([0, 3, 7]), negative=torch.randn(2, 32, generator=gen))
    stock = build_transformer(seed=1).eval()

    def denoise(model):
        return Engine(model, build_vae(0), table).denoise(["a", "b"], [1, 2], 64, 64, parse_sampler("ddim:2"), cfg=4.5)

    # the adaLN model that computes what `stock` computes gives the stock model's samples through the engine
    expected, latents = denoise(stock), denoise(_adaln_from(stock).eval())
    assert latents.shape == (2, 4, 16, 16)
    torch.testing.assert_close(latents, expected, rtol=1e-5, atol=1e-5)


def test_the_adaln_single_variant_is_stock_pixart():  # the no-reparam run (recipe: tests/test_demo.py)
    from diffusers import PixArtTransformer2DModel

    assert VARIANTS == ("adaln", "adaln-single")
    assert type(build_variant("adaln-single", TINY_TRANSFORMER)) is PixArtTransformer2DModel


def test_bad_names_are_explained():
    with pytest.raises(VariantError, match="unknown variant 'adaln-zero'"):
        build_variant("adaln-zero", TINY_TRANSFORMER)
    with pytest.raises(VariantError, match="`modulation: 'film'` is not a variant"):
        variant_of({"modulation": "film"})
    assert variant_of({"_class_name": "PixArtAdaLNTransformer2DModel"}) == "adaln"
    assert variant_of({"_class_name": "PixArtTransformer2DModel"}) == "adaln-single"
