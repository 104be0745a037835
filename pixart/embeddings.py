"""Cached T5 text embeddings: valid tokens only, 16-bit, ragged, content-addressed (DESIGN §3).

A table holds the unique prompts of a prompt set, the concatenated valid-token states [T, D] with offsets
[N+1], and the negative prompt's states (the `diffusers` unconditional convention). Generation pads a
batch only to its longest prompt, so no text encoder is loaded and no padding is stored.

`python -m pixart.embeddings --prompts P.parquet --text-encoder SRC --store DIR --out POINTER.json …`
computes the table once per (encoder, prompts, settings) and writes a pointer naming the store file; a
second request with the same key reuses the file without loading the encoder.
"""
import argparse
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pixart.atomic import write_atomic, write_text_atomic
from pixart.cli import clean_errors

log = logging.getLogger(__name__)
STORE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
FORMAT_VERSION = 1


class EmbeddingError(ValueError):
    pass


@dataclass
class EmbeddingTable:
    prompts: list[str]
    states: torch.Tensor          # [T, D] valid tokens of every prompt, concatenated
    offsets: torch.Tensor         # [N + 1] int64
    negative: torch.Tensor        # [L, D] valid tokens of the negative prompt
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self._row = {p: i for i, p in enumerate(self.prompts)}

    def row(self, prompt: str) -> int:
        try:
            return self._row[prompt]
        except KeyError:
            raise EmbeddingError(f"prompt not in the embedding table ({self.meta.get('key')}): {prompt[:80]!r}") from None

    def lengths(self, rows) -> list[int]:
        return [int(self.offsets[r + 1] - self.offsets[r]) for r in rows]

    def padded(self, rows, length: int, dtype=torch.float32, device="cpu"):
        """(embeds [B, length, D], mask [B, length]) for table rows, zero-padded on the right."""
        dim = self.states.shape[1]
        embeds = torch.zeros(len(rows), length, dim, dtype=dtype)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            a, b = int(self.offsets[r]), int(self.offsets[r + 1])
            embeds[i, : b - a] = self.states[a:b].to(dtype)
            mask[i, : b - a] = 1
        return embeds.to(device), mask.to(device)

    def save(self, path: Path):
        from safetensors.torch import save_file

        tensors = {"states": self.states.contiguous(), "offsets": self.offsets, "negative": self.negative.contiguous()}
        metadata = {"meta": json.dumps(self.meta), "prompts": json.dumps(self.prompts)}
        write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path: Path) -> "EmbeddingTable":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata()
            tensors = {k: fh.get_tensor(k) for k in ("states", "offsets", "negative")}
        return cls(json.loads(header["prompts"]), tensors["states"], tensors["offsets"], tensors["negative"],
                   json.loads(header["meta"]))


def settings_key(encoder_id: str, prompts: list[str], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps({"encoder": encoder_id, "settings": settings, "format": FORMAT_VERSION},
                                       sort_keys=True).encode())
    for p in prompts:
        digest.update(p.encode() + b"\0")
    return digest.hexdigest()[:20]


def encoder_identity(text_encoder: str, subfolder: str | None = "text_encoder",
                     tokenizer_subfolder: str | None = "tokenizer") -> str:
    """Identity of what turns a prompt into states: files_fingerprint of the T5 weights and of the tokenizer (it
    decides the token ids), the pipeline's subfolders when there are, else the source itself. A hub id is
    resolved to its cached snapshot first, so two repos with the same T5 share embeddings and a change elsewhere
    in the repo (the transformer, a README) does not recompute them."""
    from pixart.checkpoints import files_fingerprint, local_snapshot

    root = local_snapshot(text_encoder, subfolder)
    if root is None:
        return files_fingerprint(text_encoder)  # an uncached hub id: by id
    if not (subfolder and (root / subfolder).is_dir()):
        return files_fingerprint(str(root))  # T5 at the folder's root: the whole folder, its tokenizer included
    parts = [root / sub for sub in (subfolder, tokenizer_subfolder) if sub and (root / sub).is_dir()]
    return hashlib.sha256("|".join(files_fingerprint(str(p)) for p in parts).encode()).hexdigest()[:16]


def _encoding_pipeline(tokenizer, encoder):
    from diffusers import PixArtAlphaPipeline

    return PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=None, transformer=None, scheduler=None)


def check_clean_caption(clean_caption: bool):
    """diffusers silently turns clean_caption off without bs4/ftfy; we refuse instead."""
    if clean_caption:
        from diffusers.utils import is_bs4_available, is_ftfy_available

        if not (is_bs4_available() and is_ftfy_available()):
            raise EmbeddingError("clean_caption: true needs beautifulsoup4 and ftfy (pip install beautifulsoup4 ftfy)")


@torch.no_grad()
def encode_prompts(prompts: list[str], tokenizer, encoder, *, clean_caption: bool, max_length: int = 120,
                   negative_prompt: str = "", batch_size: int = 32, device="cpu",
                   store_dtype: str = "float16", progress: bool = True) -> EmbeddingTable:
    """T5 states exactly as PixArtAlphaPipeline.encode_prompt computes them, kept to the valid tokens."""
    from tqdm.auto import tqdm

    check_clean_caption(clean_caption)
    # diffusers logs every truncated batch with the whole padded text; we count and warn once instead.
    logging.getLogger("diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha").setLevel(logging.ERROR)
    pipe = _encoding_pipeline(tokenizer, encoder.to(device))
    dtype = STORE_DTYPES[store_dtype]
    too_long = [p for p in prompts if _token_count(pipe, p, clean_caption) > max_length]
    if too_long:
        log.warning("%d of %d prompts exceed %d T5 tokens and are truncated as upstream does (first: %r)",
                    len(too_long), len(prompts), max_length, too_long[0][:80])
    chunks, lengths = [], []
    for start in tqdm(range(0, len(prompts) + 1, batch_size), desc="T5", disable=not progress):
        batch = prompts[start:start + batch_size]
        if not batch:
            continue
        embeds, mask = pipe.encode_prompt(batch, do_classifier_free_guidance=False, clean_caption=clean_caption,
                                          max_sequence_length=max_length, device=device)[:2]
        for e, m in zip(embeds, mask):
            n = int(m.sum())
            if not bool(m[:n].all()):
                raise EmbeddingError("T5 attention mask is not a prefix; padding side must be right")
            chunks.append(_to_store(e[:n].float().cpu(), dtype))
            lengths.append(n)
    neg, neg_mask = pipe.encode_prompt(negative_prompt, do_classifier_free_guidance=False, clean_caption=clean_caption,
                                       max_sequence_length=max_length, device=device)[:2]
    negative = _to_store(neg[0, : int(neg_mask[0].sum())].float().cpu(), dtype)
    offsets = torch.tensor([0] + lengths, dtype=torch.long).cumsum(0)
    meta = {"n_prompts": len(prompts), "n_over_max_length": len(too_long), "max_length": max_length,
            "clean_caption": clean_caption, "negative_prompt": negative_prompt, "store_dtype": store_dtype,
            "encoder_dtype": str(encoder.dtype).removeprefix("torch."), "tokens": int(offsets[-1])}
    return EmbeddingTable(list(prompts), torch.cat(chunks), offsets, negative, meta)


def _token_count(pipe, prompt: str, clean_caption: bool) -> int:
    text = pipe._text_preprocessing(prompt, clean_caption=clean_caption)[0]
    return len(pipe.tokenizer(text, add_special_tokens=True).input_ids)


def _to_store(x: torch.Tensor, dtype) -> torch.Tensor:
    stored = x.to(dtype)
    if not torch.isfinite(stored).all():
        raise EmbeddingError(f"T5 states overflow {dtype}; use store_dtype bfloat16")
    return stored


@clean_errors("pixart.embeddings")
def main(argv=None):
    from pixart.checkpoints import load_text_encoder
    from pixart.runtime import pick_device, torch_dtype

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=Path, required=True, help="prompt-set parquet (pixart.prompts)")
    parser.add_argument("--text-encoder", required=True, help="hub id or folder (pipeline or T5 folder)")
    parser.add_argument("--subfolder", default="text_encoder")
    parser.add_argument("--tokenizer-subfolder", default="tokenizer")
    parser.add_argument("--store", type=Path, required=True, help="content-addressed store folder")
    parser.add_argument("--out", type=Path, required=True, help="pointer JSON to write")
    parser.add_argument("--clean-caption", choices=("true", "false"), required=True)
    parser.add_argument("--max-length", type=int, default=120)
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--encoder-dtype", default="float32")
    parser.add_argument("--store-dtype", choices=sorted(STORE_DTYPES), default="float16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    import pandas as pd

    prompts = list(dict.fromkeys(pd.read_parquet(args.prompts, columns=["prompt"])["prompt"]))
    settings = {"max_length": args.max_length, "clean_caption": args.clean_caption == "true",
                "negative_prompt": args.negative_prompt, "encoder_dtype": args.encoder_dtype,
                "store_dtype": args.store_dtype}
    encoder_id = encoder_identity(args.text_encoder, args.subfolder, args.tokenizer_subfolder)
    key = settings_key(encoder_id, prompts, settings)
    store_file = args.store / f"{key}.safetensors"
    reused = store_file.exists()
    if not reused:
        device = pick_device(args.device)
        tokenizer, encoder = load_text_encoder(args.text_encoder, args.subfolder, args.tokenizer_subfolder,
                                               dtype=torch_dtype(args.encoder_dtype))
        table = encode_prompts(prompts, tokenizer, encoder,
                               clean_caption=settings["clean_caption"], max_length=args.max_length,
                               negative_prompt=args.negative_prompt, batch_size=args.batch_size, device=device,
                               store_dtype=args.store_dtype)
        table.meta.update(key=key, encoder=args.text_encoder, encoder_fingerprint=encoder_id)
        table.save(store_file)
    meta = EmbeddingTable.load(store_file).meta
    write_text_atomic(args.out, json.dumps({"key": key, "file": os.path.relpath(store_file, args.out.parent),
                                            "n_prompts": len(prompts), "meta": meta}, indent=1))
    print(f"embeddings: {len(prompts)} prompts, {meta['tokens']} tokens, key {key} "
          f"({'reused' if reused else 'computed'}) → {args.out}")


def load_pointer(pointer: Path) -> EmbeddingTable:
    """The table an embeddings pointer (`python -m pixart.embeddings --out`) names."""
    try:
        info = json.loads(Path(pointer).read_text())
        file = info["file"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise EmbeddingError(f"{pointer}: not an embeddings pointer ({type(err).__name__}: {err}); give the JSON "
                             f"that `python -m pixart.embeddings --out` wrote") from None
    return EmbeddingTable.load(Path(pointer).parent / file)


if __name__ == "__main__":
    main()
