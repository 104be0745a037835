"""Training checkpoints: written atomically every N steps, loadable by the suite and resumable.

`{out}/checkpoints/step_{step:07d}/` holds
  transformer/, transformer_ema/   diffusers folders (live and EMA weights; `from_pretrained` / the suite's loader)
  model.pth                        the original PixArt layout, `state_dict` + `state_dict_ema` + the null caption
                                   buffer `y_embedder.y_embedding` (text stages only: DiT has no PixArt layout)
  training_state.pt                optimizer, lr schedule, EMA shadow, RNG state (tensors only: weights_only loads)
  meta.json                        step, stage, variant, model config, recipe, last loss
A checkpoint directory exists only when complete: it is written under a temporary name and renamed.
"""
import copy
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from pixart.checkpoints import fingerprint_state
from pixart.train.variants import diffusers_to_original_any

STEP_PREFIX = "step_"
COMPARED_META = ("stage", "variant", "config")


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
    buffers = {"y_embedder.y_embedding": null_embedding.float(), "pos_embed": model.pos_embed.pos_embed.float()}
    return diffusers_to_original_any(state, buffers)


def save_checkpoint(out: Path, step: int, model, ema, optimizer, scheduler, *, recipe: dict,
                    null_embedding: torch.Tensor | None, loss: float | None) -> Path:
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
                "ema": ema.shadow, "rng": torch.get_rng_state(),
                "null_embedding": null_embedding}, tmp / "training_state.pt")
    meta = {"step": step, "stage": recipe["stage"], "variant": recipe["variant"], "config": _model_config(model),
            "class_name": type(model).__name__, "recipe": recipe, "loss": loss,
            "fingerprint": fingerprint_state(live), "fingerprint_ema": fingerprint_state(averaged)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _differences(saved: dict, current: dict) -> list[str]:
    diffs = []
    for key in COMPARED_META:
        a, b = saved.get(key), current.get(key)
        if key == "config" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"config.{k}: checkpoint {a.get(k)!r} vs recipe {b.get(k)!r}"
                      for k in sorted(set(a) | set(b)) if not k.startswith("_") and a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key}: checkpoint {a!r} vs recipe {b!r}")
    return diffs


def resume(path: Path, model, ema, optimizer, scheduler, *, recipe: dict) -> tuple[int, torch.Tensor | None]:
    """Restore everything a checkpoint holds; returns (step, null embedding). Refuses an incompatible one."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise ResumeError(f"{path} is not a training checkpoint (no meta.json); pass a `step_*` folder")
    meta = json.loads(meta_file.read_text())
    diffs = _differences(meta, {"stage": recipe["stage"], "variant": recipe["variant"],
                                "config": _model_config(model)})
    if diffs:
        raise ResumeError(f"cannot resume from {path}: " + "; ".join(diffs))
    weights = load_file(str(path / "transformer" / "diffusion_pytorch_model.safetensors"))
    model.load_state_dict(weights)
    state = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ema.load(state["ema"])
    torch.set_rng_state(state["rng"])
    return int(state["step"]), state["null_embedding"]
