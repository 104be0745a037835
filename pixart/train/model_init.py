"""The model a recipe stage trains, with its starting weights and the fixed null caption.

- class stage: a diffusers `DiTTransformer2DModel` (class-conditional, learned sigma), from scratch or a checkpoint;
- text stage: a PixArt variant from scratch ("no re-param"), re-parameterised from a stage-1 DiT, or continued
  from a PixArt checkpoint (stage 3 from stage 2). The null caption is the original's fixed random buffer
  (randn/√C over 120 tokens), carried over from the checkpoint it starts from when that has one.
"""
import warnings
from pathlib import Path

import torch

from pixart.checkpoints import load_transformer, transformer_config
from pixart.train.reparam import load_dit, reparameterize
from pixart.train.variants import build_variant

MAX_TOKENS = 120
# DiT-XL/2 (Peebles & Xie): the stage-1 model PixArt-XL-2 is re-parameterised from; 1000 ImageNet classes.
DIT_XL2 = dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
               patch_size=2, num_embeds_ada_norm=1000, norm_type="ada_norm_zero", activation_fn="gelu-approximate",
               norm_elementwise_affine=False, norm_eps=1e-6)


def model_config(recipe: dict) -> dict:
    """The diffusers config of the trained model (`model:` a dict, a config.json path, or 'xl-2')."""
    spec = recipe["model"]
    if recipe["stage"] == "class":
        if spec == "xl-2":
            return {**DIT_XL2, "sample_size": recipe["resolution"] // 8}
        return transformer_config(spec, None)
    return transformer_config(spec or "xl-2", recipe["resolution"])


def fresh_null_embedding(seed: int, channels: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(MAX_TOKENS, channels, generator=gen) / channels**0.5


def _checkpoint_files(source: str) -> tuple[str, str | None]:
    """(loadable path, subfolder) for a training step folder, a diffusers folder or a weights file."""
    path = Path(source)
    if (path / "model.pth").is_file():
        return str(path / "model.pth"), None
    if (path / "transformer").is_dir():
        return str(path), "transformer"
    return str(path), None


def build_model(recipe: dict) -> tuple[torch.nn.Module, torch.Tensor | None]:
    """(model in train mode, null caption or None for the class stage); seeded by the recipe."""
    from diffusers import DiTTransformer2DModel

    config = model_config(recipe)
    init = recipe["init"]
    torch.manual_seed(recipe["seed"])
    if recipe["stage"] == "class":
        if init["kind"] == "checkpoint":
            return load_dit(init["source"]).train(), None
        return DiTTransformer2DModel(**config).train(), None
    null = fresh_null_embedding(recipe["seed"], config["caption_channels"])
    if init["kind"] == "scratch":
        return build_variant(recipe["variant"], config).train(), null
    if init["kind"] == "dit":
        dit = load_dit(init["source"])
        return reparameterize(dit, {**config, "modulation": recipe["variant"]}, seed=recipe["seed"]).train(), null
    path, subfolder = _checkpoint_files(init["source"])
    arch = config if path.endswith((".pth", ".safetensors")) else "xl-2"
    loaded = load_transformer(path, arch=arch, resolution=recipe["resolution"], subfolder=subfolder)
    model = build_variant(recipe["variant"], config)
    # pos_embed is a function of the grid size, so a later stage may change resolution (stage 3 at 512/1024)
    state = {k: v for k, v in loaded.transformer.state_dict().items() if k != "pos_embed.pos_embed"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "pos_embed.pos_embed"]
    if missing or unexpected:
        raise ValueError(f"init checkpoint {init['source']} does not fit the recipe's {recipe['variant']} model: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    if loaded.null_embedding is None:  # diffusers folders do not hold it
        warnings.warn(f"init checkpoint {init['source']} holds no null caption (y_embedding): caption drop uses a "
                      f"fresh random one the model never saw; start from the original .pth to keep the trained one")
        return model.train(), null
    return model.train(), loaded.null_embedding
