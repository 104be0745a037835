"""A training recipe: one stage of the PixArt-α recipe as a validated dict (defaults from reference/pixart.md §3).

Stages: `class` trains a class-conditional DiT (the paper's pixel-dependency stage); `text` trains a
PixArt variant on captions (stages 2 and 3 differ only in data, resolution and where they start from).
`init` says where weights start: `scratch`, `dit` (re-parameterise a stage-1 DiT checkpoint into the
variant) or `checkpoint` (continue from a PixArt checkpoint, e.g. stage 3 from stage 2).
"""
import copy
import json
from pathlib import Path

import yaml

STAGES = ("class", "text")
# How the loop trains, as a version: bump it when a change alters the trajectory of an unchanged recipe. A
# checkpoint of another version is not resumed (saving.resume), and the DAG reruns the training jobs.
# 2: the warmup is diffusers' get_constant_schedule_with_warmup (lr 0 at the first step), session 12
TRAINER_VERSION = 2

VARIANTS = ("adaln-single", "adaln")
INIT_KINDS = ("scratch", "dit", "checkpoint")
PRECISIONS = ("no", "fp16", "bf16")

DEFAULTS = {
    "stage": "text",
    "variant": "adaln-single",
    "model": None,             # diffusers config kwargs (dict), a config.json path, or "xl-2"
    "resolution": 256,
    "init": {"kind": "scratch", "source": None},
    "features": None,          # folder written by `python -m pixart.train.features`
    "steps": 1000,
    "batch_size": 32,          # per process
    "seed": 43,
    "optimizer": {"lr": 2e-5, "weight_decay": 0.03, "eps": 1e-10, "betas": [0.9, 0.999],
                  "warmup_steps": 1000, "grad_clip": 0.01, "lr_scaling": "sqrt", "base_batch": 256},
    "ema_rate": 0.9999,
    "caption_drop": 0.1,
    "mixed_precision": "no",   # the original trains in fp16 on GPUs (reference §3); "no" runs anywhere, CPUs too
    "gradient_checkpointing": False,
    "save_every": 500,
    "log_every": 10,
    "multiscale": False,
    "num_workers": 0,          # DataLoader processes; the batches are the same for any number (data.py)
    "preload": False,          # read every feature file into memory once (each process holds them all); the same
                               # batches, loaded faster (LatentDataset.preload)
}


class RecipeError(ValueError):
    """A recipe key is unknown or has a bad value; the message names the key and what is allowed."""


def _merge(defaults: dict, given: dict, where: str) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; known: {sorted(defaults)}")
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if isinstance(defaults[key], dict) and key != "model":
            if not isinstance(value, dict):
                raise RecipeError(f"{where}: `{key}` must be a mapping, got {value!r}")
            out[key] = _merge(defaults[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


RANGES = {"[0, 1]": lambda v: 0 <= v <= 1, "(0, ∞)": lambda v: v > 0, "[0, ∞)": lambda v: v >= 0}


def _choice(recipe: dict, key: str, allowed, where: str):
    value = recipe[key]
    if value not in allowed:
        raise RecipeError(f"{where}: `{key}` is {value!r}; use one of {list(allowed)}")


def resolve(recipe: dict, where: str = "recipe") -> dict:
    """Defaults filled in and every value checked (one error naming the key)."""
    out = _merge(DEFAULTS, recipe, where)
    _choice(out, "stage", STAGES, where)
    _choice(out, "variant", VARIANTS, where)
    _choice(out, "mixed_precision", PRECISIONS, where)
    _choice(out["init"], "kind", INIT_KINDS, f"{where}.init")
    if out["init"]["kind"] != "scratch" and not out["init"]["source"]:
        raise RecipeError(f"{where}.init: kind {out['init']['kind']!r} needs `source` (a checkpoint path)")
    if out["stage"] == "class" and out["init"]["kind"] == "dit":
        raise RecipeError(f"{where}: a class-conditional stage cannot start from a re-parameterised DiT")
    if out["features"] is None:
        raise RecipeError(f"{where}: `features` (a folder from `python -m pixart.train.features`) is required")
    if out["optimizer"]["lr_scaling"] not in ("none", "sqrt"):
        raise RecipeError(f"{where}.optimizer: `lr_scaling` must be 'none' or 'sqrt'")
    for key in ("steps", "batch_size", "save_every", "log_every"):
        if not isinstance(out[key], int) or out[key] < 1:
            raise RecipeError(f"{where}: `{key}` must be a positive integer, got {out[key]!r}")
    if not isinstance(out["num_workers"], int) or out["num_workers"] < 0:
        raise RecipeError(f"{where}: `num_workers` must be an integer ≥ 0, got {out['num_workers']!r}")
    for key in ("gradient_checkpointing", "multiscale", "preload"):  # a YAML "no" in quotes would read as true
        if not isinstance(out[key], bool):
            raise RecipeError(f"{where}: `{key}` must be true or false, got {out[key]!r}")
    # probabilities and rates: 1.5 dropped every caption, an EMA rate of 2 diverged
    opt = out["optimizer"]
    for key, value, within in (("caption_drop", out["caption_drop"], "[0, 1]"), ("ema_rate", out["ema_rate"], "[0, 1]"),
                               ("optimizer.lr", opt["lr"], "(0, ∞)"), ("optimizer.grad_clip", opt["grad_clip"], "(0, ∞)"),
                               ("optimizer.weight_decay", opt["weight_decay"], "[0, ∞)"),
                               ("optimizer.warmup_steps", opt["warmup_steps"], "[0, ∞)")):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and RANGES[within](value)):
            raise RecipeError(f"{where}: `{key}` must lie in {within}, got {value!r}")
    return out


def load(path: str | Path) -> dict:
    """Read a recipe from YAML/JSON and resolve it."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} {'is a folder' if path.is_dir() else 'does not exist'}; give a recipe "
                          f"YAML or JSON file")
    is_yaml = path.suffix in (".yaml", ".yml")  # anything else is read as JSON
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"recipe file {path} cannot be read ({err})") from None
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise RecipeError(f"recipe file {path}: not valid {'YAML' if is_yaml else 'JSON'} "
                          f"({' '.join(str(err).split())})") from None
    if data is not None and not isinstance(data, dict):
        raise RecipeError(f"recipe file {path}: expected a mapping of recipe keys, got a {type(data).__name__}")
    return resolve(data or {}, str(path))


def effective_lr(recipe: dict, world_size: int) -> float:
    """The original's `auto_lr` rule: lr × sqrt(global batch / base batch) when lr_scaling is 'sqrt'."""
    opt = recipe["optimizer"]
    if opt["lr_scaling"] == "none":
        return float(opt["lr"])
    return float(opt["lr"]) * ((recipe["batch_size"] * world_size) / opt["base_batch"]) ** 0.5
