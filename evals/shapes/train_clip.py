"""Contrastive training of the shapes world's tiny open_clip CLIP on a captioned image folder.

python -m evals.shapes.train_clip --data DIR --out DIR [--steps N] [--batch-size B] [--lr LR] [--seed S] [--threads T]

DIR holds PNG images and `captions.jsonl`, one `{"file": "00000.png", "caption": "...", ...}` per line.
Writes what `evals.tiny.build_tiny_clip` writes, with trained weights: `{out}/tiny-clip-32.json` (the
`TINY_CLIP` open_clip config) and `{out}/tiny-clip-32.bin` (the state dict), so the scorers load it through
`evals.metrics.clip_score.load_clip(..., model_name="tiny-clip-32", config_dir=out)`; and
`{out}/tiny-clip-32.summary.json` with the training numbers.

The loss is CLIP's symmetric InfoNCE with its learnable temperature. The world repeats captions ("a small
yellow circle"), so other images of the same caption in a batch are masked out of the negatives instead of
being pushed apart. Images go through open_clip's eval preprocessing for this model (train and score then
see identical pixels) and are not augmented: a flip would swap "left" and "right" in the caption's truth.
TINY_CLIP's 16-px patches (a 4×4 grid at 64 px) were kept: 8-px patches cost 25% more time and, on the
shapes world, retrieved slightly worse and told swapped colours apart less often (better on textures).
"""
import argparse
import json
import math
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from evals.tiny import TINY_CLIP, TINY_CLIP_NAME
from pixart.atomic import write_atomic, write_text_atomic
from pixart.train import tiny_trainers
from pixart.train.tiny_trainers import warmup_cosine

RETRIEVAL_CANDIDATES = 32
MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps the temperature so the logits cannot blow up
# at least one retrieval pool of held-out captions
held_out_split = partial(tiny_trainers.held_out_split, minimum=RETRIEVAL_CANDIDATES)


class CaptionsError(ValueError):
    pass


def read_captions(data: Path) -> list[dict]:
    """The `captions.jsonl` records of a dataset folder, each checked for `file` and `caption`."""
    data = Path(data)
    index = data / "captions.jsonl"
    layout = (f"expected {data}/captions.jsonl with one JSON object per line, "
              '{"file": "00000.png", "caption": "a red circle"}, next to the PNG images it names')
    if not index.is_file():
        raise CaptionsError(f"{index} not found: {layout}")
    records = []
    for number, line in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CaptionsError(f"{index}:{number}: not JSON ({err.msg}); {layout}") from None
        missing = [key for key in ("file", "caption") if not record.get(key)]
        if missing:
            raise CaptionsError(f"{index}:{number}: missing {', '.join(missing)}; {layout}")
        if not (data / record["file"]).is_file():
            raise CaptionsError(f"{index}:{number}: image {data / record['file']} not found; {layout}")
        records.append(record)
    if not records:
        raise CaptionsError(f"{index} lists no images; {layout}")
    return records


def load_pairs(data: Path, preprocess, tokenizer) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Preprocessed images, caption tokens and caption texts of a dataset folder, in file order."""
    from PIL import Image

    records = read_captions(data)
    pixels = torch.stack([preprocess(Image.open(Path(data) / r["file"]).convert("RGB")) for r in records])
    captions = [r["caption"] for r in records]
    return pixels, tokenizer(captions), captions


def caption_ids(captions: list[str]) -> torch.Tensor:
    """One integer per distinct caption: equal ids mark pairs that are not each other's negatives."""
    ids = {}
    return torch.tensor([ids.setdefault(c, len(ids)) for c in captions])


def contrastive_loss(image_emb, text_emb, logit_scale, ids) -> torch.Tensor:
    """Symmetric InfoNCE over a batch; other pairs with the same caption are dropped from the negatives."""
    image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    logits = logit_scale.exp() * image_emb @ text_emb.T
    same = ids[:, None] == ids[None, :]
    logits = logits.masked_fill(same & ~torch.eye(len(ids), dtype=torch.bool), float("-inf"))
    target = torch.arange(len(ids))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def embed(model, pixels, tokens, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image and text embeddings, as the CLIP scorer computes them."""
    images, texts = [], []
    for start in range(0, len(pixels), batch_size):
        images.append(F.normalize(model.encode_image(pixels[start:start + batch_size]).float(), dim=-1))
        texts.append(F.normalize(model.encode_text(tokens[start:start + batch_size]).float(), dim=-1))
    return torch.cat(images), torch.cat(texts)


def retrieval_top1(image_emb, text_emb, captions, candidates: int = RETRIEVAL_CANDIDATES) -> tuple[float, float]:
    """Image→text top-1 accuracy among groups of `candidates` pairs, and its chance level.

    A pick counts as right when its caption equals the true one (groups may repeat a caption); chance is
    then the mean share of the true caption among the group's captions."""
    hits, chance, n = 0.0, 0.0, 0
    for start in range(0, len(captions), candidates):
        group = captions[start:start + candidates]
        if len(group) < 2:
            continue
        picks = (image_emb[start:start + candidates] @ text_emb[start:start + candidates].T).argmax(dim=1)
        hits += sum(group[p] == c for p, c in zip(picks.tolist(), group))
        chance += sum(group.count(c) / len(group) for c in group)
        n += len(group)
    return hits / n, chance / n


def matched_and_shuffled(image_emb, text_emb, captions) -> tuple[float, float]:
    """Mean CLIP score (cosine) of matched pairs, and of pairs shifted by one where the captions differ."""
    matched = (image_emb * text_emb).sum(-1).mean().item()
    shifted = torch.roll(torch.arange(len(captions)), 1)
    differ = torch.tensor([captions[i] != captions[j] for i, j in enumerate(shifted.tolist())])
    shuffled = (image_emb * text_emb[shifted]).sum(-1)[differ].mean().item()
    return matched, shuffled


def evaluate(model, pixels, tokens, captions) -> dict:
    """Held-out retrieval and matched/shuffled CLIP scores of the model in eval mode."""
    model.eval()
    image_emb, text_emb = embed(model, pixels, tokens)
    top1, chance = retrieval_top1(image_emb, text_emb, captions)
    matched, shuffled = matched_and_shuffled(image_emb, text_emb, captions)
    return {"retrieval_top1": top1, "retrieval_chance": chance,
            "retrieval_candidates": min(RETRIEVAL_CANDIDATES, len(captions)), "clip_score_matched": matched,
            "clip_score_shuffled": shuffled, "n_held_out": len(captions)}


def make_optimizer(model, lr: float, weight_decay: float = 0.1):
    """AdamW with weight decay on matrices only (CLIP's rule: no decay on gains, biases, temperature)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.98), eps=1e-6)


def register_config(out: Path) -> Path:
    """Write the open_clip config `{out}/tiny-clip-32.json` and register it, so `create_model` finds the name."""
    import open_clip

    path = Path(out) / f"{TINY_CLIP_NAME}.json"
    write_text_atomic(path, json.dumps(TINY_CLIP, indent=1))
    open_clip.add_model_config(str(path))
    return path


def train_clip(data: Path, out: Path, steps: int = 600, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
               threads: int = 2, progress: bool = True) -> dict:
    """Train the shapes CLIP on `data`, write its config and weights under `out`, return the summary."""
    import open_clip
    from tqdm.auto import tqdm

    torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = register_config(out)
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_NAME, pretrained=None)
    pixels, tokens, captions = load_pairs(data, preprocess, open_clip.get_tokenizer(TINY_CLIP_NAME))
    if len(captions) < 4:
        raise CaptionsError(f"{Path(data) / 'captions.jsonl'} lists {len(captions)} images: training needs at "
                            f"least 4 (a tenth, at least {RETRIEVAL_CANDIDATES} and at most half, is held out)")
    ids = caption_ids(captions)
    train, held = held_out_split(len(captions), seed)
    held_captions = [captions[i] for i in held.tolist()]
    optimizer = make_optimizer(model, lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
    batches = torch.Generator().manual_seed(seed)
    order, cursor, losses = torch.randperm(len(train), generator=batches), 0, []
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(steps), desc="shapes CLIP", disable=not progress)
    for _ in bar:
        if cursor + batch_size > len(order):  # a new epoch: reshuffle rather than train on a short batch
            order, cursor = torch.randperm(len(train), generator=batches), 0
        batch = train[order[cursor:cursor + batch_size]]
        cursor += batch_size
        loss = contrastive_loss(model.encode_image(pixels[batch]), model.encode_text(tokens[batch]),
                                model.logit_scale, ids[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - start
    weights = out / f"{TINY_CLIP_NAME}.bin"
    write_atomic(weights, lambda tmp: torch.save(model.state_dict(), tmp))
    summary = {"model_name": TINY_CLIP_NAME, "config": str(config), "weights": str(weights),
               "config_dir": str(out), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
               "n_train": len(train), "first_loss": losses[0] if losses else None,
               "final_loss": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
               "train_seconds": seconds, **evaluate(model, pixels[held], tokens[held], held_captions)}
    summary_path = out / f"{TINY_CLIP_NAME}.summary.json"
    write_text_atomic(summary_path, json.dumps(summary, indent=1))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with PNG images and captions.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="folder for the config, weights and summary")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1")
    s = train_clip(args.data, args.out, args.steps, args.batch_size, args.lr, args.seed, args.threads)
    print(f"shapes CLIP: {s['steps']} steps, loss {s['first_loss']:.3f} → {s['final_loss']:.3f}, "
          f"{s['train_seconds']:.0f} s; held-out ({s['n_held_out']}) image→text top-1 among "
          f"{s['retrieval_candidates']}: {s['retrieval_top1']:.1%} (chance {s['retrieval_chance']:.1%}); CLIP score "
          f"matched {s['clip_score_matched']:.3f} vs shuffled {s['clip_score_shuffled']:.3f} → {s['weights']}")


if __name__ == "__main__":
    main()
