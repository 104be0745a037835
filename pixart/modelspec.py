"""A model entry of the config (`models: NAME: {...}`) → loaded transformer + VAE.

Keys (defaults in workflows/schemas/config.schema.yaml): checkpoint, resolution, arch, weights,
vae, vae_subfolder, uncond, dtype. The VAE defaults to the checkpoint's own pipeline/hub id; an original
`.pth` names its VAE explicitly (the released one is `PixArt-alpha/PixArt-alpha` subfolder `sd-vae-ft-ema`).
"""
import json
from pathlib import Path

from pixart.checkpoints import CheckpointError, LoadedTransformer, load_transformer, load_vae

SPEC_DEFAULTS = {"resolution": None, "arch": "xl-2", "weights": "state_dict", "vae": None,
                 "vae_subfolder": "vae", "uncond": "diffusers", "dtype": "float32"}
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def read_spec(path: Path) -> dict:
    spec = json.loads(Path(path).read_text())
    return {**SPEC_DEFAULTS, **spec}


def load_model(spec: dict) -> tuple[LoadedTransformer, object]:
    spec = {**SPEC_DEFAULTS, **spec}
    loaded = load_transformer(spec["checkpoint"], resolution=spec["resolution"], arch=spec["arch"],
                              weights=spec["weights"])
    vae_source = spec["vae"]
    if vae_source is None:
        if Path(spec["checkpoint"]).suffix in WEIGHT_SUFFIXES:
            raise CheckpointError(
                f"model {spec.get('name', spec['checkpoint'])!r}: a weights file carries no VAE; set `vae:` "
                f"(the released one: vae: PixArt-alpha/PixArt-alpha, vae_subfolder: sd-vae-ft-ema)")
        vae_source = spec["checkpoint"]
    return loaded, load_vae(vae_source, spec["vae_subfolder"])
