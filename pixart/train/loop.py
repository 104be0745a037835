"""The training loop: one recipe stage, accelerate (single process or DDP), resumable, NaN-guarded.

Every random draw of a step (timesteps, noise, caption drop, DiT's label drop) comes from the global torch
RNG seeded from (seed, step, rank), and the data order from (seed, epoch): a resumed run therefore takes
exactly the steps an uninterrupted run would have taken (bit for bit on the CPU; on CUDA, nondeterministic
backward kernels such as the embedding's and SDPA's let the low bits drift, as between two fresh runs).
"""
import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pixart.atomic import write_text_atomic
from pixart.cli import clean_errors
from pixart.train import recipe as recipes
from pixart.train.diffusion import GaussianDiffusion
from pixart.train.ema import Ema
from pixart.train.batches import epoch_batches
from pixart.train.data import LatentDataset, check_matches_recipe, features_fingerprint
from pixart.train.model_init import build_model
from pixart.train.saving import ResumeError, discard_run, list_checkpoints, resume, save_checkpoint, start_identity

STEP_SEED_STRIDE = 1_000_003  # keeps (step, rank) seeds distinct for up to a million ranks


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the message has the step, the batch ids and the last good checkpoint."""


def warmup_schedule(optimizer, warmup_steps: int):
    """The original's `constant` schedule with warmup, diffusers' get_constant_schedule_with_warmup: lr·s/W at
    optimizer step s < W (0 at the first step), then lr. It counts optimizer steps, stepped here on every
    process; the original prepares it with accelerate, which on N GPUs ends the warmup after W/N steps."""
    from diffusers.optimization import get_constant_schedule_with_warmup

    return get_constant_schedule_with_warmup(optimizer, warmup_steps)


def _predict(model, stage: str, x_t, t, batch: dict, null: torch.Tensor | None, caption_drop: float):
    if stage == "class":
        return model(x_t, timestep=t, class_labels=batch["label"]).sample
    text = batch["text"]
    if caption_drop > 0:
        # the original replaces the whole caption by the fixed null buffer and keeps the prompt's mask
        drop = torch.rand(text.shape[0], device=text.device) < caption_drop
        text = torch.where(drop[:, None, None], null[: text.shape[1]].to(text), text)
    added = {"resolution": batch["img_hw"], "aspect_ratio": batch["aspect_ratio"]}
    return model(x_t, encoder_hidden_states=text, encoder_attention_mask=batch["text_mask"], timestep=t,
                 added_cond_kwargs=added).sample


def _peak_memory(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, default=str))


def train(recipe: dict, out: str | Path, *, resume_from: str | None = "auto", stop_after: int | None = None,
          discard_stale: bool = False) -> dict:
    """Run (or continue) a recipe; returns the summary also written to `{out}/stats.json`.

    `resume_from`: "auto" (the latest complete checkpoint under out up to the recipe's steps, if any), a
    checkpoint folder, or None. A checkpoint of another run (saving.resume says what differs) stops the run,
    unless `discard_stale` and "auto": then the run's checkpoints and logs are deleted and it starts over.
    `stop_after`: stop after this many steps of this call (to test resumption); checkpoints as usual.
    """
    from accelerate import Accelerator

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(mixed_precision=recipe["mixed_precision"])
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(recipe["seed"])
    model, null = build_model(recipe)
    # before resuming or discarding a stale run: features that do not fit the recipe stop it with nothing touched
    dataset = LatentDataset(recipe["features"], seed=recipe["seed"])
    check_matches_recipe(dataset, recipe, model.config.num_embeds_ada_norm if recipe["stage"] == "class" else None)
    if recipe["preload"]:
        dataset.preload()
    if recipe["gradient_checkpointing"]:
        model.enable_gradient_checkpointing()
    model.train()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = recipe["optimizer"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipes.effective_lr(recipe, world),
                                  betas=tuple(opt["betas"]), eps=opt["eps"], weight_decay=opt["weight_decay"])
    scheduler = warmup_schedule(optimizer, opt["warmup_steps"])
    ema = Ema(model, recipe["ema_rate"])
    # the process count too: the data position of a step and the lr scaling depend on it
    origin = {**start_identity(model, null, features_fingerprint(recipe["features"])), "world_size": world}
    start, loss_value = 0, None
    auto = resume_from == "auto"
    if auto:
        found = [path for step, path in list_checkpoints(out) if step <= recipe["steps"]]
        resume_from = str(found[-1]) if found else None
    if resume_from:
        try:
            start, saved_null, loss_value = resume(Path(resume_from), model, ema, optimizer, scheduler,
                                                   recipe=recipe, start=origin, scaler=accelerator.scaler)
            null = saved_null if saved_null is not None else null
        except ResumeError as err:
            if not auto:
                raise
            if not discard_stale:
                raise ResumeError(f"{err}. To train this recipe from the start, delete {out / 'checkpoints'} "
                                  f"(or pass --discard-stale)") from None
            discard_run(out)
            print(f"discarded the stale run in {out}: {err}", flush=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    null = null.to(device) if null is not None else None
    diffusion = GaussianDiffusion()
    batches = epoch_batches(dataset, recipe, rank=rank, world_size=world, start_step=start)
    log_path = out / "log.jsonl"
    last_saved = str(list_checkpoints(out)[-1][1]) if list_checkpoints(out) else None
    end = recipe["steps"] if stop_after is None else min(recipe["steps"], start + stop_after)
    images, seconds = 0, 0.0
    bar = tqdm(range(start, end), desc=f"train {recipe['stage']}/{recipe['variant']}", disable=not accelerator.is_main_process)
    for step in bar:
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in next(batches).items()}
        torch.manual_seed(recipe["seed"] * STEP_SEED_STRIDE + step * world + rank)
        tick = time.perf_counter()
        x0 = batch["latents"]
        t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), device=device)
        noise = torch.randn_like(x0)
        with accelerator.autocast():
            output = _predict(model, recipe["stage"], diffusion.q_sample(x0, t, noise), t, batch, null,
                              recipe["caption_drop"])
        terms = diffusion.training_losses(output.float(), x0, noise, t)
        loss = terms["loss"].mean()
        if not torch.isfinite(loss):
            report = {"step": step, "batch_ids": list(batch["item_id"]), "last_good_checkpoint": last_saved,
                      "loss": float(loss.detach())}
            _write_json(out / "nan_report.json", report)
            raise NonFiniteLossError(f"loss is {report['loss']} at step {step} (batch ids {report['batch_ids'][:8]}…); "
                                     f"last good checkpoint: {last_saved}; details in {out / 'nan_report.json'}")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), opt["grad_clip"])
        optimizer.step()
        if not accelerator.optimizer_step_was_skipped:  # fp16's scaler skipped an overflowing step: no lr step either
            scheduler.step()
        ema.update(accelerator.unwrap_model(model))
        seconds += time.perf_counter() - tick
        images += x0.shape[0] * world
        loss_value = float(loss.detach())
        done = step + 1
        if done % recipe["log_every"] == 0 or done == end:
            record = {"step": done, "loss": loss_value, "mse": float(terms["mse"].detach().mean()),
                      "vb": float(terms["vb"].detach().mean()), "lr": scheduler.get_last_lr()[0],
                      "grad_norm": float(grad_norm) if math.isfinite(float(grad_norm)) else None,
                      "images_per_s": images / max(seconds, 1e-9)}
            if accelerator.is_main_process:
                with log_path.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{loss_value:.4f}")
        if accelerator.is_main_process and (done % recipe["save_every"] == 0 or done == recipe["steps"]):
            last_saved = str(save_checkpoint(out, done, accelerator.unwrap_model(model), ema, optimizer, scheduler,
                                             recipe=recipe, null_embedding=null, loss=loss_value, start=origin,
                                             scaler=accelerator.scaler))
    accelerator.wait_for_everyone()
    variant = "dit" if recipe["stage"] == "class" else recipe["variant"]
    stats = {"variant": variant, "stage": recipe["stage"], "reparam": recipe["init"]["kind"] == "dit",
             "init": recipe["init"], "params": params, "peak_memory_bytes": _peak_memory(device),
             "device": str(device), "world_size": world, "steps": end, "final_loss": loss_value,
             "images_per_s": images / seconds if seconds else None, "checkpoints": [str(p) for _, p in list_checkpoints(out)]}
    if accelerator.is_main_process:
        _write_json(out / "stats.json", stats)
    return stats


@clean_errors("pixart.train")
def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Train one stage of a PixArt-α recipe (see pixart/train/recipe.py).")
    parser.add_argument("--recipe", required=True, help="recipe YAML/JSON")
    parser.add_argument("--out", required=True, help="run folder: checkpoints/, log.jsonl, stats.json")
    parser.add_argument("--resume", default="auto", help="'auto' (latest checkpoint in --out), a step_* folder, or 'none'")
    parser.add_argument("--discard-stale", action="store_true",
                        help="with --resume auto: when the latest checkpoint comes from another start (an upstream "
                             "stage, the features or a trajectory key of the recipe changed), delete the run's "
                             "checkpoints and logs and train from the start (the DAG does: it reruns a stage exactly "
                             "when what it depends on changed)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = recipes.load(args.recipe)
    start = time.perf_counter()
    stats = train(recipe, args.out, resume_from=None if args.resume == "none" else args.resume,
                  discard_stale=args.discard_stale)
    rate, loss = stats["images_per_s"], stats["final_loss"]
    print(f"trained {recipe['stage']}/{recipe['variant']} to step {stats['steps']}: loss "
          f"{'n/a' if loss is None else f'{loss:.4f}'}, "
          f"{'n/a' if rate is None else f'{rate:.1f}'} images/s, {time.perf_counter() - start:.0f}s → {args.out}")


if __name__ == "__main__":
    main()
