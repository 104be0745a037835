"""Load a PixArt-α transformer (plus VAE and text encoder) from any supported source, with a fingerprint.

Sources (reference/pixart.md §2, §5):
- a HF hub id or a local diffusers pipeline folder (`transformer/` subfolder) or transformer folder;
- an original PixArt `.pth` (`state_dict`, or `state_dict_ema` when asked) for 256, 512 or 1024-MS;
- a `.safetensors` file in either key layout.
Each of these may also hold the adaLN ablation variant (pixart/train/variants.py): a folder whose config says
`modulation: adaln`, or a state dict with per-block `adaLN_modulation` keys, loads into that class.
Original checkpoints keep their `y_embedder.y_embedding` buffer aside for the `original` null convention.
"""
import hashlib
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pixart.keymap import KeyMappingError, looks_original

# Released PixArt-α resolutions → diffusers config fields (reference/pixart.md §1, §5).
XL2 = dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
           patch_size=2, caption_channels=4096, cross_attention_dim=1152, norm_type="ada_norm_single",
           norm_elementwise_affine=False, norm_eps=1e-6, activation_fn="gelu-approximate",
           num_embeds_ada_norm=1000, attention_bias=True)
RESOLUTIONS = {  # image size -> (sample_size, interpolation_scale, micro-conditions)
    256: (32, 1, False),
    512: (64, 1, False),
    1024: (128, 2, True),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(ValueError):
    """A checkpoint could not be loaded; the message names the file and the fix."""


@dataclass
class LoadedTransformer:
    transformer: torch.nn.Module
    fingerprint: str
    null_embedding: torch.Tensor | None = None  # original y_embedding buffer [120, caption_channels]
    source: dict = field(default_factory=dict)


def is_hub_id(source: str) -> bool:
    return not Path(source).exists() and bool(HUB_ID.match(source))


def xl2_config(resolution: int) -> dict:
    if resolution not in RESOLUTIONS:
        raise CheckpointError(
            f"PixArt-α XL-2 has no {resolution}px model; released resolutions: {sorted(RESOLUTIONS)}"
        )
    sample_size, interpolation, micro = RESOLUTIONS[resolution]
    return {**XL2, "sample_size": sample_size, "interpolation_scale": interpolation,
            "use_additional_conditions": micro}


def transformer_config(arch: str | dict, resolution: int | None) -> dict:
    """`arch` is 'xl-2' (needs a released resolution), a config dict, or a path to a config.json."""
    if isinstance(arch, dict):
        return dict(arch)
    if arch == "xl-2":
        if resolution is None:
            raise CheckpointError("an original/safetensors XL-2 checkpoint needs `resolution` (256, 512 or 1024)")
        return xl2_config(resolution)
    path = Path(arch)
    if not path.is_file():
        raise CheckpointError(f"arch {arch!r} is neither 'xl-2' nor an existing config.json")
    config = json.loads(path.read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}


def fingerprint_state(state: dict) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) in key order: the model's content identity."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().contiguous().cpu()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def read_pth(path: Path, weights: str = "state_dict") -> dict:
    """Tensors of a `.pth`, loaded with weights_only=True; pickled code is refused."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused, the file needs pickled code to load (weights_only=True failed: "
            f"{str(err).splitlines()[0]}). Only plain tensor checkpoints are accepted; re-save the weights "
            f"as a state dict or as safetensors in a trusted environment."
        ) from None
    except (OSError, RuntimeError, EOFError) as err:  # a download cut short, a disk error
        raise _unreadable(path, err) from None
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: not a state dict (got {type(blob).__name__})")
    if all(isinstance(v, torch.Tensor) for v in blob.values()):
        return blob  # a bare state dict
    if weights not in blob:
        raise CheckpointError(
            f"{path}: no '{weights}' entry; top-level keys are {sorted(blob)}. "
            f"Set `weights:` to one of the state-dict entries (state_dict or state_dict_ema)."
        )
    return blob[weights]


def read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise _unreadable(path, err) from None


def _unreadable(path: Path, err: Exception) -> "CheckpointError":
    reason = str(err).splitlines()[0] if str(err) else ""
    return CheckpointError(f"{path}: cannot be read ({type(err).__name__}: {reason}); the file is truncated or "
                           f"damaged: download it again (compare its size and sha256 with the source's)")


def _check_pos_embed(path: Path, buffers: dict, config: dict):
    pos = buffers.get("pos_embed")
    if pos is None or config.get("use_additional_conditions"):
        return  # MS models recompute pos_embed per (h, w)
    tokens = (config["sample_size"] // config["patch_size"]) ** 2
    if pos.shape[1] != tokens:
        side = int(round(pos.shape[1] ** 0.5)) * config["patch_size"] * 8
        raise CheckpointError(
            f"{path}: pos_embed has {pos.shape[1]} tokens (a {side}px model) but the config says "
            f"sample_size {config['sample_size']} ({tokens} tokens); set `resolution: {side}`"
        )


def build_from_state(state: dict, config: dict, origin: str):
    """Instantiate the config's variant (stock PixArt unless `modulation: adaln`) and load a diffusers-layout
    state dict strictly."""
    from accelerate import init_empty_weights

    from pixart.train.variants import build_variant, variant_of

    with init_empty_weights():  # parameters on meta (no 2.4 GB random init); buffers such as pos_embed stay real
        model = build_variant(variant_of(config), config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        details = [f"missing keys: {missing[:12]}{' …' if len(missing) > 12 else ''}" if missing else "",
                   f"unexpected keys: {unexpected[:12]}{' …' if len(unexpected) > 12 else ''}" if unexpected else "",
                   "shape mismatch: " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                                                  for k in wrong[:6]) if wrong else ""]
        raise CheckpointError(f"{origin}: does not fit the PixArt config ({'; '.join(d for d in details if d)})")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def load_transformer(checkpoint: str, *, resolution: int | None = None, arch: str | dict = "xl-2",
                     weights: str = "state_dict", subfolder: str | None = None) -> LoadedTransformer:
    """Load from a hub id, a diffusers folder, an original `.pth` or a `.safetensors` (either layout)."""
    path = Path(checkpoint)
    source = {"checkpoint": str(checkpoint), "weights": weights}
    if path.suffix in (".pth", ".pt", ".bin", ".safetensors"):
        if not path.is_file():
            raise CheckpointError(
                f"checkpoint file {checkpoint} does not exist. Put the file there (original PixArt .pth files "
                f"are in the hub repo PixArt-alpha/PixArt-alpha, e.g. PixArt-XL-2-512x512.pth) or fix `checkpoint:`."
            )
        from pixart.train.variants import has_block_modulation, original_to_diffusers_any

        state = read_safetensors(path) if path.suffix == ".safetensors" else read_pth(path, weights)
        config = transformer_config(arch, resolution)
        if has_block_modulation(state):  # the adaLN variant: a state dict carries no config to say so
            config["modulation"] = "adaln"
        try:
            original = looks_original(state)
            mapped, buffers = original_to_diffusers_any(state) if original else (state, {})
        except KeyMappingError as err:
            raise CheckpointError(f"{checkpoint}: not a PixArt state dict ({err})") from None
        _check_pos_embed(path, buffers, config)
        model = build_from_state(mapped, config, str(checkpoint))
        source.update(layout="original" if original else "diffusers", resolution=resolution)
        null = buffers.get("y_embedder.y_embedding")
        return LoadedTransformer(model, fingerprint_state(model.state_dict()), null, source)
    subfolder = subfolder or "transformer"
    model = _from_pretrained(_folder_transformer_class(checkpoint, subfolder), checkpoint, subfolder, "transformer")
    source.update(layout="diffusers-folder")
    return LoadedTransformer(model.eval(), fingerprint_state(model.state_dict()), None, source)


def _folder_transformer_class(source: str, subfolder: str) -> type:
    """The adaLN variant's class when a local folder's config.json says so; stock PixArt otherwise (hub ids
    included: every released model is adaLN-single)."""
    from pixart.train.variants import variant_class

    path = Path(source)
    config_file = path / subfolder / "config.json" if (path / subfolder).is_dir() else path / "config.json"
    return variant_class(json.loads(config_file.read_text()) if config_file.is_file() else {})


def _from_pretrained(class_name: str | type, source: str, subfolder: str | None, what: str):
    """diffusers/transformers `from_pretrained` for a folder, a pipeline folder or a hub id, with a clear miss."""
    import diffusers
    import transformers

    cls = class_name if isinstance(class_name, type) else \
        getattr(diffusers, class_name, None) or getattr(transformers, class_name)
    path = Path(source)
    if path.is_dir():
        sub = subfolder if subfolder and (path / subfolder).is_dir() else None
        return cls.from_pretrained(str(path), subfolder=sub) if sub else cls.from_pretrained(str(path))
    if path.exists() or not HUB_ID.match(str(source)):
        raise CheckpointError(f"{what} source {source!r}: no such folder, and not a hub id (org/name)")
    try:
        return cls.from_pretrained(source, subfolder=subfolder) if subfolder else cls.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{what} {source!r}{f' (subfolder {subfolder})' if subfolder else ''} could not be loaded: "
            f"{str(err).splitlines()[0]}. Offline, download it on a connected machine with "
            f"`hf download {source}` (into the HF cache, then copy ~/.cache/huggingface here) or point "
            f"the config at a local folder."
        ) from None


def load_vae(source: str, subfolder: str | None = "vae"):
    return _from_pretrained("AutoencoderKL", source, subfolder, "VAE").eval()


def load_text_encoder(source: str, subfolder: str | None = "text_encoder",
                      tokenizer_subfolder: str | None = "tokenizer"):
    from transformers import AutoTokenizer

    encoder = _from_pretrained("T5EncoderModel", source, subfolder, "text encoder").eval()
    path = Path(source)
    tok_sub = tokenizer_subfolder if path.is_dir() and tokenizer_subfolder and (path / tokenizer_subfolder).is_dir() \
        else (None if path.is_dir() else tokenizer_subfolder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder=tok_sub) if tok_sub \
            else AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"tokenizer for {source!r}: {str(err).splitlines()[0]}") from None
    return tokenizer, encoder


def files_fingerprint(folder: str) -> str:
    """Quick identity of a weights folder or hub snapshot: names, sizes and sampled bytes of its files.

    Hashing 19 GB of T5-XXL on every run is too slow; names + sizes + the first/middle/last MiB of each
    weight file identify a checkpoint in practice. Hub ids are resolved to their cached snapshot."""
    path = Path(folder)
    if not path.exists():
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(folder, local_files_only=True))
        except Exception:  # not cached: identify by id alone, recorded as such
            return hashlib.sha256(f"hub:{folder}".encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path)}|{size}|".encode())
        with file.open("rb") as fh:
            for offset in {0, max(0, size // 2 - 2**19), max(0, size - 2**20)}:
                fh.seek(offset)
                digest.update(fh.read(2**20))
    return digest.hexdigest()[:16]
