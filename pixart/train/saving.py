"""Training checkpoints: written atomically every N steps, loadable by the suite and resumable.

`{out}/checkpoints/step_{step:07d}/` holds
  transformer/, transformer_ema/   diffusers folders (live and EMA weights; `from_pretrained` / the suite's loader)
  model.pth                        the original PixArt layout, `state_dict` + `state_dict_ema` + the null caption
                                   buffer `y_embedder.y_embedding` (text stages only: DiT has no PixArt layout)
  training_state.pt                optimizer, lr schedule, EMA shadow, RNG state (tensors only: weights_only loads)
  meta.json                        step, stage, variant, model config, recipe, last loss, start (below)
A checkpoint directory exists only when complete: it is written under a temporary name and renamed.

A checkpoint resumes only the run it came from: same model config, same TRAJECTORY_KEYS of the recipe, same
trainer version (recipe.TRAINER_VERSION: how the loop trains) and the same start, i.e. content fingerprints of
the initial weights, the null caption and the features (settings and index: data.features_fingerprint). Paths
are not enough: when an upstream stage is retrained, its `step_…` folder keeps its name, and a stage 3 resumed on
top of the old fine-tune would silently describe a model that no longer exists.
"""
import copy
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from pixart.checkpoints import fingerprint_state
from pixart.train.recipe import TRAINER_VERSION
from pixart.train.variants import diffusers_to_original_any

STEP_PREFIX = "step_"
# recipe keys that shape the run up to any step; `steps`, `save_every`, `log_every`, `num_workers`, `preload`
# and `gradient_checkpointing` may change on resume (extend a run, save more often), `init` and `features` are
# compared by content (start_identity)
TRAJECTORY_KEYS = ("stage", "variant", "resolution", "batch_size", "seed", "optimizer", "ema_rate", "caption_drop",
                   "mixed_precision", "multiscale")
RUN_FILES = ("log.jsonl", "nan_report.json", "stats.json")


class ResumeError(ValueError):
    """The checkpoint to resume from does not fit the recipe; the message names what differs."""


def step_dir(out: Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f"{STEP_PREFIX}{step:07d}"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `out`, in step order."""
    folder = Path(out) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(p.name[len(STEP_PREFIX):]), p) for p in folder.iterdir()
             if p.is_dir() and p.name.startswith(STEP_PREFIX) and (p / "meta.json").is_file()]
    return sorted(found)


def _model_config(model) -> dict:
    return json.loads(json.dumps(dict(model.config), default=list))


def _original_layout(model, state: dict, null_embedding: torch.Tensor) -> dict:
    buffers = {"y_embedder.y_embedding": null_embedding.detach().float().cpu(),
               "pos_embed": model.pos_embed.pos_embed.detach().float().cpu()}
    return diffusers_to_original_any(state, buffers)


def start_identity(model, null_embedding: torch.Tensor | None, features: str) -> dict:
    """Content fingerprints of where a run starts: its initial weights, its null caption and its training data
    (`features`: data.features_fingerprint)."""
    return {"weights": fingerprint_state(model.state_dict()),
            "null_caption": None if null_embedding is None else fingerprint_state({"null": null_embedding}),
            "features": features}


def save_checkpoint(out: Path, step: int, model, ema, optimizer, scheduler, *, recipe: dict,
                    null_embedding: torch.Tensor | None, loss: float | None, start: dict, scaler=None) -> Path:
    """`scaler`: fp16's gradient scaler, whose loss scale decides which steps are skipped; saved so that a resumed
    run skips the same ones."""
    final = step_dir(out, step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    live = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    averaged = {k: v.detach().cpu() for k, v in ema.state_dict(model).items()}
    model.save_pretrained(tmp / "transformer", safe_serialization=True)
    ema_model = copy.deepcopy(model).cpu()
    ema_model.load_state_dict(averaged)
    ema_model.save_pretrained(tmp / "transformer_ema", safe_serialization=True)
    if null_embedding is not None:
        torch.save({"state_dict": _original_layout(model, live, null_embedding),
                    "state_dict_ema": _original_layout(model, averaged, null_embedding)}, tmp / "model.pth")
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "ema": {k: v.cpu() for k, v in ema.shadow.items()}, "rng": torch.get_rng_state(),
                "null_embedding": None if null_embedding is None else null_embedding.cpu(),
                "scaler": None if scaler is None else scaler.state_dict()}, tmp / "training_state.pt")
    meta = {"step": step, "stage": recipe["stage"], "variant": recipe["variant"], "config": _model_config(model),
            "class_name": type(model).__name__, "recipe": recipe, "loss": loss, "start": start,
            "trainer_version": TRAINER_VERSION,
            "fingerprint": fingerprint_state(live), "fingerprint_ema": fingerprint_state(averaged)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _differences(meta: dict, recipe: dict, config: dict, start: dict) -> list[str]:
    saved_config, saved_recipe = meta.get("config") or {}, meta.get("recipe") or {}
    diffs = [f"config.{k}: checkpoint {saved_config.get(k)!r} vs recipe {config.get(k)!r}"
             for k in sorted(set(saved_config) | set(config))
             if not k.startswith("_") and saved_config.get(k) != config.get(k)]
    diffs += [f"{k}: checkpoint {saved_recipe.get(k)!r} vs recipe {recipe[k]!r}"
              for k in TRAJECTORY_KEYS if saved_recipe.get(k) != recipe[k]]
    if meta.get("trainer_version") != TRAINER_VERSION:
        diffs.append(f"trainer version: checkpoint {meta.get('trainer_version')} vs pixart.train {TRAINER_VERSION} "
                     f"(the loop changed how it trains: pixart/train/recipe.py)")
    if "start" not in meta:
        return diffs + ["the checkpoint does not record its start (written by an older version of pixart.train), "
                        "so nothing says it began from this recipe's init weights and features"]
    saved = dict(meta["start"])
    if "world_size" in saved and saved.pop("world_size") != start.get("world_size"):
        diffs.append(f"processes: checkpoint {meta['start']['world_size']} vs now {start.get('world_size')} (a step's "
                     f"place in the data and the lr scaling depend on it; resume with "
                     f"{meta['start']['world_size']} processes)")
    diffs += [f"start {k} (init/features content): checkpoint {v} vs now {start.get(k)}"
              for k, v in saved.items() if v != start.get(k)]
    return diffs


def resume(path: Path, model, ema, optimizer, scheduler, *, recipe: dict, start: dict,
           scaler=None) -> tuple[int, torch.Tensor | None, float | None]:
    """Restore everything a checkpoint holds; returns (step, null embedding, its loss). Refuses a checkpoint of
    another run (ResumeError naming what differs)."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise ResumeError(f"{path} is not a training checkpoint (no meta.json); pass a `step_*` folder")
    meta = json.loads(meta_file.read_text())
    diffs = _differences(meta, recipe, _model_config(model), start)
    if diffs:
        raise ResumeError(f"cannot resume from {path}: " + "; ".join(diffs))
    weights = load_file(str(path / "transformer" / "diffusion_pytorch_model.safetensors"))
    model.load_state_dict(weights)
    state = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ema.load(state["ema"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    return int(state["step"]), state["null_embedding"], meta.get("loss")


def discard_run(out: Path) -> None:
    """Delete a run's checkpoints and logs (a stale run: it started elsewhere than the recipe now says)."""
    shutil.rmtree(Path(out) / "checkpoints", ignore_errors=True)
    for name in RUN_FILES:
        (Path(out) / name).unlink(missing_ok=True)
