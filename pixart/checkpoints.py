"""Load a PixArt-α transformer (plus VAE and text encoder) from any supported source, with a fingerprint.

Sources (reference/pixart.md §2, §5):
- a HF hub id or a local diffusers pipeline folder (`transformer/` subfolder; `transformer_ema/` for
  `weights: state_dict_ema`, as in a training step folder) or transformer folder;
- an original PixArt `.pth` (`state_dict`, or `state_dict_ema` when asked) for 256, 512 or 1024-MS;
- a `.safetensors` file in either key layout (one set of weights, like a bare state dict: `weights: state_dict`).
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
# `weights:` → the diffusers subfolder that holds that set (pixart/train/saving.py writes both in a step folder)
WEIGHT_SUBFOLDERS = {"state_dict": "transformer", "state_dict_ema": "transformer_ema"}
# PixArt-α captions are 120 T5 tokens, so the released null caption has 120 rows (PixArt-Σ: 300); reference §1, §6
ALPHA_CAPTION_TOKENS = 120
# Legacy diffusers class name of PixArt transformer folders (the released hub repos): diffusers remaps it on load
LEGACY_TRANSFORMER_CLASS = "Transformer2DModel"


class CheckpointError(ValueError):
    """A checkpoint could not be loaded; the message names the file and the fix."""


@dataclass
class LoadedTransformer:
    transformer: torch.nn.Module
    fingerprint: str
    null_embedding: torch.Tensor | None = None  # original y_embedding buffer [120, caption_channels]
    source: dict = field(default_factory=dict)

    def fingerprint_for(self, uncond: str) -> str:
        """The model's identity for a generation cell: `fingerprint` (the weights), plus the null caption when
        `uncond: original` feeds it to the unconditional branch. Two checkpoints that differ only in
        `y_embedder.y_embedding` then get different cell keys. `fingerprint` itself stays the weights alone, so
        that a .pth and the diffusers folder of the same weights (which discards the null caption) keep one
        identity, and `uncond: diffusers` cells, which never read the null caption, are not invalidated by it."""
        if uncond != "original" or self.null_embedding is None:
            return self.fingerprint
        null = fingerprint_state({"y_embedder.y_embedding": self.null_embedding})
        return hashlib.sha256(f"{self.fingerprint}|null:{null}".encode()).hexdigest()[:16]


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
        # torch's message opens with advice about weights_only=False; its WeightsUnpickler line says what failed
        detail = next((line.strip() for line in str(err).splitlines() if "WeightsUnpickler error" in line), str(err))
        detail = detail.split(" Please use")[0].rstrip(".")  # torch goes on to explain how to allow the global: we do not
        if "Unsupported global" not in detail:  # not an object it refuses but bytes it cannot parse: a damaged file
            raise _unreadable(path, pickle.UnpicklingError(detail)) from None
        raise CheckpointError(
            f"{path}: refused, the file needs pickled code to load (weights_only=True failed: {detail}). Only plain "
            f"tensor checkpoints are accepted; re-save the weights as a state dict or as safetensors in a trusted "
            f"environment."
        ) from None
    except (OSError, RuntimeError, EOFError) as err:  # a download cut short, a disk error
        raise _unreadable(path, err) from None
    return select_weights(path, blob, weights)


def select_weights(path: Path, blob, weights: str) -> dict:
    """The `weights` entry of a loaded `.pth` (also used by reports.series on its memory-mapped reads)."""
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: not a state dict (got {type(blob).__name__})")
    if all(isinstance(v, torch.Tensor) for v in blob.values()):
        # a bare state dict: one set of weights, which is EMA or not only by what its writer chose; returning it
        # for `state_dict_ema` would record EMA in the provenance of weights that may be the live ones
        check_one_set_of_weights(path, weights, "a bare state dict")
        return blob
    if weights not in blob:
        raise CheckpointError(
            f"{path}: no '{weights}' entry; top-level keys are {sorted(blob)}. "
            f"Set `weights:` to one of the state-dict entries (state_dict or state_dict_ema)."
        )
    return blob[weights]


def check_one_set_of_weights(path: Path, weights: str, kind: str) -> None:
    if weights != "state_dict":
        raise CheckpointError(
            f"{path}: the file holds one set of weights ({kind}, no '{weights}' entry); use `weights: state_dict`, "
            f"or for `weights: {weights}` point `checkpoint:` at a .pth with that entry or at a training step folder"
        )


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


def _check_pos_embed_values(path: Path, buffers: dict, config: dict, model) -> None:
    """The stored pos_embed must be the one the built model computes (and uses: diffusers drops the stored one).

    Same token count is not enough: the interpolation scale changes every value (PixArt-Σ-256 uses 0.5 where
    α-256 uses 1), and such a checkpoint would run with positions it was never trained on. MS configs are skipped
    as in _check_pos_embed (they recompute per (h, w)), as are models without a sin-cos pos_embed buffer."""
    pos = buffers.get("pos_embed")
    computed = getattr(getattr(model, "pos_embed", None), "pos_embed", None)
    if pos is None or computed is None or config.get("use_additional_conditions") or pos.shape != computed.shape:
        return
    stored = pos.detach().float().cpu()
    # a half-precision file rounds |values| <= 1 by up to eps/2; fp32 files are compared at 1e-4
    atol = max(1e-4, torch.finfo(pos.dtype).eps if pos.is_floating_point() else 0.0)
    if torch.allclose(stored, computed.float().cpu(), atol=atol, rtol=0):
        return
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    grid = int(round(stored.shape[1] ** 0.5))  # a non-MS pos_embed is a square grid
    scale = model.pos_embed.interpolation_scale
    # name the checkpoint's scale when it is a usual one (diffusers' PatchEmbed: base_size = the grid side)
    matches = [s for s in (0.25, 0.5, 1, 2, 4)
               if torch.allclose(stored, get_2d_sincos_pos_embed(stored.shape[2], grid, base_size=grid,
                                                                 interpolation_scale=s).float()[None], atol=atol)]
    theirs = f"interpolation_scale {matches[0]}" if matches else "another interpolation scale"
    difference = float((stored - computed.float().cpu()).abs().max())
    raise CheckpointError(
        f"{path}: interpolation-scale mismatch: the checkpoint's pos_embed was made with {theirs}, the config "
        f"builds interpolation_scale {scale} (max |difference| {difference:.3g}), so the model would run with "
        f"positions it was not trained on (PixArt-Σ-256 uses 0.5 where α-256 uses 1). Fix `arch:`: give a config "
        f"whose `interpolation_scale` is {matches[0] if matches else 'the checkpoint’s'}, or use a checkpoint "
        f"made for this config"
    )


def _check_null_rows(path: Path, null: torch.Tensor | None, arch) -> None:
    """The null caption's row count is the caption length. Only the built-in `xl-2` arch says which model it
    is (PixArt-α: 120 T5 tokens); a config dict or config.json carries no caption length, so it is not checked."""
    if null is None or arch != "xl-2" or null.shape[0] == ALPHA_CAPTION_TOKENS:
        return
    raise CheckpointError(
        f"{path}: y_embedder.y_embedding (the null caption) has {null.shape[0]} rows, but `arch: xl-2` is PixArt-α, "
        f"whose captions are {ALPHA_CAPTION_TOKENS} T5 tokens (a PixArt-Σ checkpoint has 300); use a PixArt-α "
        f"checkpoint, or give `arch:` the config.json of the model this checkpoint belongs to"
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

        if path.suffix == ".safetensors":
            check_one_set_of_weights(path, weights, "a safetensors file")  # no entries: it cannot hold an EMA set
            state = read_safetensors(path)
        else:
            state = read_pth(path, weights)
        config = transformer_config(arch, resolution)
        if has_block_modulation(state):  # the adaLN variant: a state dict carries no config to say so
            config["modulation"] = "adaln"
        try:
            original = looks_original(state)
            mapped, buffers = original_to_diffusers_any(state) if original else (state, {})
        except KeyMappingError as err:
            raise CheckpointError(f"{checkpoint}: not a PixArt state dict ({err})") from None
        _check_pos_embed(path, buffers, config)
        null = buffers.get("y_embedder.y_embedding")
        _check_null_rows(path, null, arch)
        model = build_from_state(mapped, config, str(checkpoint))
        _check_pos_embed_values(path, buffers, config, model)
        source.update(layout="original" if original else "diffusers", resolution=resolution)
        return LoadedTransformer(model, fingerprint_state(model.state_dict()), null, source)
    if subfolder is None:
        if weights not in WEIGHT_SUBFOLDERS:
            raise CheckpointError(f"{checkpoint}: `weights: {weights}` is not one of {sorted(WEIGHT_SUBFOLDERS)}; "
                                  f"a diffusers folder holds `state_dict` in transformer/ and `state_dict_ema` in "
                                  f"transformer_ema/ (training step folders)")
        subfolder = WEIGHT_SUBFOLDERS[weights]
        # the EMA set is only ever in transformer_ema/: falling back to the folder root (or to transformer/)
        # would load the live weights under an EMA provenance; no released hub repo holds one
        if weights == "state_dict_ema" and not (path.is_dir() and (path / subfolder).is_dir()):
            raise CheckpointError(
                f"{checkpoint}: `weights: state_dict_ema` loads the EMA weights from a subfolder {subfolder}/, "
                f"which it does not have (released hub repos never do); use `weights: state_dict` (transformer/ or "
                f"the folder itself), or point `checkpoint:` at a training step folder (step_N/ holds {subfolder}/) "
                f"or at a .pth with a 'state_dict_ema' entry"
            )
    model = _from_pretrained(_folder_transformer_class(checkpoint, subfolder), checkpoint, subfolder, "transformer",
                             fix="point `checkpoint:` at a PixArt transformer or pipeline folder")
    source.update(layout="diffusers-folder")
    return LoadedTransformer(model.eval(), fingerprint_state(model.state_dict()), None, source)


def _folder_transformer_class(source: str, subfolder: str) -> type:
    """The adaLN variant's class when a local folder's config.json says so; stock PixArt otherwise (hub ids
    included: every released model is adaLN-single)."""
    from pixart.train.variants import variant_class

    path = Path(source)
    config_file = path / subfolder / "config.json" if (path / subfolder).is_dir() else path / "config.json"
    return variant_class(json.loads(config_file.read_text()) if config_file.is_file() else {})


def _root_holds(cls: type, path: Path) -> bool:
    """Whether a folder's own config.json is a `cls` (so the folder itself can stand in for a missing subfolder).

    Without this, a transformer-only folder given as a VAE source loads its config.json as an AutoencoderKL with
    every weight left on the meta device, which fails only at the first `.to()` ("Cannot copy out of meta tensor")."""
    config_file = path / "config.json"
    if not config_file.is_file():
        return False
    try:
        config = json.loads(config_file.read_text())
    except ValueError as err:
        raise CheckpointError(f"{config_file}: not valid JSON ({err}); restore the file") from None
    if "_class_name" in config:  # a diffusers component
        name = config["_class_name"]
        from diffusers import PixArtTransformer2DModel

        return name in {c.__name__ for c in cls.__mro__} or (
            name == LEGACY_TRANSFORMER_CLASS and issubclass(cls, PixArtTransformer2DModel))
    config_class = getattr(cls, "config_class", None)  # a transformers model: the same model_type (t5 for T5)
    return config_class is not None and config.get("model_type") == getattr(config_class, "model_type", None)


def _from_pretrained(class_name: str | type, source: str, subfolder: str | None, what: str, fix: str = "",
                     **kwargs):
    """diffusers/transformers `from_pretrained` for a folder, a pipeline folder or a hub id, with a clear miss.
    `fix`: what to set when a local folder has neither the subfolder nor a `what` at its root; `kwargs` go to
    from_pretrained."""
    import diffusers
    import transformers

    cls = class_name if isinstance(class_name, type) else \
        getattr(diffusers, class_name, None) or getattr(transformers, class_name)
    path = Path(source)
    if path.is_dir():
        sub = subfolder if subfolder and (path / subfolder).is_dir() else None
        if subfolder and sub is None and not _root_holds(cls, path):
            fix = fix or f"point the config at a {what} folder"
            raise CheckpointError(f"{source} has no {subfolder}/ subfolder; {fix} (its own config.json is not a "
                                  f"config of {cls.__name__}, so the folder cannot stand in for it)")
        return cls.from_pretrained(str(path), **({"subfolder": sub} if sub else {}), **kwargs)
    if path.exists() or not HUB_ID.match(str(source)):
        raise CheckpointError(f"{what} source {source!r}: no such folder, and not a hub id (org/name)")
    try:
        return cls.from_pretrained(source, **({"subfolder": subfolder} if subfolder else {}), **kwargs)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{what} {source!r}{f' (subfolder {subfolder})' if subfolder else ''} could not be loaded: "
            f"{str(err).splitlines()[0]}. Offline, download it on a connected machine with "
            f"`hf download {source}` (into the HF cache, then copy ~/.cache/huggingface here) or point "
            f"the config at a local folder."
        ) from None


def load_vae(source: str, subfolder: str | None = "vae"):
    return _from_pretrained("AutoencoderKL", source, subfolder, "VAE", fix="set vae: to a VAE folder").eval()


def local_snapshot(source: str, subfolder: str | None = None) -> Path | None:
    """A local folder for `source`: the folder itself, or a hub id's snapshot in the HF cache holding `subfolder`
    (None when not cached, or cached without it: the caller loads by id and names the download on a miss).
    Loading from the snapshot folder avoids transformers' hub lookups of files a pipeline repo never had
    (AutoTokenizer asks for tokenizer/config.json), which fail offline even when every file is cached."""
    path = Path(source)
    if path.exists():
        return path
    if not HUB_ID.match(str(source)):
        return None
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(str(source), local_files_only=True))
    except Exception:  # not cached
        return None
    return snapshot if not subfolder or (snapshot / subfolder).is_dir() else None


def load_text_encoder(source: str, subfolder: str | None = "text_encoder",
                      tokenizer_subfolder: str | None = "tokenizer", dtype: torch.dtype = torch.float32):
    """(tokenizer, T5 encoder in `dtype`). The dtype is given to from_pretrained, not cast afterwards: under
    float16 transformers keeps T5's `wo` projections in float32 (they overflow in fp16, and T5's clamps would
    then turn the overflow into finite, wrong states)."""
    from transformers import AutoTokenizer

    source = str(local_snapshot(source, subfolder) or source)
    encoder = _from_pretrained("T5EncoderModel", source, subfolder, "text encoder",
                               fix="point the text encoder at a T5 folder or a pipeline with text_encoder/",
                               dtype=dtype).eval()
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
    path = local_snapshot(folder)
    if path is None:  # not cached: identify by id alone, recorded as such
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
