"""The training loop on tiny models: loss goes down, resume = uninterrupted, checkpoints load, bad input named."""
import json
import re
import shutil

import pytest
import torch
from PIL import Image, ImageDraw

from pixart.checkpoints import load_transformer
from pixart.tiny import TINY_TRANSFORMER
from pixart.train import recipe as recipes
from pixart.train.features import extract
from pixart.train.data import DatasetError
from pixart.train.loop import NonFiniteLossError, train, warmup_schedule
from pixart.train.saving import ResumeError, list_checkpoints

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 30)}
TINY_DIT = dict(sample_size=16, num_layers=2, num_attention_heads=2, attention_head_dim=16, in_channels=4,
                out_channels=8, patch_size=2, num_embeds_ada_norm=4, norm_type="ada_norm_zero",
                activation_fn="gelu-approximate", norm_elementwise_affine=False, attention_bias=True)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def features(one_thread, tiny, tmp_path_factory):
    """16 images of one coloured square each (label = colour), extracted with the tiny VAE and T5."""
    data = tmp_path_factory.mktemp("squares")
    lines = []
    for i in range(16):
        name, rgb = list(COLOURS.items())[i % 4]
        image = Image.new("RGB", (64, 64), (235, 235, 235))
        x = 4 + 3 * i
        ImageDraw.Draw(image).rectangle([x, 16, x + 20, 36], fill=rgb)
        image.save(data / f"{i:02d}.png")
        lines.append(json.dumps({"file": f"{i:02d}.png", "caption": f"a {name} square", "label": i % 4}))
    (data / "captions.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("features")
    pipeline = str(tiny["pipeline"])
    extract(data, out, pipeline, pipeline, resolution=64, batch_size=8, progress=False)
    return out


def _recipe(features, **overrides) -> dict:
    base = {"features": str(features), "model": dict(TINY_TRANSFORMER), "resolution": 64, "steps": 6,
            "batch_size": 4, "seed": 3, "save_every": 3, "log_every": 1, "ema_rate": 0.9,
            "optimizer": {"lr": 1e-3, "warmup_steps": 1, "grad_clip": 1.0, "lr_scaling": "none"}}
    return recipes.resolve({**base, **overrides})


def _params(folder, weights: str = "transformer") -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / weights / "diffusion_pytorch_model.safetensors"))


def test_recipe_errors_name_the_key(features):
    with pytest.raises(recipes.RecipeError, match="unknown key.*'stepz'"):
        recipes.resolve({"features": "x", "stepz": 3})
    with pytest.raises(recipes.RecipeError, match="variant"):
        recipes.resolve({"features": "x", "variant": "adaln-double"})
    with pytest.raises(recipes.RecipeError, match="needs `source`"):
        recipes.resolve({"features": "x", "init": {"kind": "dit"}})
    with pytest.raises(recipes.RecipeError, match="`num_workers` must be an integer ≥ 0"):
        recipes.resolve({"features": "x", "num_workers": -1})
    for bad, message in (({"caption_drop": 1.5}, r"`caption_drop` must lie in \[0, 1\], got 1.5"),
                         ({"ema_rate": 2}, r"`ema_rate` must lie in \[0, 1\], got 2"),
                         ({"optimizer": {"lr": 0}}, r"`optimizer.lr` must lie in \(0, ∞\), got 0"),
                         ({"optimizer": {"grad_clip": "1"}}, r"`optimizer.grad_clip` must lie in \(0, ∞\), got '1'")):
        with pytest.raises(recipes.RecipeError, match=message):
            recipes.resolve({"features": "x", **bad})


def test_recipe_files_that_cannot_be_read_are_named(tmp_path):
    # broken YAML/JSON was a parser traceback without the file's name; a YAML list was read as keys
    files = {"broken.yaml": ("steps: [1", "broken.yaml: not valid YAML"),
             "broken.json": ('{"steps": ', "broken.json: not valid JSON"),
             "broken.cfg": ("steps: 1", "broken.cfg: not valid JSON"),  # anything but .yaml/.yml is read as JSON
             "list.yaml": ("- steps: 1\n", "list.yaml: expected a mapping of recipe keys, got a list"),
             "binary.yaml": (b"\xff\xfe\x00", "binary.yaml cannot be read")}
    for name, (content, message) in files.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(recipes.RecipeError, match=re.escape(message)):
            recipes.load(path)
    with pytest.raises(recipes.RecipeError, match="is a folder; give a recipe YAML or JSON file"):
        recipes.load(tmp_path)
    with pytest.raises(recipes.RecipeError, match="does not exist"):
        recipes.load(tmp_path / "none.yaml")


def test_loader_workers_and_preloading_give_the_same_batches_across_epochs(features):
    """Posterior noise depends on (seed, epoch, item) only, so worker processes and preloaded features change
    nothing, also after epoch boundaries (16 items in batches of 4: four per epoch) and from a resumed step.
    The reference is a plain DataLoader over the dataset, anew each epoch (loader_bench.plain_batches).
    (Single-scale features; tests/test_train_data.py has the multi-scale case.)"""
    from itertools import islice

    from pixart.train.batches import epoch_batches
    from pixart.train.data import LatentDataset
    from pixart.train.loader_bench import plain_batches

    recipe = _recipe(features)
    dataset = LatentDataset(recipe["features"], seed=recipe["seed"])
    reference = list(islice(plain_batches(dataset, recipe["batch_size"], seed=recipe["seed"]), 10))

    def stream(workers, preload, start=0):
        run = _recipe(features, num_workers=workers, preload=preload)
        data = LatentDataset(run["features"], seed=run["seed"])
        if preload:
            data.preload()
        return list(islice(epoch_batches(data, run, start_step=start), 10 - start))

    for workers, preload, start in ((0, False, 0), (2, False, 0), (0, True, 0), (2, True, 0), (2, True, 5)):
        for ours, want in zip(stream(workers, preload, start), reference[start:10], strict=True):
            assert ours["item_id"] == want["item_id"], (workers, preload, start)
            for key in ("latents", "text", "text_mask", "label", "index", "img_hw", "aspect_ratio"):
                assert torch.equal(ours[key], want[key]), (key, workers, preload, start)


def test_preload_reads_each_feature_file_once_and_a_missing_one_is_named(features, tmp_path, monkeypatch):
    from pixart.train.data import LatentDataset

    copy = tmp_path / "features"
    shutil.copytree(features, copy)
    reads, read = [], LatentDataset._read
    monkeypatch.setattr(LatentDataset, "_read", lambda self, column, relative: reads.append(relative) or read(
        self, column, relative))
    dataset = LatentDataset(copy).preload()
    files = {dataset.field(column, i) for column in ("vae", "t5") for i in range(len(dataset))}
    assert sorted(reads) == sorted(files)  # each once, the captions' T5 files included
    items = [dataset.item(i, epoch=2) for i in range(len(dataset))]
    assert len(reads) == len(files)  # nothing read after preloading
    plain = LatentDataset(copy)
    for i, item in enumerate(items):
        assert torch.equal(item["latents"], plain.item(i, epoch=2)["latents"])
        assert torch.equal(item["text"], plain.item(i, epoch=2)["text"])
    monkeypatch.undo()
    missing = copy / dataset.field("vae", 3)
    missing.unlink()
    with pytest.raises(DatasetError, match=f"{missing.name} is missing.*re-run the feature extraction"):
        LatentDataset(copy).preload()
    with pytest.raises(DatasetError, match=f"{missing.name} is missing"):
        LatentDataset(copy)[3]
    with pytest.raises(recipes.RecipeError, match="`preload` must be true or false, got 'no'"):
        recipes.resolve({"features": "x", "preload": "no"})


def test_loader_bench_times_the_plain_loader_and_the_stream(features, capsys):
    from pixart.train.loader_bench import main

    main(["--features", str(features), "--batch-size", "4", "--epochs", "2", "--workers", "0", "--repeats", "1"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("| plain", "0", "no"), ("| suite", "0", "no"), ("| suite", "0", "yes")]
    assert all(float(r[3]) > 0 for r in rows)


def test_sqrt_lr_scaling_follows_the_original_rule():
    r = recipes.resolve({"features": "x", "batch_size": 64})
    assert recipes.effective_lr(r, world_size=16) == pytest.approx(2e-5 * (64 * 16 / 256) ** 0.5)


def test_short_run_lowers_the_loss(features, tmp_path):
    stats = train(_recipe(features, steps=40, save_every=40, caption_drop=0.0), tmp_path / "run")
    losses = [json.loads(line)["mse"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 40
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10
    assert stats["params"] == sum(p.numel() for p in load_transformer(
        str(tmp_path / "run" / "checkpoints" / "step_0000040")).transformer.parameters())


def test_resume_equals_an_uninterrupted_run(features, tmp_path):
    recipe = _recipe(features)
    train(recipe, tmp_path / "straight")
    train(recipe, tmp_path / "resumed", stop_after=3)
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed")] == [3]
    train(recipe, tmp_path / "resumed")  # resume="auto" picks up step 3
    for weights in ("transformer", "transformer_ema"):  # the EMA too: evaluated checkpoints use state_dict_ema
        straight, resumed = _params(tmp_path / "straight" / "checkpoints" / "step_0000006", weights), \
            _params(tmp_path / "resumed" / "checkpoints" / "step_0000006", weights)
        assert straight.keys() == resumed.keys()
        for key in straight:
            torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=f"{weights}: {key}")
    last = tmp_path / "straight" / "checkpoints" / "step_0000006"
    live, ema = _params(last), _params(last, "transformer_ema")
    assert any(not torch.equal(live[k], ema[k]) for k in live)  # ema_rate 0.9: the two differ, so both were compared
    logs = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("straight", "resumed")]
    keys = ("step", "loss", "mse", "vb", "lr", "grad_norm")
    assert [[r[k] for k in keys] for r in logs[1]] == [[r[k] for k in keys] for r in logs[0]]  # steps 1-6, once each


def test_checkpoints_load_through_the_suite_in_both_layouts(features, tmp_path):
    train(_recipe(features, steps=3), tmp_path / "run")
    step = tmp_path / "run" / "checkpoints" / "step_0000003"
    folder = load_transformer(str(step / "transformer"))
    original = load_transformer(str(step / "model.pth"), arch=str(step / "transformer" / "config.json"))
    ema = load_transformer(str(step / "model.pth"), arch=str(step / "transformer" / "config.json"),
                           weights="state_dict_ema")
    assert folder.fingerprint == original.fingerprint
    assert ema.fingerprint == load_transformer(str(step / "transformer_ema")).fingerprint != folder.fingerprint
    assert original.null_embedding is not None and original.null_embedding.shape == (120, 32)


def test_adaln_variant_trains_and_reloads(features, tmp_path):
    stats = train(_recipe(features, steps=3, variant="adaln"), tmp_path / "run")
    step = tmp_path / "run" / "checkpoints" / "step_0000003"
    loaded = load_transformer(str(step / "transformer"))
    assert type(loaded.transformer).__name__ == "PixArtAdaLNTransformer2DModel"
    assert stats["params"] > train(_recipe(features, steps=1), tmp_path / "single")["params"]
    assert load_transformer(str(step / "model.pth"), arch=str(step / "transformer" / "config.json")).fingerprint \
        == loaded.fingerprint


def test_three_stages_class_then_reparameterised_text_then_finetune(features, tmp_path):
    stage1 = _recipe(features, stage="class", model=TINY_DIT, steps=3)
    train(stage1, tmp_path / "stage1")
    stage2 = _recipe(features, init={"kind": "dit", "source": str(tmp_path / "stage1" / "checkpoints" / "step_0000003")},
                     steps=3)
    s2 = train(stage2, tmp_path / "stage2")
    assert s2["reparam"] is True
    stage3 = _recipe(features, init={"kind": "checkpoint",
                                     "source": str(tmp_path / "stage2" / "checkpoints" / "step_0000003")}, steps=3)
    s3 = train(stage3, tmp_path / "stage3")
    assert s3["params"] == s2["params"]


def test_warmup_is_the_originals_constant_schedule_with_warmup():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_schedule(optimizer, 4)
    lrs = []
    for _ in range(6):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert lrs == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]  # step/W, as diffusers' get_constant_schedule_with_warmup


def test_features_must_match_the_recipe_and_class_labels_the_model(features, tmp_path):
    with pytest.raises(DatasetError, match="extracted with resolution 64 but the recipe says 128"):
        train(_recipe(features, resolution=128), tmp_path / "res")
    with pytest.raises(DatasetError, match="extracted with multiscale False but the recipe says True"):
        train(_recipe(features, multiscale=True), tmp_path / "ms")
    # labels 0..3: a DiT with 3 classes would train label 3 as its dropped (null) class
    with pytest.raises(DatasetError, match=r"4 item\(s\) have no label or one outside 0..2, .*03.png \(3\)"):
        train(_recipe(features, stage="class", model={**TINY_DIT, "num_embeds_ada_norm": 3}, steps=1), tmp_path / "c")


def test_the_fp16_loss_scale_is_saved_and_restored(features, tmp_path):
    # fp16's gradient scaler decides which steps are skipped: a resume must continue with its scale
    from pixart.train.ema import Ema
    from pixart.train.model_init import build_model
    from pixart.train.saving import resume, save_checkpoint, start_identity

    recipe = _recipe(features, steps=3)
    model, null = build_model(recipe)
    optimizer = torch.optim.AdamW(model.parameters())
    schedule, ema, origin = warmup_schedule(optimizer, 1), Ema(model, 0.9), start_identity(model, null, "f")
    path = save_checkpoint(tmp_path, 3, model, ema, optimizer, schedule, recipe=recipe, null_embedding=null,
                           loss=0.1, start=origin, scaler=torch.amp.GradScaler("cpu", init_scale=1234.0))
    restored = torch.amp.GradScaler("cpu")
    resume(path, model, ema, optimizer, schedule, recipe=recipe, start=origin, scaler=restored)
    assert restored.get_scale() == 1234.0


def test_a_step_the_fp16_scaler_skipped_does_not_advance_the_warmup(features, tmp_path, monkeypatch):
    # fp16's scaler skips an overflowing optimizer step; accelerate's own scheduler wrapper then skips the lr step
    # too. Ours is stepped by hand, so the loop must ask (CPU runs never skip: the property is forced here).
    import accelerate

    def lrs(run):
        return [json.loads(line)["lr"] for line in (run / "log.jsonl").read_text().splitlines()]

    recipe = _recipe(features, steps=3, optimizer={"lr": 1e-3, "warmup_steps": 2, "grad_clip": 1.0,
                                                   "lr_scaling": "none"})
    train(recipe, tmp_path / "stepped")
    assert lrs(tmp_path / "stepped") == pytest.approx([5e-4, 1e-3, 1e-3])
    monkeypatch.setattr(accelerate.Accelerator, "optimizer_step_was_skipped", property(lambda self: True))
    train(recipe, tmp_path / "skipped")
    assert lrs(tmp_path / "skipped") == [0.0, 0.0, 0.0]


def test_the_ema_follows_the_model_to_its_device():
    """The EMA is made (and resumed) on the CPU before accelerate moves the model to the GPU: every update then
    mixed a CPU shadow with CUDA parameters and the first step of every GPU run failed. `meta` stands in for CUDA."""
    from pixart.train.ema import Ema

    model = torch.nn.Linear(3, 2)
    ema = Ema(model, 0.9)
    model.to("meta")
    ema.update(model)
    assert {t.device.type for t in ema.shadow.values()} == {"meta"}
    assert {t.device.type for t in ema.state_dict(model).values()} == {"meta"}


def test_a_checkpoint_of_another_trainer_version_is_not_resumed(features, tmp_path):
    # the loop changed how it trains (e.g. the warmup): the old run is another trajectory of the same recipe
    train(_recipe(features, steps=3), tmp_path / "run")
    meta_file = tmp_path / "run" / "checkpoints" / "step_0000003" / "meta.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "trainer_version": 1}))
    with pytest.raises(ResumeError, match="trainer version: checkpoint 1 vs pixart.train 2"):
        train(_recipe(features, steps=6), tmp_path / "run")


def test_a_checkpoint_of_another_process_count_is_not_resumed(features, tmp_path):
    """A step's place in the data and the lr scaling depend on the number of processes: a run resumed under
    another count silently skipped data and changed its lr."""
    train(_recipe(features, steps=3), tmp_path / "run")
    meta_file = tmp_path / "run" / "checkpoints" / "step_0000003" / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["start"]["world_size"] == 1
    meta["start"]["world_size"] = 2
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ResumeError, match="processes: checkpoint 2 vs now 1 .*resume with 2 processes"):
        train(_recipe(features, steps=6), tmp_path / "run")


def test_resume_from_an_incompatible_checkpoint_names_what_differs(features, tmp_path):
    train(_recipe(features, steps=3), tmp_path / "run")
    wider = _recipe(features, steps=6, model={**TINY_TRANSFORMER, "num_layers": 3})
    with pytest.raises(ResumeError, match="num_layers: checkpoint 2 vs recipe 3"):
        train(wider, tmp_path / "run")


def test_a_checkpoint_from_another_start_is_refused_or_discarded(features, tmp_path):
    """Stage 3 resuming on top of a stage 2 that has since been retrained: the init folder keeps its path, so
    only the content says the old fine-tune is stale. Refused by default; --discard-stale (the DAG) starts over."""
    init = tmp_path / "stage2" / "checkpoints" / "step_0000002"
    train(_recipe(features, steps=2, save_every=2), tmp_path / "stage2")
    stage3 = _recipe(features, steps=3, init={"kind": "checkpoint", "source": str(init)})
    train(stage3, tmp_path / "stage3")
    train(_recipe(features, steps=2, save_every=2, seed=4), tmp_path / "retrained")
    shutil.rmtree(init)
    shutil.copytree(tmp_path / "retrained" / "checkpoints" / "step_0000002", init)
    with pytest.raises(ResumeError, match=r"start weights .*delete .*stage3/checkpoints.*--discard-stale"):
        train(stage3, tmp_path / "stage3")
    train(stage3, tmp_path / "stage3", discard_stale=True)
    train(stage3, tmp_path / "fresh")
    for key, value in _params(tmp_path / "fresh" / "checkpoints" / "step_0000003").items():
        torch.testing.assert_close(_params(tmp_path / "stage3" / "checkpoints" / "step_0000003")[key], value,
                                   rtol=0, atol=0, msg=key)
    logged = [json.loads(line)["step"] for line in (tmp_path / "stage3" / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]  # the stale run's log went with it
    with pytest.raises(ResumeError, match=r"optimizer: checkpoint .*'lr': 0\.001.* vs recipe .*'lr': 0\.002"):
        train({**stage3, "steps": 6, "optimizer": {**stage3["optimizer"], "lr": 2e-3}}, tmp_path / "stage3")
    meta_file = tmp_path / "stage3" / "checkpoints" / "step_0000003" / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["start"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ResumeError, match="does not record its start"):
        train({**stage3, "steps": 6}, tmp_path / "stage3")


def test_features_from_another_vae_are_another_start_but_moved_features_are_not(features, tmp_path):
    """Latents are named by image digest, so features re-extracted with another VAE have a byte-identical index:
    only settings.json (the VAE fingerprint) tells them apart. The paths they were read from do not count."""
    copy = tmp_path / "features"
    shutil.copytree(features, copy)
    recipe = _recipe(copy, steps=3)
    train(recipe, tmp_path / "run")
    settings = json.loads((copy / "settings.json").read_text())
    (copy / "settings.json").write_text(json.dumps({**settings, "sources": {"vae": "/elsewhere"}}))
    assert train({**recipe, "steps": 6}, tmp_path / "run")["steps"] == 6
    (copy / "settings.json").write_text(json.dumps({**settings, "vae_fingerprint": "another-vae"}))
    with pytest.raises(ResumeError, match=r"start features"):
        train({**recipe, "steps": 9}, tmp_path / "run")


def test_a_complete_run_reruns_nothing_and_fewer_steps_resume_from_an_earlier_checkpoint(features, tmp_path, capsys):
    from pixart.train.loop import main

    recipe = _recipe(features)
    first = train(recipe, tmp_path / "run")
    again = train(recipe, tmp_path / "run")
    assert again["steps"] == 6 and again["final_loss"] == first["final_loss"] and again["images_per_s"] is None
    shorter = train({**recipe, "steps": 3}, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step_0000003" / "meta.json").read_text())
    assert shorter["steps"] == 3 and shorter["final_loss"] == saved["loss"]
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    main(["--recipe", str(tmp_path / "recipe.json"), "--out", str(tmp_path / "run")])
    assert f"to step 6: loss {first['final_loss']:.4f}, n/a images/s" in capsys.readouterr().out


def test_nan_loss_stops_with_step_batch_and_last_good_checkpoint(features, tmp_path, monkeypatch):
    from pixart.train import diffusion

    original = diffusion.GaussianDiffusion.training_losses
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(diffusion.GaussianDiffusion, "training_losses", poisoned)
    with pytest.raises(NonFiniteLossError, match="at step 4") as err:
        train(_recipe(features), tmp_path / "run")
    report = json.loads((tmp_path / "run" / "nan_report.json").read_text())
    assert report["step"] == 4 and len(report["batch_ids"]) == 4
    assert report["last_good_checkpoint"].endswith("step_0000003") and "step_0000003" in str(err.value)


def test_training_bench_reports_each_variant():
    from pixart.train.bench import bench_variant

    rows = {v: bench_variant(v, dict(TINY_TRANSFORMER), batch_size=2, steps=2, warmup=1, dtype=torch.float32,
                             device=torch.device("cpu")) for v in ("adaln", "adaln-single")}
    assert rows["adaln"]["params"] > rows["adaln-single"]["params"]
    assert all(r["images_per_s"] > 0 and r["peak_memory_bytes"] is None for r in rows.values())
