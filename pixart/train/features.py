"""Offline VAE and T5 features for training (reference §3, upstream `tools/extract_features.py`).

`python -m pixart.train.features --data DIR --out DIR --vae SRC --text-encoder SRC [--resolution 256]
 [--multiscale] [--batch-size 16] [--max-length 120] [--dtype float32] [--store-dtype float16] [--discard-stale]`
writes:
  OUT/settings.json   what the features depend on (VAE/T5 fingerprints, resolution, multiscale, …);
                      a rerun with other settings into the same folder is refused, or with --discard-stale
                      (the DAG's) deletes the old features and extracts anew
  OUT/vae/ab/<image sha256>.safetensors    "moments" [2C, h, w] = concat(posterior mean, posterior std)
  OUT/t5/cd/<caption sha256>.safetensors   "states" [L, D], valid tokens only (padded at load time)
  OUT/index.parquet   item_id, file, caption, label (-1 = none), height, width (original), bucket, vae, t5, meta
  OUT/report.json     the scan report (skipped records by reason, with the first names) and this run's counts
Single-scale resizes the short side to R and center-crops R×R; multi-scale resizes straight to the nearest
bucket's (h, w), with the slight distortion upstream has. Per-item files are written atomically and named by
content, so a rerun encodes only what is missing (and loads the T5 only if a caption is missing).
"""
import argparse
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixart.atomic import write_atomic, write_text_atomic
from pixart.cli import clean_errors, positive_int
from pixart.embeddings import STORE_DTYPES
from pixart.runtime import DTYPES
from pixart.train.buckets import MAX_RATIO, buckets_for, nearest_bucket
from pixart.train.data import (INDEX_FILE, REPORT_FILE, SETTINGS_FILE, ImageItem, n_skipped, note_skip, open_image,
                               scan_dataset)

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
TEXT_CHUNK = 8  # T5 batches per resume checkpoint


class FeatureError(ValueError):
    pass


def weights_fingerprint(source: str, subfolder: str | None) -> str:
    """files_fingerprint of a component's folder: the local one, or the subfolder of a hub id's cached snapshot (not
    the whole snapshot, which changes whenever another part of the repo is cached); an uncached hub id by id."""
    from pixart.checkpoints import files_fingerprint, local_snapshot

    root = local_snapshot(source, subfolder)
    if root is None:
        return files_fingerprint(source)
    return files_fingerprint(str(root / subfolder if subfolder else root))


def preprocess(image: Image.Image, size: tuple[int, int], center_crop: bool) -> torch.Tensor:
    """[3, h, w] in [-1, 1]: short side to the crop size + center crop (single-scale), or a straight resize."""
    height, width = size
    if center_crop:
        # torchvision Resize(int) semantics: short side = size, long side truncated, then CenterCrop.
        short, long = sorted((image.width, image.height))
        new_long = int(height * long / short)
        new_w, new_h = (height, new_long) if image.width <= image.height else (new_long, height)
        image = image.resize((new_w, new_h), Image.BILINEAR)
        top, left = int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))
        image = image.crop((left, top, left + width, top + height))
    else:
        image = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@torch.no_grad()
def encode_images(vae, pixels: torch.Tensor) -> torch.Tensor:
    """[B, 2C, h, w] = concat(posterior mean, posterior std) of a [B, 3, H, W] batch in [-1, 1]."""
    posterior = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    return torch.cat([posterior.mean, posterior.std], dim=1).float().cpu()


def _save_atomic(tensors: dict, path: Path):
    from safetensors.torch import save_file

    write_atomic(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp)))


def caption_key(caption: str) -> str:
    """Content name of a caption's T5 states."""
    return hashlib.sha256(caption.encode()).hexdigest()[:24]


def vae_relpath(digest: str) -> str:
    """Path, under the features folder, of the VAE moments of the image with this digest."""
    return f"vae/{digest[:2]}/{digest}.safetensors"


def t5_relpath(caption: str) -> str:
    """Path, under the features folder, of a caption's T5 states."""
    key = caption_key(caption)
    return f"t5/{key[:2]}/{key}.safetensors"


def _check_settings(out: Path, settings: dict, discard_stale: bool):
    """Record the settings in a new folder; in a used one, refuse other settings or, with `discard_stale`, delete
    the features made under them (per-item files are named by content alone, so they would be reused as if new)."""
    path = out / SETTINGS_FILE
    if path.is_file():
        old = {k: v for k, v in json.loads(path.read_text()).items() if k != "sources"}
        new = {k: v for k, v in settings.items() if k != "sources"}
        diffs = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
        if not diffs:
            return
        if not discard_stale or not {"format", "vae_fingerprint"} <= old.keys():  # only a features folder's
            raise FeatureError(f"{path} records other settings (old, new): {diffs}; extract into a new --out "
                               f"folder, delete {out} to redo it, or pass --discard-stale")
        _discard_features(out)
        print(f"discarded the stale features in {out}: settings (old, new) {diffs}", flush=True)
    write_text_atomic(path, json.dumps(settings, indent=1))


def _discard_features(out: Path):
    """Delete what `extract` writes into `out`, and nothing else: the index first (a folder without it is not
    trained on), the settings last (a run killed in between discards again). A file that cannot be deleted
    stops the run rather than be reused as new."""
    (out / INDEX_FILE).unlink(missing_ok=True)
    for folder in ("vae", "t5"):
        if (out / folder).exists():
            shutil.rmtree(out / folder)
    for name in (REPORT_FILE, SETTINGS_FILE):
        (out / name).unlink(missing_ok=True)


def _extract_vae(vae, out: Path, todo: list[tuple[ImageItem, tuple[int, int]]], *, center_crop: bool,
                 batch_size: int, store_dtype, progress: bool) -> int:
    from tqdm.auto import tqdm

    by_size: dict[tuple[int, int], list[ImageItem]] = {}
    for item, size in todo:
        by_size.setdefault(size, []).append(item)
    with tqdm(total=len(todo), desc="VAE", disable=not (progress and todo)) as bar:
        for size, group in sorted(by_size.items()):
            for start in range(0, len(group), batch_size):
                batch = group[start:start + batch_size]
                pixels = torch.stack([preprocess(open_image(item), size, center_crop) for item in batch])
                for item, moments in zip(batch, encode_images(vae, pixels)):
                    _save_atomic({"moments": moments.to(store_dtype)}, out / vae_relpath(item.digest))
                bar.update(len(batch))
    return len(todo)


def _extract_text(tokenizer, encoder, out: Path, todo: list[ImageItem], *, clean_caption: bool, max_length: int,
                  batch_size: int, device, store_dtype: str, progress: bool) -> int:
    from tqdm.auto import tqdm

    from pixart.embeddings import encode_prompts

    captions = list(dict.fromkeys(item.caption for item in todo))
    chunk = batch_size * TEXT_CHUNK
    with tqdm(total=len(captions), desc="T5", disable=not progress) as bar:
        for start in range(0, len(captions), chunk):
            table = encode_prompts(captions[start:start + chunk], tokenizer, encoder, clean_caption=clean_caption,
                                   max_length=max_length, batch_size=batch_size, device=device,
                                   store_dtype=store_dtype, progress=False)
            for row, caption in enumerate(table.prompts):
                a, b = int(table.offsets[row]), int(table.offsets[row + 1])
                _save_atomic({"states": table.states[a:b]}, out / t5_relpath(caption))
            bar.update(len(table.prompts))
    return len(captions)


def extract(data, out, vae_source: str, text_encoder_source: str, *, resolution: int = 256,
            multiscale: bool = False, batch_size: int = 16, max_length: int = 120, clean_caption: bool = True,
            dtype: str = "float32", store_dtype: str = "float16", device: str = "auto", patch_size: int = 2,
            vae_subfolder: str = "vae", text_encoder_subfolder: str = "text_encoder",
            tokenizer_subfolder: str = "tokenizer", progress: bool = True, discard_stale: bool = False) -> dict:
    """Extract the features of a dataset folder into `out` (resuming; `discard_stale`: see _check_settings);
    returns this run's counts."""
    from pixart.checkpoints import load_text_encoder, load_vae, local_snapshot
    from pixart.embeddings import encoder_identity
    from pixart.runtime import pick_device, torch_dtype

    started = time.time()
    out = Path(out)
    if store_dtype not in STORE_DTYPES:
        raise FeatureError(f"store dtype {store_dtype!r}: use one of {sorted(STORE_DTYPES)}")
    items, report = scan_dataset(data)
    device = pick_device(device)
    vae = load_vae(vae_source, vae_subfolder).to(device)
    if torch_dtype(dtype) != vae.dtype:
        vae = vae.to(torch_dtype(dtype))
    multiple = 2 ** (len(vae.config.block_out_channels) - 1) * patch_size
    if resolution % multiple:
        raise FeatureError(f"--resolution {resolution} must be a multiple of {multiple} "
                           f"(VAE downsampling × patch size {patch_size})")
    tokenizer_and_encoder = None
    if local_snapshot(text_encoder_source, text_encoder_subfolder) is None:
        # not cached: load (download) it now, or its identity would be its id here and its files on the next run,
        # which would count as another T5
        tokenizer_and_encoder = load_text_encoder(text_encoder_source, text_encoder_subfolder, tokenizer_subfolder,
                                                  dtype=torch_dtype(dtype))
    settings = {"format": FORMAT_VERSION, "resolution": resolution, "multiscale": multiscale, "multiple": multiple,
                "max_length": max_length, "clean_caption": clean_caption, "dtype": dtype, "store_dtype": store_dtype,
                "scaling_factor": float(vae.config.scaling_factor),
                "vae_fingerprint": weights_fingerprint(vae_source, vae_subfolder),
                # the weights and the tokenizer, as the embeddings store keys them (a new tokenizer: new states)
                "text_encoder_fingerprint": encoder_identity(text_encoder_source, text_encoder_subfolder,
                                                             tokenizer_subfolder),
                "sources": {"vae": str(vae_source), "text_encoder": str(text_encoder_source)}}
    _check_settings(out, settings, discard_stale)

    table = buckets_for(resolution, multiple) if multiscale else None
    kept, sizes, buckets = [], {}, {}
    for item in items:
        if multiscale and max(item.height / item.width, item.width / item.height) > MAX_RATIO:
            # Upstream drops h/w > 4 only; the widest bucket would distort w/h > 4 just as much, so both go.
            note_skip(report, "extreme_aspect", item.file)
            continue
        key = nearest_bucket(item.height, item.width, table) if multiscale else "1.0"
        kept.append(item)
        buckets[item.item_id] = key
        sizes[item.digest] = tuple(table[key]) if multiscale else (resolution, resolution)
    report["n_usable"] = len(kept)

    vae_todo = {item.digest: item for item in kept if not (out / vae_relpath(item.digest)).is_file()}
    n_images = _extract_vae(vae, out, [(item, sizes[d]) for d, item in vae_todo.items()], center_crop=not multiscale,
                            batch_size=batch_size, store_dtype=STORE_DTYPES[store_dtype], progress=progress)
    text_todo = [item for item in kept if not (out / t5_relpath(item.caption)).is_file()]
    n_captions = 0
    if text_todo:
        tokenizer, encoder = tokenizer_and_encoder or load_text_encoder(
            text_encoder_source, text_encoder_subfolder, tokenizer_subfolder, dtype=torch_dtype(dtype))
        n_captions = _extract_text(tokenizer, encoder, out, text_todo,
                                   clean_caption=clean_caption, max_length=max_length, batch_size=batch_size,
                                   device=device, store_dtype=store_dtype, progress=progress)
    _write_index(out, kept, buckets)
    counts = {"n_items": len(kept), "n_images_encoded": n_images, "n_captions_encoded": n_captions,
              "n_images_reused": len({i.digest for i in kept}) - n_images,
              "n_captions_reused": len({i.caption for i in kept}) - n_captions,
              "n_skipped": n_skipped(report), "seconds": round(time.time() - started, 2)}
    write_text_atomic(out / REPORT_FILE, json.dumps({**report, "run": counts}, indent=1))
    return counts


def _write_index(out: Path, items: list[ImageItem], buckets: dict[str, str]):
    import pandas as pd

    rows = [{"item_id": i.item_id, "file": i.file, "caption": i.caption, "label": -1 if i.label is None else i.label,
             "height": i.height, "width": i.width, "bucket": buckets[i.item_id], "vae": vae_relpath(i.digest),
             "t5": t5_relpath(i.caption), "meta": json.dumps(i.meta)} for i in items]
    write_atomic(out / INDEX_FILE, lambda tmp: pd.DataFrame(rows).to_parquet(tmp, index=False))


@clean_errors("pixart.train.features")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (see pixart.train.data)")
    parser.add_argument("--out", type=Path, required=True, help="features folder (created; reruns resume)")
    parser.add_argument("--vae", required=True, help="hub id, pipeline folder or VAE folder")
    parser.add_argument("--vae-subfolder", default="vae", help="'' for a VAE folder")
    parser.add_argument("--text-encoder", required=True, help="hub id, pipeline folder or T5 folder")
    parser.add_argument("--text-encoder-subfolder", default="text_encoder")
    parser.add_argument("--tokenizer-subfolder", default="tokenizer")
    parser.add_argument("--resolution", type=positive_int, default=256)
    parser.add_argument("--multiscale", action="store_true", help="resize to the nearest aspect-ratio bucket")
    parser.add_argument("--patch-size", type=positive_int, default=2,
                        help="transformer patch size (bucket sides' multiple)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--max-length", type=positive_int, default=120)
    parser.add_argument("--clean-caption", choices=("true", "false"), default="true",
                        help="DeepFloyd-IF caption cleaning, as upstream extraction does")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="encoders' compute dtype (upstream: bf16 T5)")
    parser.add_argument("--store-dtype", choices=sorted(STORE_DTYPES), default="float16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--discard-stale", action="store_true",
                        help="when --out holds features made with other settings (another VAE or T5, resolution, "
                             "…), delete them and extract anew instead of stopping (the DAG passes it: a rerun of "
                             "its features job that finds other settings extracts them anew)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    counts = extract(args.data, args.out, args.vae, args.text_encoder, resolution=args.resolution,
                     multiscale=args.multiscale, batch_size=args.batch_size, max_length=args.max_length,
                     clean_caption=args.clean_caption == "true", dtype=args.dtype, store_dtype=args.store_dtype,
                     device=args.device, patch_size=args.patch_size, vae_subfolder=args.vae_subfolder or None,
                     text_encoder_subfolder=args.text_encoder_subfolder,
                     tokenizer_subfolder=args.tokenizer_subfolder, discard_stale=args.discard_stale)
    print(f"features: {counts['n_items']} items ({counts['n_images_encoded']} images and "
          f"{counts['n_captions_encoded']} captions encoded, {counts['n_images_reused']} and "
          f"{counts['n_captions_reused']} reused), {counts['n_skipped']} records skipped as unusable "
          f"(see {args.out / REPORT_FILE}), {counts['seconds']:.1f} s → {args.out}")


if __name__ == "__main__":
    main()
