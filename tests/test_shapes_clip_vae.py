"""Training the shapes world's tiny CLIP and VAE: short runs on a stand-in captioned shapes folder.

The stand-in drawer follows the world's dataset format (PNG images + captions.jsonl with file/caption/label/
scene), so these tests do not depend on the world generator itself.
"""
import json
import math
import random
from pathlib import Path

import pytest
import torch

from evals.tiny import SHAPE_COLOURS

# One thread: two OpenMP threads on a busy 2-core runner spin against each other and run ~10× slower.
THREADS = 1
SHAPES = ("circle", "square", "triangle")
TEXTURES = ("plain", "striped", "dotted")


def _draw_object(draw, shape, colour, texture, cx, cy, r):
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = SHAPE_COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    # textures are white marks inside the object's box, clipped roughly to it: enough to be visible
    if texture == "striped":
        for y in range(cy - r + 2, cy + r, 4):
            draw.line((cx - r // 2, y, cx + r // 2, y), fill="white")
    elif texture == "dotted":
        for y in range(cy - r // 2, cy + r // 2 + 1, 4):
            for x in range(cx - r // 2, cx + r // 2 + 1, 4):
                draw.point((x, y), fill="white")


def _phrase(obj):
    words = [obj["size"] if obj["size"] != "medium" else "", obj["colour"],
             obj["texture"] if obj["texture"] != "plain" else "", obj["shape"]]
    text = " ".join(w for w in words if w)
    return ("an " if text[0] in "aeiou" else "a ") + text


def _relation(a, b):
    dx, dy = b["x"] - a["x"], b["y"] - a["y"]
    if abs(dx) >= abs(dy):
        return "on the left of" if dx > 0 else "on the right of"
    return "above" if dy > 0 else "below"


def draw_standin_shapes(out: Path, n: int, size: int = 64, seed: int = 0) -> Path:
    """`n` scenes of 1–3 coloured shapes (sizes, textures, a spatial relation for two) with captions."""
    from PIL import Image, ImageDraw

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        image = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(image)
        objects = []
        for _ in range(rng.choice((1, 2, 2, 3))):
            size_word = rng.choice(("small", "medium", "large"))
            r = {"small": size // 10, "medium": size // 7, "large": size // 5}[size_word]
            obj = {"shape": rng.choice(SHAPES), "colour": rng.choice(sorted(SHAPE_COLOURS)), "size": size_word,
                   "texture": rng.choice(TEXTURES), "x": rng.randint(r, size - r), "y": rng.randint(r, size - r)}
            _draw_object(draw, obj["shape"], obj["colour"], obj["texture"], obj["x"], obj["y"], r)
            objects.append(obj)
        if len(objects) == 2:
            caption = f"{_phrase(objects[0])} {_relation(*objects)} {_phrase(objects[1])}"
        else:
            caption = ", ".join(_phrase(o) for o in objects[:-1])
            caption = f"{caption} and {_phrase(objects[-1])}" if len(objects) > 1 else _phrase(objects[0])
        file = f"{i:05d}.png"
        image.save(out / file)
        lines.append(json.dumps({"file": file, "caption": caption, "label": len(objects), "scene": objects}))
    (out / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The trainers set torch's thread count for the process; later tests keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes32(tmp_path_factory):
    return draw_standin_shapes(tmp_path_factory.mktemp("shapes32"), n=320, size=32, seed=0)


def _state(path_or_model):
    state = torch.load(path_or_model, weights_only=True) if isinstance(path_or_model, (str, Path)) \
        else path_or_model.state_dict()
    return {k: v.clone() for k, v in state.items()}


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- CLIP -------------------------------------------------------------------------------------------------

def test_clip_training_lowers_loss_and_scores_matched_pairs_above_shuffled(shapes32, tmp_path):
    from evals.metrics.clip_score import load_clip
    from evals.shapes.train_clip import held_out_split, read_captions, train_clip
    from evals.tiny import TINY_CLIP_NAME, build_tiny_clip

    summary = train_clip(shapes32, tmp_path, steps=150, batch_size=32, seed=0, threads=THREADS, progress=False)
    assert summary["final_loss"] < summary["first_loss"] - 0.5
    assert summary["retrieval_top1"] > summary["retrieval_chance"]
    assert summary["clip_score_matched"] > summary["clip_score_shuffled"]

    # the files of build_tiny_clip, trained; the scorers' own loading path reads them
    untrained = build_tiny_clip(tmp_path / "untrained")
    assert summary["weights"] == str(tmp_path / Path(untrained["weights"]).name)
    config = f"{TINY_CLIP_NAME}.json"
    assert (tmp_path / config).read_text() == Path(untrained["config_dir"], config).read_text()
    scorer = load_clip("shapes", summary["weights"], model_name=TINY_CLIP_NAME, config_dir=str(tmp_path))
    assert _same_weights(_state(scorer.model), _state(summary["weights"]))
    records = read_captions(shapes32)
    _, held = held_out_split(len(records), seed=0)
    files = [shapes32 / records[i]["file"] for i in held.tolist()]
    captions = [records[i]["caption"] for i in held.tolist()]
    shuffled = captions[1:] + captions[:1]
    differ = [a != b for a, b in zip(captions, shuffled)]
    matched, mismatched = scorer.score(files, captions), scorer.score(files, shuffled)
    assert matched.mean() > mismatched[differ].mean() + 0.1
    assert abs(matched.mean() - summary["clip_score_matched"]) < 1e-3  # same preprocessing in training and scoring


def test_clip_same_seed_gives_same_weights(tmp_path):
    from evals.shapes.train_clip import train_clip

    data = draw_standin_shapes(tmp_path / "data", n=64, size=32)
    runs = [train_clip(data, tmp_path / name, steps=3, batch_size=16, seed=seed, threads=THREADS, progress=False)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    a, b, c = (_state(r["weights"]) for r in runs)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


def test_contrastive_loss_does_not_push_apart_pairs_with_the_same_caption():
    from evals.shapes.train_clip import caption_ids, contrastive_loss

    emb = torch.eye(3)[[0, 0, 1]]  # images 0 and 1 show the same caption, and match its text exactly
    ids = caption_ids(["a red circle", "a red circle", "a blue square"])
    logit_scale = torch.tensor(100.0).log()
    assert contrastive_loss(emb, emb, logit_scale, ids) < 1e-3
    # unmasked, the two duplicate rows (and columns) each pay log 2: 2/3 log 2 on average
    assert contrastive_loss(emb, emb, logit_scale, torch.arange(3)) == pytest.approx(2 / 3 * math.log(2), abs=1e-3)


def test_retrieval_counts_a_pick_with_the_true_caption_as_right():
    from evals.shapes.train_clip import retrieval_top1

    emb = torch.eye(4)
    assert retrieval_top1(emb, emb, ["a", "b", "c", "d"]) == (1.0, 0.25)
    top1, chance = retrieval_top1(emb, emb[[1, 0, 2, 3]], ["a", "a", "c", "d"])  # 0↔1 swapped, same caption
    assert top1 == 1.0 and chance == pytest.approx((0.5 + 0.5 + 0.25 + 0.25) / 4)


def test_clip_data_errors_name_the_file_and_the_layout(tmp_path):
    from evals.shapes.train_clip import CaptionsError, read_captions

    with pytest.raises(CaptionsError, match=r"captions\.jsonl not found.*one JSON object per line"):
        read_captions(tmp_path)
    (tmp_path / "captions.jsonl").write_text('{"file": "00000.png"}\n')
    with pytest.raises(CaptionsError, match=r"captions\.jsonl:1: missing caption"):
        read_captions(tmp_path)
    (tmp_path / "captions.jsonl").write_text('{"file": "00000.png", "caption": "a red circle"}\n')
    with pytest.raises(CaptionsError, match=r"00000\.png not found"):
        read_captions(tmp_path)
    from evals.shapes.train_clip import main
    with pytest.raises(SystemExit):  # refused before anything is written (it crashed after writing the weights)
        main(["--data", str(tmp_path), "--out", str(tmp_path / "clip"), "--steps", "0"])
    assert not (tmp_path / "clip").exists()


# --- VAE --------------------------------------------------------------------------------------------------

def test_vae_training_beats_the_untrained_reconstruction_and_loads_back(shapes32, tmp_path):
    from diffusers import AutoencoderKL

    from pixart.checkpoints import load_vae
    from pixart.train.vae import held_out_split, load_images, psnr, reconstruct, train_vae

    out = tmp_path / "vae"
    summary = train_vae(shapes32, out, steps=30, batch_size=8, seed=0, threads=THREADS, progress=False)
    assert summary["final_recon_loss"] < summary["first_recon_loss"]
    assert summary["psnr_held_out"] > summary["psnr_untrained"] + 3

    vae = load_vae(str(out), subfolder=None)
    assert _same_weights(_state(vae), _state(AutoencoderKL.from_pretrained(out)))
    assert vae.config.scaling_factor == pytest.approx(summary["scaling_factor"])
    images = load_images(shapes32)
    train, held = held_out_split(len(images), seed=0)
    assert psnr(images[held], reconstruct(vae, images[held])) == pytest.approx(summary["psnr_held_out"], abs=1e-3)
    with torch.no_grad():  # scaled posterior samples, as diffusion training draws them, have unit variance
        posterior = vae.encode(images[train]).latent_dist
        latents = posterior.sample(generator=torch.Generator().manual_seed(1)) * vae.config.scaling_factor
    assert latents.std().item() == pytest.approx(1, abs=0.05)


def test_vae_same_seed_gives_same_weights_and_the_same_folder(tmp_path):
    from diffusers import AutoencoderKL

    from pixart.checkpoints import files_fingerprint
    from pixart.train.vae import train_vae

    data = draw_standin_shapes(tmp_path / "data", n=24, size=32)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_vae(data, tmp_path / name, steps=2, batch_size=4, seed=seed, threads=THREADS, progress=False)
    a, b, c = (_state(AutoencoderKL.from_pretrained(tmp_path / name)) for name in "abc")
    assert _same_weights(a, b)
    assert not _same_weights(a, c)
    # the folder's identity, which the training features record: a retrained VAE must not invalidate them
    assert files_fingerprint(str(tmp_path / "a")) == files_fingerprint(str(tmp_path / "b"))
    assert files_fingerprint(str(tmp_path / "a")) != files_fingerprint(str(tmp_path / "c"))


def test_vae_image_errors_name_the_folder_and_the_file(tmp_path):
    from PIL import Image

    from pixart.train.vae import ImageFolderError, load_images

    with pytest.raises(ImageFolderError, match="no PNG images"):
        load_images(tmp_path)
    Image.new("RGB", (32, 32)).save(tmp_path / "00000.png")
    Image.new("RGB", (30, 32)).save(tmp_path / "00001.png")
    with pytest.raises(ImageFolderError, match=r"00001\.png is 30×32 px"):
        load_images(tmp_path)
