"""A model entry of the config (`models: NAME: {...}`) → loaded transformer + VAE.

Keys (defaults in workflows/schemas/config.schema.yaml): checkpoint, resolution, arch, weights,
vae, vae_subfolder, uncond, dtype. The VAE defaults to the checkpoint's own pipeline/hub id; an original
`.pth` names its VAE explicitly (the released one is `PixArt-alpha/PixArt-alpha` subfolder `sd-vae-ft-ema`).
"""
from pathlib import Path

from pixart.checkpoints import CheckpointError, LoadedTransformer, load_transformer, load_vae
from pixart.configschema import read_entry_file

SPEC_DEFAULTS = {"resolution": None, "arch": "xl-2", "weights": "state_dict", "vae": None,
                 "vae_subfolder": "vae", "uncond": "diffusers", "dtype": "float32"}
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# what the DAG adds to a models: entry (workflows/rules/models.smk, common.smk resolved_model)
DAG_KEYS = {"name": {"type": "string"},
            "trained": {"type": "object", "required": ["recipe", "step"],
                        "properties": {"recipe": {"type": "string"}, "step": {"type": ["integer", "string"]}}}}


def read_spec(path: Path) -> dict:
    """A model spec JSON (the DAG writes the config's models: entry with its name), checked against the config
    schema's `models:` entry; only `checkpoint` is required (the text encoder is generate's own argument)."""
    spec = read_entry_file(path, "models", DAG_KEYS, CheckpointError,
                           "--model-spec is a models: entry of the config as JSON (the DAG writes it to "
                           "results/models/NAME.json)", required=["checkpoint"])
    return {**SPEC_DEFAULTS, **spec}


def check_vae_source(spec: dict) -> str:
    """Where the model's VAE comes from: `vae`, else the checkpoint's own pipeline; a weights file has none."""
    spec = {**SPEC_DEFAULTS, **spec}
    if spec["vae"] is not None:
        return spec["vae"]
    if Path(spec["checkpoint"]).suffix in WEIGHT_SUFFIXES:
        raise CheckpointError(
            f"model {spec.get('name', spec['checkpoint'])!r}: a weights file carries no VAE; set `vae:` "
            f"(the released one: vae: PixArt-alpha/PixArt-alpha, vae_subfolder: sd-vae-ft-ema)")
    return spec["checkpoint"]


def load_model(spec: dict) -> tuple[LoadedTransformer, object]:
    spec = {**SPEC_DEFAULTS, **spec}
    vae_source = check_vae_source(spec)
    loaded = load_transformer(spec["checkpoint"], resolution=spec["resolution"], arch=spec["arch"],
                              weights=spec["weights"])
    return loaded, load_vae(vae_source, spec["vae_subfolder"])
