import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from pixart.train.buckets import (ASPECT_RATIO_256, ASPECT_RATIO_512, ASPECT_RATIO_1024, AspectRatioBatchSampler,
                                  assign_buckets, buckets_for, nearest_bucket)
from pixart.train.data import DatasetError, LatentDataset, scan_dataset

EXTRA_KEYS = {"0.26", "0.27", "2.89", "3.11", "3.62", "3.75", "3.88"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _png(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _jsonl_dataset(root: Path) -> Path:
    """6 good images (4 landscape 64×48, 2 portrait 48×64); a truncated image, an empty caption, a missing file,
    a bad line and a duplicate."""
    (root / "img").mkdir(parents=True)
    lines = []
    for i in range(6):
        w, h = (64, 48) if i < 4 else (48, 64)
        (root / f"img/{i}.png").write_bytes(_png(w, h, i))
        lines.append(json.dumps({"file": f"img/{i}.png", "caption": f"a red circle number {i}", "label": i % 3,
                                 "source": "test"}))
    (root / "img/corrupt.png").write_bytes(_png(64, 48, 99)[:300])
    (root / "img/empty.png").write_bytes(_png(64, 48, 98))
    lines += [json.dumps({"file": "img/corrupt.png", "caption": "a corrupt image"}),
              json.dumps({"file": "img/empty.png", "caption": "   "}),
              json.dumps({"file": "img/missing.png", "caption": "no such file"}),
              "{not json",
              json.dumps({"file": "img/0.png", "caption": "the same image again"})]
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------- buckets

def test_1024_table_has_40_buckets_of_about_one_megapixel():
    assert len(ASPECT_RATIO_1024) == 40
    assert list(ASPECT_RATIO_1024)[0] == "0.25" and list(ASPECT_RATIO_1024)[-1] == "4.0"
    for key, (h, w) in ASPECT_RATIO_1024.items():
        assert h % 64 == 0 and w % 64 == 0
        assert 0.9 <= h * w / 1024**2 <= 1.0, key  # "≈1 MPix": upstream sizes span 0.90–1.00 of 1024²
        assert abs(h / w - float(key)) <= 0.0051, key


def test_tables_match_diffusers_bin_tables_on_shared_keys():
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (ASPECT_RATIO_256_BIN, ASPECT_RATIO_512_BIN,
                                                                       ASPECT_RATIO_1024_BIN)

    for ours, theirs in ((ASPECT_RATIO_1024, ASPECT_RATIO_1024_BIN), (ASPECT_RATIO_512, ASPECT_RATIO_512_BIN),
                         (ASPECT_RATIO_256, ASPECT_RATIO_256_BIN)):
        assert set(ours) - set(theirs) == EXTRA_KEYS and set(theirs) <= set(ours)
        assert all(ours[key] == theirs[key] for key in theirs)


def test_buckets_for_scales_and_rounds():
    assert buckets_for(1024, 64) == ASPECT_RATIO_1024
    assert buckets_for(512, 16) == ASPECT_RATIO_512
    assert buckets_for(256, 16) == ASPECT_RATIO_256
    tiny = buckets_for(64, 8)
    assert set(tiny) == set(ASPECT_RATIO_1024) and tiny["1.0"] == [64, 64]
    assert all(h % 8 == 0 and w % 8 == 0 and h >= 8 and w >= 8 for h, w in tiny.values())


def test_nearest_bucket_and_extreme_ratios():
    assert nearest_bucket(1000, 1000) == "1.0"
    assert nearest_bucket(512, 2048) == "0.25" and nearest_bucket(100, 1000) == "0.25"
    assert nearest_bucket(1080, 1920, ASPECT_RATIO_512) == "0.57"
    assert assign_buckets([(100, 100), (500, 100), (100, 401), (400, 100)]) == ["1.0", None, None, "4.0"]


def _sizes(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(100, 400)), int(rng.integers(100, 400))) for _ in range(n)] + [(2000, 100)]


def test_batch_sampler_single_bucket_deterministic_per_epoch():
    sizes = _sizes()
    sampler = AspectRatioBatchSampler(sizes, 4, table=ASPECT_RATIO_256, seed=3)
    assert sampler.n_dropped == 1
    first = list(sampler)
    assert first == list(AspectRatioBatchSampler(sizes, 4, table=ASPECT_RATIO_256, seed=3))
    assert len(first) == len(sampler)
    for batch in first:
        assert len({sampler.keys[i] for i in batch}) == 1 and 1 <= len(batch) <= 4
    assert sorted(i for b in first for i in b) == list(range(len(sizes) - 1))
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_batch_sampler_shards_by_rank():
    keys = ["1.0"] * 23 + ["0.5"] * 10 + ["2.0"] * 7
    for drop_last in (False, True):
        shards = [list(AspectRatioBatchSampler(keys, 3, seed=1, rank=r, world_size=3, drop_last=drop_last))
                  for r in range(3)]
        assert len({len(s) for s in shards}) == 1
        assert all(len(s) == len(AspectRatioBatchSampler(keys, 3, rank=0, world_size=3, drop_last=drop_last))
                   for s in shards)
        seen = [i for s in shards for b in s for i in b]
        if drop_last:
            assert len(seen) == len(set(seen)) and all(len(b) == 3 for s in shards for b in s)
        else:
            assert set(seen) == set(range(len(keys)))
    with pytest.raises(ValueError, match="table="):
        AspectRatioBatchSampler([(10, 10)], 2)


# ---------------------------------------------------------------- scanning

def test_scan_jsonl_counts_and_names_every_skip(tmp_path):
    items, report = scan_dataset(_jsonl_dataset(tmp_path / "data"))
    assert len(items) == 6 and report["n_usable"] == 6 and report["n_records"] == 11
    skipped = {r: e["count"] for r, e in report["skipped"].items()}
    assert skipped == {"bad_record": 1, "duplicate": 1, "missing_image": 1, "missing_caption": 0, "empty_caption": 1,
                       "corrupt_image": 1, "extreme_aspect": 0}
    assert report["skipped"]["corrupt_image"]["first"] == ["img/corrupt.png"]
    assert report["skipped"]["bad_record"]["first"][0].startswith("captions.jsonl:10")
    assert (items[0].height, items[0].width, items[0].label, items[0].meta) == (48, 64, 0, {"source": "test"})


def test_scan_sidecar_and_webdataset(tmp_path):
    side = tmp_path / "side"
    (side / "sub").mkdir(parents=True)
    (side / "sub/a.png").write_bytes(_png(16, 16, 0))
    (side / "sub/a.txt").write_text("a caption\n")
    (side / "b.png").write_bytes(_png(16, 16, 1))
    (side / "c.txt").write_text("orphan caption")
    (side / "d.png").write_bytes(_png(16, 16, 2))
    (side / "d.txt").write_bytes(b"caf\xe9 latin-1")
    items, report = scan_dataset(side)
    assert [(i.item_id, i.caption) for i in items] == [("sub/a.png", "a caption")]
    assert report["skipped"]["missing_caption"]["first"] == ["b.png"]
    assert report["skipped"]["missing_image"]["first"] == ["c.txt"]
    assert report["skipped"]["bad_record"]["first"][0].startswith("d.png (caption")

    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "000.tar", "w") as tar:
        for name, data in [("k0.png", _png(16, 8, 0)), ("k0.txt", b"first"), ("k1.png", _png(8, 16, 1)),
                           ("k1.json", json.dumps({"caption": "second", "label": 2, "url": "x"}).encode()),
                           ("k2.png", _png(8, 8, 2))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    items, report = scan_dataset(shards)
    assert report["layout"] == "webdataset"
    assert [(i.item_id, i.caption, i.label, i.height, i.meta) for i in items] == [
        ("000.tar/k0", "first", None, 8, {}), ("000.tar/k1", "second", 2, 16, {"url": "x"})]
    assert report["skipped"]["missing_caption"]["count"] == 1
    from pixart.train.data import open_image

    assert open_image(items[1]).size == (8, 16)


def test_bad_shards_and_records_are_counted_not_fatal(tmp_path):
    """A junk or truncated shard crashed the scan without naming it; a caption holding U+2028 split its record
    (str.splitlines); a non-UTF-8 tar .json and a null "file" crashed it; "sub/../x.png" was a second item."""
    shards = tmp_path / "shards"
    shards.mkdir()

    def shard(name, members):
        with tarfile.open(shards / name, "w") as tar:
            for member, data in members:
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    shard("a.tar", [("k0.png", _png(16, 8, 0)), ("k0.txt", b"first"), ("k1.png", _png(8, 8, 1)),
                    ("k1.json", b'{"caption": "caf\xe9"}')])
    (shards / "b.tar").write_bytes(b"not a tar at all" * 64)
    shard("c.tar", [("k2.png", _png(64, 64, 2)), ("k2.txt", b"third")])
    (shards / "c.tar").write_bytes((shards / "c.tar").read_bytes()[:700])  # cut inside the image
    (shards / "loose.png").write_bytes(_png(16, 16, 3))
    items, report = scan_dataset(shards)
    assert [i.item_id for i in items] == ["a.tar/k0"]
    bad = report["skipped"]["bad_record"]["first"]
    assert any(b.startswith("loose.png (a loose image beside .tar shards") for b in bad)
    assert any(b.startswith("a.tar/k1.json") for b in bad) and any(b.startswith("b.tar (unreadable") for b in bad)
    assert any(b.startswith("c.tar") for b in bad)

    data = tmp_path / "jsonl"
    data.mkdir()
    (data / "x.png").write_bytes(_png(16, 16, 0))
    lines = [{"file": "x.png", "caption": "a line\u2028break"}, {"file": None, "caption": "c"},
             {"file": "sub/../x.png", "caption": "again"}, {"file": "x.png", "caption": "after"}]
    (data / "captions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
    items, report = scan_dataset(data)
    assert [(i.item_id, i.caption) for i in items] == [("x.png", "a line\u2028break")]
    assert report["n_records"] == 4
    assert report["skipped"]["bad_record"]["first"] == ['captions.jsonl:2 (needs a JSON object with a "file" path)']
    assert report["skipped"]["duplicate"]["count"] == 2


def test_multiscale_names_buckets_too_small_to_train_and_a_batch_larger_than_any(capsys):
    from pixart.train.batches import epoch_batches

    class Data:
        bucket_keys = ["0.5"] * 5 + ["1.0"] * 2
        settings = {"multiscale": True}

    recipe = {"batch_size": 4, "seed": 0, "num_workers": 0, "features": "feats"}
    epoch_batches(Data(), recipe)
    assert "2 items in buckets smaller than batch_size 4 are never trained on: 1.0 (2)" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="largest bucket holds 5 items, fewer than batch_size 8 x 1"):
        epoch_batches(Data(), {**recipe, "batch_size": 8})


def test_scan_without_usable_items_names_folder_and_layout(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/x.png").write_bytes(b"not an image")
    (tmp_path / "bad/x.txt").write_text("caption")
    with pytest.raises(DatasetError, match=r"bad.*corrupt_image.*captions\.jsonl"):
        scan_dataset(tmp_path / "bad")


# ---------------------------------------------------------------- features + dataset

@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    from pixart.tiny import save_tiny
    from pixart.train.features import extract

    root = tmp_path_factory.mktemp("train")
    pipeline = save_tiny(root / "tiny")["pipeline"]
    data = _jsonl_dataset(root / "data")
    kwargs = dict(vae_source=pipeline, text_encoder_source=pipeline, batch_size=4, progress=False)
    single = extract(data, root / "ss", resolution=32, **kwargs)
    multi = extract(data, root / "ms", resolution=64, multiscale=True, **kwargs)
    return {"root": root, "pipeline": pipeline, "data": data, "kwargs": kwargs, "single": single, "multi": multi}


def test_extract_counts_and_report(extracted):
    counts, root = extracted["single"], extracted["root"]
    assert counts["n_items"] == 6 and counts["n_images_encoded"] == 6 and counts["n_captions_encoded"] == 6
    assert counts["n_skipped"] == 5
    report = json.loads((root / "ss/report.json").read_text())
    assert report["skipped"]["empty_caption"]["first"] == ["img/empty.png"] and report["run"] == counts
    settings = json.loads((root / "ss/settings.json").read_text())
    assert settings["resolution"] == 32 and not settings["multiscale"] and settings["multiple"] == 8
    assert settings["vae_fingerprint"] and settings["scaling_factor"] == pytest.approx(0.18215)


def test_latents_equal_a_direct_vae_encode(extracted):
    from pixart.checkpoints import load_vae

    ds = LatentDataset(extracted["root"] / "ss")
    row = pd.read_parquet(ds.root / "index.parquet").iloc[0]
    moments = load_file(str(ds.root / row["vae"]))["moments"].float()
    assert moments.shape == (8, 8, 8)
    # by hand: short side 48 → 32 (long 64 → 42), center crop 32×32 from left 5
    image = Image.open(extracted["data"] / row["file"]).convert("RGB").resize((42, 32), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image.crop((5, 0, 37, 32)), dtype=np.float32) / 127.5 - 1)
    with torch.no_grad():
        posterior = load_vae(extracted["pipeline"]).encode(pixels.permute(2, 0, 1)[None]).latent_dist
    torch.testing.assert_close(moments, torch.cat([posterior.mean, posterior.std], 1)[0], rtol=2e-3, atol=2e-3)


def test_rerun_resumes_and_other_settings_are_refused(extracted):
    from pixart.train.features import FeatureError, extract

    root, kwargs = extracted["root"], extracted["kwargs"]
    first = next((root / "ss/vae").rglob("*.safetensors"))
    first.unlink()
    again = extract(extracted["data"], root / "ss", resolution=32, **kwargs)
    assert (again["n_images_encoded"], again["n_captions_encoded"], again["n_images_reused"]) == (1, 0, 5)
    with pytest.raises(FeatureError, match="resolution"):
        extract(extracted["data"], root / "ss", resolution=64, **kwargs)


def test_other_settings_with_discard_stale_extract_anew(extracted, tmp_path, capsys):
    from pixart.train.features import FeatureError, extract

    kwargs, out = extracted["kwargs"], tmp_path / "features"
    shutil.copytree(extracted["root"] / "ss", out)
    (out / "notes.txt").write_text("the user's own file")
    old = {p.relative_to(out) for p in (out / "vae").rglob("*.safetensors")}
    counts = extract(extracted["data"], out, resolution=64, discard_stale=True, **kwargs)
    assert "discarded the stale features" in capsys.readouterr().out
    assert counts["n_images_reused"] == counts["n_captions_reused"] == 0  # nothing made under 32 px survives
    assert json.loads((out / "settings.json").read_text())["resolution"] == 64
    moments = [load_file(str(p))["moments"] for p in (out / "vae").rglob("*.safetensors")]
    assert len(moments) == len(old) and all(m.shape[-1] == 16 for m in moments)  # 64 px / 4
    assert (out / "notes.txt").read_text() == "the user's own file"  # only what extract writes is deleted
    # a folder whose settings.json is not a features folder's is never discarded
    other = tmp_path / "pipeline"
    shutil.copytree(extracted["pipeline"], other)
    (other / "settings.json").write_text('{"something": "else"}')
    with pytest.raises(FeatureError, match="records other settings"):
        extract(extracted["data"], other, resolution=64, discard_stale=True, **kwargs)
    assert (other / "vae" / "config.json").is_file()


def test_hub_sources_keep_their_identity_as_more_of_the_repo_is_cached(extracted, tmp_path, monkeypatch):
    """A features folder made from a hub repo must stay valid when the rest of the repo is cached later (the VAE
    was fingerprinted by the whole snapshot) or when the T5 was downloaded by the extraction itself (it was
    fingerprinted by its id, then by its files): with --discard-stale either would re-extract everything."""
    import huggingface_hub.constants

    import pixart.checkpoints
    from pixart.embeddings import encoder_identity
    from pixart.train.features import extract, weights_fingerprint

    pipeline = Path(extracted["pipeline"])
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    snapshot = cache / "models--org--pipe" / "snapshots" / ("c" * 40)
    shutil.copytree(pipeline / "vae", snapshot / "vae")
    (cache / "models--org--pipe" / "refs").mkdir()
    (cache / "models--org--pipe" / "refs" / "main").write_text("c" * 40)
    real_load = pixart.checkpoints.load_text_encoder

    def download_then_load(source, subfolder, tokenizer_subfolder, **kwargs):  # what an online first run does
        for part in (subfolder, tokenizer_subfolder):
            shutil.copytree(pipeline / part, snapshot / part, dirs_exist_ok=True)
        return real_load(source, subfolder, tokenizer_subfolder, **kwargs)

    monkeypatch.setattr(pixart.checkpoints, "load_text_encoder", download_then_load)
    out, kwargs = tmp_path / "features", dict(batch_size=4, progress=False, resolution=32)
    extract(extracted["data"], out, "org/pipe", "org/pipe", **kwargs)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["text_encoder_fingerprint"] == encoder_identity(str(pipeline))
    assert settings["vae_fingerprint"] == weights_fingerprint(str(pipeline), "vae")
    shutil.copytree(pipeline / "transformer", snapshot / "transformer")  # the evaluation caches the rest
    again = extract(extracted["data"], out, "org/pipe", "org/pipe", discard_stale=True, **kwargs)
    assert again["n_images_encoded"] == again["n_captions_encoded"] == 0


def test_dataset_resamples_posterior_per_epoch_deterministically(extracted):
    ds = LatentDataset(extracted["root"] / "ss", seed=7)
    a = ds[2]
    assert a["latents"].shape == (4, 8, 8) and a["text"].shape == (120, 32) and a["label"] == 2
    assert torch.equal(a["latents"], LatentDataset(extracted["root"] / "ss", seed=7)[2]["latents"])
    n = int(a["text_mask"].sum())
    assert 0 < n < 120 and a["text_mask"][:n].all() and a["text"][n:].abs().sum() == 0
    assert a["img_hw"].tolist() == [32.0, 32.0] and a["aspect_ratio"].tolist() == [1.0]
    ds.set_epoch(1)
    b = ds[2]
    assert not torch.equal(a["latents"], b["latents"]) and torch.equal(a["text"], b["text"])

    # each epoch's latent is a draw from N(mean, std²) × scaling factor: with a known posterior (std far from 1, so
    # a variance used as std or a missing scale would show), 400 epochs give mean and std to about 2%
    copy = extracted["root"] / "ss-known-posterior"
    shutil.copytree(ds.root, copy)
    moments = load_file(str(copy / ds.field("vae", 2)))["moments"]
    mean, std = torch.full_like(moments[:4], 0.5), torch.full_like(moments[:4], 0.2)
    save_file({"moments": torch.cat([mean, std]).to(moments.dtype)}, str(copy / ds.field("vae", 2)))
    known = LatentDataset(copy, seed=7)
    draws = torch.stack([known.item(2, epoch)["latents"] for epoch in range(400)]) / known.scaling_factor
    assert draws.mean(0).sub(0.5).abs().max() < 0.05 and draws.std(0).div(0.2).sub(1).abs().max() < 0.25
    assert abs(draws.std(0).mean().item() / 0.2 - 1) < 0.02


def test_multiscale_features_and_single_bucket_batches(extracted):
    ds = LatentDataset(extracted["root"] / "ms")
    table = buckets_for(64, 8)
    assert sorted(set(ds.bucket_keys)) == sorted({nearest_bucket(48, 64, table), nearest_bucket(64, 48, table)})
    for i in range(len(ds)):
        item = ds[i]
        h, w = table[ds.bucket_keys[i]]
        assert item["latents"].shape == (4, h // 4, w // 4)
        assert item["img_hw"].tolist() == [float(ds.field("height", i)), float(ds.field("width", i))]
        assert item["aspect_ratio"].item() == pytest.approx(float(ds.bucket_keys[i]))
    loader = torch.utils.data.DataLoader(ds, batch_sampler=AspectRatioBatchSampler(ds.bucket_keys, 2, seed=0))
    batches = list(loader)
    assert sum(len(b["item_id"]) for b in batches) == 6
    assert all(len(set(b["aspect_ratio"].flatten().tolist())) == 1 for b in batches)


def test_multiscale_stream_equals_plain_epochs_with_workers_and_preload(extracted):
    """The training stream on multi-scale features (buckets of different shapes, short batches dropped) gives
    the batches of a plain DataLoader run an epoch at a time, with loader workers and preloaded features."""
    from itertools import islice

    from pixart.train.batches import epoch_batches
    from pixart.train.loader_bench import plain_batches

    recipe = {"batch_size": 2, "seed": 5, "num_workers": 2, "features": "ms"}
    plain = LatentDataset(extracted["root"] / "ms", seed=5)
    epochs = 3 * len(AspectRatioBatchSampler(plain.bucket_keys, 2, seed=5, drop_last=True))
    reference = list(islice(plain_batches(plain, 2, seed=5), epochs))
    preloaded = LatentDataset(extracted["root"] / "ms", seed=5).preload()
    stream = list(islice(epoch_batches(preloaded, recipe), len(reference)))
    assert len({tuple(b["latents"].shape) for b in stream}) == 2  # both buckets' shapes
    for ours, want in zip(stream, reference, strict=True):
        assert ours["item_id"] == want["item_id"]
        assert all(torch.equal(ours[key], want[key]) for key in ("latents", "text", "img_hw", "aspect_ratio"))


def test_a_batch_larger_than_a_single_scale_dataset_is_refused():
    # it trained on the whole 8-item dataset as each "batch" of 100, with the lr scaled for 100
    from pixart.train.batches import epoch_batches

    class Data:
        bucket_keys = ["1.0"] * 8
        settings = {"multiscale": False}

    recipe = {"batch_size": 100, "seed": 0, "num_workers": 0, "features": "feats"}
    with pytest.raises(DatasetError, match="feats: 8 items, fewer than batch_size 100 x 1 process"):
        epoch_batches(Data(), recipe)
    epoch_batches(Data(), {**recipe, "batch_size": 8})
