"""Generate one cell (model × prompt set × sampler × cfg), or one shard of it, as PNGs plus a manifest.

python -m pixart.generate --model-spec M.json --prompts P.parquet --embeddings E.json \
    --sampler dpm-solver:20 --cfg 4.5 --out results/samples/M/B/dpm-solver-20/cfg4.5 [--shard I --num-shards N]

Batches are a fixed function of the cell: samples grouped by output size in prompt-set order, cut into
`--batch-size` chunks; shard I takes batches I, I+N, …  So the union of shards is the single-job run, bit for
bit, and a rerun recomputes only batches with a missing image, writing only the missing files. Each PNG
carries its provenance (cell key, sample id, seed, prompt hash, size, code and library versions) and is
written atomically; a PNG whose provenance does not match the cell is regenerated. The cell key covers the
weights and configs of transformer and VAE, the text states, sampler, cfg, dtype and batch size. A code change
alone regenerates nothing (COCO-30K is hours of GPU): each manifest row names the code that made its image, and
a warning counts the images older code made. Without --embeddings the text encoder runs in-process
(`--text-encoder`).
"""
import argparse
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from pixart import manifest, pngio
from pixart.atomic import write_atomic
from pixart.checkpoints import fingerprint_state
from pixart.cli import UsageError, clean_errors, positive_int
from pixart.engine import Engine, generation_size
from pixart.modelspec import check_vae_source, load_model, read_spec
from pixart.prompts import read_prompt_set
from pixart.runtime import code_version, device_name, library_versions, pick_device, torch_dtype
from pixart.samplers import SamplerSpec, parse_sampler

log = logging.getLogger("pixart.generate")


@dataclass(frozen=True)
class Batch:
    index: int
    sample_ids: tuple
    size: tuple  # (gen_h, gen_w, out_h, out_w)


def plan_batches(samples: pd.DataFrame, sizes: dict, batch_size: int) -> list[Batch]:
    """Group samples by size (first-appearance order), chunk each group; independent of shards and resume."""
    if batch_size < 1:  # a negative one planned no batch at all: a cell of 0 images, written as complete
        raise ValueError(f"batch size {batch_size}: give a positive number of images per batch")
    groups: dict[tuple, list[str]] = {}
    for sample_id in samples["sample_id"]:
        groups.setdefault(sizes[sample_id], []).append(sample_id)
    batches = []
    for size, ids in groups.items():
        for start in range(0, len(ids), batch_size):
            batches.append(Batch(len(batches), tuple(ids[start:start + batch_size]), size))
    return batches


def shard_of(batches: list[Batch], shard: int, num_shards: int) -> list[Batch]:
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
    return [b for b in batches if b.index % num_shards == shard]


def cell_key(provenance: dict) -> str:
    return hashlib.sha256(json.dumps(provenance, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_table(args, prompts: list[str], device: torch.device):
    from pixart.embeddings import encode_prompts, encoder_identity, load_pointer, settings_key

    if args.embeddings:
        table = load_pointer(args.embeddings)
        return table, {"embeddings_key": table.meta["key"], "text_path": "cache"}
    from pixart.checkpoints import load_text_encoder

    tokenizer, encoder = load_text_encoder(args.text_encoder)
    table = encode_prompts(prompts, tokenizer, encoder, clean_caption=args.clean_caption == "true",
                           negative_prompt=args.negative_prompt, device=device, progress=False)
    # the key the cached path would give these states, so the cell key covers encoder, prompts and negative
    settings = {key: table.meta[key] for key in ("max_length", "clean_caption", "negative_prompt", "encoder_dtype",
                                                 "store_dtype")}
    key = settings_key(encoder_identity(args.text_encoder), prompts, settings)
    return table, {"embeddings_key": key, "text_path": "in-process"}


def output_sizes(samples: pd.DataFrame, engine: Engine, native: int, binning: bool) -> dict:
    sizes = {}
    for row in samples.itertuples():
        out_h = int(row.height) if pd.notna(row.height) else native
        out_w = int(row.width) if pd.notna(row.width) else native
        gen_h, gen_w = generation_size(engine.transformer, engine.vae_scale, out_h, out_w, binning)
        sizes[row.sample_id] = (gen_h, gen_w, out_h, out_w)
    return sizes


def run(args) -> dict:
    started = time.perf_counter()
    # every argument and input file is checked before a weight loads
    if not 0 <= args.shard < args.num_shards:
        raise UsageError(f"--shard {args.shard} is outside 0..{args.num_shards - 1} (--num-shards {args.num_shards})")
    if not args.embeddings and not args.text_encoder:
        raise UsageError("give --embeddings (cached T5 states) or --text-encoder (text path)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give the cell's folder")
    spec = read_spec(args.model_spec)
    check_vae_source(spec)
    sampler: SamplerSpec = parse_sampler(args.sampler)
    device = pick_device(args.device)
    dtype_name = args.dtype or spec["dtype"]
    samples = read_prompt_set(args.prompts)
    table, text_prov = load_table(args, list(dict.fromkeys(samples["prompt"])), device)
    loaded, vae = load_model(spec)
    engine = Engine(loaded.transformer, vae, table, null=args.uncond or spec["uncond"],
                    null_embedding=loaded.null_embedding, device=device, dtype=torch_dtype(dtype_name))
    native = loaded.transformer.config.sample_size * engine.vae_scale
    sizes = output_sizes(samples, engine, native, not args.no_binning)
    batches = plan_batches(samples, sizes, args.batch_size)
    mine = shard_of(batches, args.shard, args.num_shards)

    # under uncond: original the null caption is part of the model, so it is part of its fingerprint (and cell key)
    provenance = {
        "model": spec.get("name", spec["checkpoint"]), "model_fingerprint": loaded.fingerprint_for(engine.null),
        "vae_fingerprint": fingerprint_state(vae.state_dict()), "sampler": sampler.name, "steps": sampler.steps,
        "scheduler_config": json.dumps(sampler.scheduler_config(), sort_keys=True), "cfg": float(args.cfg),
        "uncond": engine.null, "dtype": dtype_name, "batch_size": args.batch_size,
        "resolution_binning": not args.no_binning, **text_prov,
        "transformer_config": _config_json(loaded.transformer), "vae_config": _config_json(vae),
    }
    key = cell_key(provenance)
    code, versions = code_version(), json.dumps(library_versions(), sort_keys=True)
    out.mkdir(parents=True, exist_ok=True)
    by_id = samples.set_index("sample_id")
    done_before, written, records = 0, 0, []
    todo = []
    for batch in mine:
        missing = [s for s in batch.sample_ids if not _valid(out / f"{s}.png", key, s, by_id, batch.size)]
        done_before += len(batch.sample_ids) - len(missing)
        if missing:
            todo.append((batch, set(missing)))

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo) * sampler.steps, desc=f"{provenance['model']} {sampler.label} cfg{args.cfg}",
               unit="step", disable=args.quiet)
    dev_name = device_name(device)
    with ThreadPoolExecutor(max_workers=2) as writer:
        pending = []
        for batch, missing in todo:
            t0 = time.perf_counter()
            rows = by_id.loc[list(batch.sample_ids)]
            gen_h, gen_w, out_h, out_w = batch.size
            latents = engine.denoise(list(rows["prompt"]), list(rows["seed"]), gen_h, gen_w, sampler,
                                     float(args.cfg), on_step=lambda: bar.update(1))
            images = engine.decode(latents, out_h, out_w)
            seconds = (time.perf_counter() - t0) / len(batch.sample_ids)
            for sample_id, image in zip(batch.sample_ids, images):
                if sample_id in missing:
                    meta = {"cell_key": key, "sample_id": sample_id, "seed": int(by_id.at[sample_id, "seed"]),
                            "prompt_sha": pngio.prompt_sha(by_id.at[sample_id, "prompt"]), "seconds": round(seconds, 4),
                            "device": dev_name, "batch_index": batch.index, "size": list(batch.size),
                            "code_version": code, "versions": versions}
                    pending.append(writer.submit(pngio.write_png, image, out / f"{sample_id}.png", meta))
                    written += 1
        for future in pending:
            future.result()
    bar.close()

    for batch in mine:
        for sample_id in batch.sample_ids:
            meta = pngio.read_meta(out / f"{sample_id}.png") or {}
            if meta.get("cell_key") != key:
                raise RuntimeError(f"{out / sample_id}.png is missing or invalid after generation")
            row = by_id.loc[sample_id]
            records.append({
                "sample_id": sample_id, "prompt_id": row["prompt_id"], "image_index": int(row["image_index"]),
                "prompt": row["prompt"], "seed": int(row["seed"]), "file": f"{sample_id}.png",
                "metadata": row.get("metadata", "{}"),
                "height": batch.size[2], "width": batch.size[3], "gen_height": batch.size[0],
                "gen_width": batch.size[1], "batch_index": batch.index, "seconds": meta["seconds"],
                "device": meta["device"], "cell_key": key,
                # each image's own code and libraries: a reused image keeps the versions that made it
                "code_version": meta.get("code_version", "unknown"), "versions": meta.get("versions", "unknown"),
            })
    older = sum(r["code_version"] != code for r in records)
    if older:
        log.warning("%d of %d images in %s were made by other code versions than %s and kept (their manifest rows "
                    "say which); delete the folder to regenerate them with this code", older, len(records), out, code)
    shard_manifest = pd.DataFrame.from_records(records)
    for name, value in {**provenance, "shard": args.shard, "num_shards": args.num_shards}.items():
        shard_manifest[name] = value
    shard_file = out / f"manifest.shard{args.shard}of{args.num_shards}.parquet"
    write_atomic(shard_file, lambda tmp: shard_manifest.to_parquet(tmp, index=False))

    elapsed = time.perf_counter() - started
    summary = {"images": len(records), "new": written, "reused": done_before, "seconds": round(elapsed, 2),
               "images_per_s": round(written / elapsed, 3) if written else 0.0, "manifest": str(shard_file)}
    print(f"generate: {provenance['model']} {sampler.label} cfg{args.cfg} shard {args.shard}/{args.num_shards}: "
          f"{written} new + {done_before} already done images in {elapsed:.1f}s "
          f"({summary['images_per_s']} images/s) → {out}")
    return summary


def _config_json(model) -> str:
    """The model's config without diffusers' bookkeeping keys (_diffusers_version, _name_or_path, …)."""
    return json.dumps({k: v for k, v in dict(model.config).items() if not k.startswith("_")}, sort_keys=True,
                      default=str)


def _valid(path: Path, key: str, sample_id: str, by_id, size: tuple) -> bool:
    meta = pngio.read_meta(path)
    if meta is None:
        return False
    ok = (meta.get("cell_key") == key and meta.get("sample_id") == sample_id
          and meta.get("seed") == int(by_id.at[sample_id, "seed"])
          and meta.get("prompt_sha") == pngio.prompt_sha(by_id.at[sample_id, "prompt"])
          and meta.get("size") == list(size))
    if not ok:
        log.warning("%s was made with other settings; regenerating it", path)
    return ok


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-spec", type=Path, required=True, help="model JSON (see pixart.modelspec)")
    p.add_argument("--prompts", type=Path, required=True, help="prompt-set parquet (pixart.prompts)")
    p.add_argument("--embeddings", type=Path, help="embedding pointer JSON (pixart.embeddings)")
    p.add_argument("--text-encoder", help="text path: hub id or pipeline folder, used when no --embeddings")
    p.add_argument("--clean-caption", choices=("true", "false"), default="false")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--sampler", default="dpm-solver:20")
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--uncond", choices=("diffusers", "original"), help="override the model's unconditional convention")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="override the model's dtype")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--no-binning", action="store_true", help="sample at the requested size, no aspect bins")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--num-shards", type=positive_int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--write-manifest", action="store_true",
                   help="also write the cell's manifest.parquet (pixart.manifest) when --num-shards is 1")
    return p


@clean_errors("pixart.generate")
def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    if args.write_manifest and args.num_shards != 1:
        raise UsageError("--write-manifest needs --num-shards 1 (merge shards with pixart.manifest)")
    run(args)
    if args.write_manifest:  # one shard is the whole cell: merge here, not in another process
        manifest.write(args.out, 1, args.prompts)


if __name__ == "__main__":
    main()
