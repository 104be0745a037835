"""The Snakemake DAG: schema errors, the slurm profile's plan, and a real end-to-end run on a micro config."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


def _run(args, cwd, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _micro_config(tmp_path, **changes):
    (tmp_path / "prompts.txt").write_text("a red circle\na blue square left of a green triangle\na striped star\n")
    config = {
        "tiny_models": {"out": "results/weights/tiny", "seed": 0},
        "tiny_clip": {"out": "results/weights/tiny/clip", "seed": 0},
        "scorers": {"clip_tiny": {"kind": "clip_score", "weights": "results/weights/tiny/clip/tiny-clip-32.bin",
                                  "model_name": "tiny-clip-32", "config_dir": "results/weights/tiny/clip"}},
        # an apostrophe in the negative prompt must reach pixart.embeddings as one argument
        "text_encoders": {"t5": {"source": "results/weights/tiny/pipeline", "negative_prompt": "don't blur"}},
        "models": {"tiny": {"checkpoint": "results/weights/tiny/original.pth",
                            "arch": "results/weights/tiny/transformer_config.json",
                            "vae": "results/weights/tiny/pipeline", "text_encoder": "t5", "uncond": "original"}},
        "benchmarks": {"micro": {"prompts": str(tmp_path / "prompts.txt"), "images_per_prompt": 2,
                                 "seed_rule": "per_image", "seed_base": 42, "metrics": ["clip_tiny"]},
                       "spatial": {"protocol": "t2i_compbench", "subset": "spatial", "limit": 1,
                                   "metrics": ["clip_tiny"]}},
        "sweep": {"samplers": ["dpm-solver:5"], "cfg": [4.5]},
        "generation": {"batch_size": 4, "shards": 2},
    }
    config.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_unknown_config_key_is_named(tmp_path):
    config = _micro_config(tmp_path, sweep={"sampler": ["dpm-solver:20"]})
    result = _run(["-n", "--configfile", str(config), "--cores", "1"], tmp_path)
    assert result.returncode != 0
    assert "'sampler' was unexpected" in result.stdout + result.stderr


def test_a_recipe_key_the_trainer_refuses_fails_when_the_dag_is_built(tmp_path):
    """The schema lets recipe keys through to pixart.train; a typo must not wait for the training job."""
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  recipes:\n    stage2: {num_worker: 8}\n")
    result = _run(["-n", "--configfile", str(ROOT / "workflows/config/demo.yaml"), str(typo), "--cores", "1"], tmp_path)
    assert result.returncode != 0
    assert "train.recipes.stage2: unknown key(s) ['num_worker']" in result.stdout + result.stderr


def test_benchmark_needs_a_protocol_or_a_prompt_file(tmp_path):
    config = _micro_config(tmp_path, benchmarks={"b": {"images_per_prompt": 2}})
    result = _run(["-n", "--configfile", str(config), "--cores", "1"], tmp_path)
    assert result.returncode != 0 and "is not valid under any of the given schemas" in result.stdout + result.stderr


def test_benchmark_keys_that_would_do_nothing_and_missing_inputs_fail_the_plan(tmp_path):
    """Each of these planned fine and then did something else than asked (a protocol's own seeds, a subset
    ignored), failed hours later, or was skipped because old outputs existed."""
    config = _micro_config(tmp_path, benchmarks={
        "sp": {"protocol": "t2i_compbench", "subset": "spatial", "images_per_prompt": 2, "seed_base": 3,
               "metrics": ["clip_tiny"]},
        "colour": {"protocol": "t2i_compbench", "subset": "colour", "metrics": ["clip_tiny"]},
        "sam": {"protocol": "sam", "subset": "fid2k", "source": "data/sam/fid2k.csv", "metrics": ["clip_tiny"]},
        "mine": {"prompts": str(tmp_path / "prompts.txt"), "subset": "spatial", "metrics": ["clip_tiny"]},
        "gone": {"prompts": str(tmp_path / "nope.txt"), "metrics": ["clip_tiny"]}})
    text = yaml.safe_load(config.read_text())
    text["scorers"]["clip_tiny"]["weights"] = "weights/clip.bin"
    text["checks"] = {"rises": {"kind": "cfg", "model": "tiny", "bench": "mine", "metric": "clip_tny", "cfg": [1.0, 4.5]}}
    config.write_text(yaml.safe_dump(text))
    result = _run(["-n", "--configfile", str(config), "--cores", "1"], tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "benchmarks.sp: ['images_per_prompt', 'seed_base'] would be ignored: the protocol fixes them" in out
    assert "benchmarks.colour: t2i_compbench@1 has no subset 'colour'" in out
    assert "benchmarks.mine: ['subset'] would be ignored: a prompt file has no subsets" in out
    assert f"benchmarks.gone.prompts: {tmp_path / 'nope.txt'} does not exist" in out
    assert "benchmarks.sam.source: data/sam/fid2k.csv does not exist" in out
    assert "scorers.clip_tiny.weights: weights/clip.bin does not exist" in out
    assert "checks.rises: 'clip_tny' is not a metric of benchmarks.mine (['clip_tiny'])" in out  # read "not scored"
    assert "checks.rises.cfg: 1.0 is not swept for benchmarks.mine ([4.5])" in out


def test_a_shapes_world_seed_the_shapes_protocol_was_not_drawn_from_is_refused(tmp_path):
    config = yaml.safe_load((ROOT / "workflows/config/demo.yaml").read_text())
    config["shapes"]["seed"] = 1
    path = tmp_path / "seed1.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _run(["-n", "--configfile", str(path)], tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "shapes.seed: 1" in out and "Use shapes.seed 0" in out


def test_unknown_sampler_is_named(tmp_path):
    config = _micro_config(tmp_path, sweep={"samplers": ["dpm_solver:20"], "cfg": [4.5]})
    result = _run(["-n", "--configfile", str(config), "--cores", "1"], tmp_path)
    assert result.returncode != 0 and "'dpm_solver:20' does not match" in result.stdout + result.stderr


def test_slurm_profile_plans_the_demo_dags(tmp_path):
    for name, expected in (("demo.yaml", {"train": 5, "shapes_vae": 1, "generate_cell": 25, "gate": 3}),
                           ("demo-random.yaml", {"generate_shard": 40, "manifest": 20, "tiny_compbench": 1})):
        result = _run(["-n", "--profile", str(ROOT / "workflows/profiles/slurm"),
                       "--configfile", str(ROOT / "workflows/config" / name)], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M)}
        assert {k: counts.get(k) for k in expected} == expected, result.stdout[-2000:]


@pytest.mark.slow
def test_micro_dag_runs_end_to_end_and_reruns_nothing(tmp_path):
    config = _micro_config(tmp_path)
    result = _run(["--configfile", str(config), "--profile", str(ROOT / "workflows/profiles/local"), "--cores", "2"],
                  tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    cell = tmp_path / "results/samples/tiny/micro/dpm-solver-5/cfg4.5"
    manifest = pd.read_parquet(cell / "manifest.parquet")
    assert len(manifest) == 6 and len(list(cell.glob("*.png"))) == 6
    assert set(manifest["shard"]) == {0, 1} and manifest["uncond"].eq("original").all()
    assert (tmp_path / "results/logs/generate/tiny/micro/dpm-solver-5/cfg4.5/shard0of2.log").exists()
    table = pd.read_parquet(tmp_path / "results/table.parquet").set_index("bench")
    assert list(table["metric"]) == ["clip_tiny", "clip_tiny"] and table.at["micro", "n"] == 6
    assert table.at["micro", "ci_low"] <= table.at["micro", "value"] <= table.at["micro", "ci_high"]
    assert table.at["micro", "protocol"].startswith("micro@custom-")
    assert table.at["spatial", "protocol"] == "t2i_compbench@1/spatial" and table.at["spatial", "n"] == 10
    # the benchmark's `limit: 1` reaches the number, so tables never present it as the full protocol
    assert table.at["spatial", "prompt_limit"] == 1 and table.at["spatial", "n_prompts"] == 1
    assert pd.isna(table.at["micro", "prompt_limit"]) and table.at["micro", "n_prompts"] == 3
    seeds = pd.read_parquet(tmp_path / "results/samples/tiny/spatial/dpm-solver-5/cfg4.5/manifest.parquet")["seed"]
    assert sorted(seeds) == list(range(42, 52))  # T2I-CompBench: image k of every prompt has seed 42 + k
    assert (tmp_path / "results/report/tables/table3.csv").exists()  # the spatial subset fills Table 3
    history = pd.read_parquet(tmp_path / "results/history.parquet")
    assert len(history) == len(table) and set(history["seeds"]) == {"42..43 per image", "42..51"}  # 1 prompt
    from evals.versions import SCORER_VERSIONS  # in each scorer's settings, so a bump rescores that kind's cells

    settings = [json.loads(f.read_text()) for f in sorted((tmp_path / "results/scorers").glob("*.json"))]
    assert settings and all(s["scorer_version"] == SCORER_VERSIONS[s["kind"]] for s in settings), settings
    html = _run(["--configfile", str(config), "--report", "report.html"], tmp_path)
    assert html.returncode == 0 and (tmp_path / "report.html").stat().st_size > 10_000, html.stderr[-2000:]
    again = _run(["-n", "--configfile", str(config), "--cores", "2"], tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
    # incremental: one more cfg value schedules only the new cells (2 shards + manifest + score per bench)
    wider = yaml.safe_load(config.read_text())
    wider["sweep"]["cfg"] = [4.5, 2.0]
    config.write_text(yaml.safe_dump(wider))
    plan = _run(["-n", "--configfile", str(config), "--cores", "2"], tmp_path)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, re.M))
    assert counts.get("generate_shard") == "4" and counts.get("manifest") == "2", plan.stdout[-1500:]
    assert counts.get("score") == "2" and "prompts" not in counts and "embeddings" not in counts
    assert counts.get("report") == "1"  # tables and figures are rebuilt from the grown table
    # a mistyped checkpoint path with the old outputs present: Snakemake alone said "Nothing to be done" and the
    # old checkpoint's numbers stayed under the model's name
    wider["models"]["tiny"]["checkpoint"] = "weights/nope.pth"
    config.write_text(yaml.safe_dump(wider))
    typo = _run(["-n", "--configfile", str(config), "--cores", "2"], tmp_path)
    assert typo.returncode != 0
    assert "models.tiny.checkpoint: weights/nope.pth does not exist" in typo.stdout + typo.stderr


# ------------------------------------------------------------------------------------------------ series
def _series_config(tmp_path, tiny):
    """Three training checkpoints (the tiny model, a perturbed copy, a truncated file) and one missing path."""
    import torch

    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    blob = torch.load(tiny["original"], weights_only=True)
    generator = torch.Generator().manual_seed(0)
    moved = {k: v + 0.2 * torch.randn(v.shape, generator=generator) if k.startswith("blocks.") else v
             for k, v in blob["state_dict"].items()}
    torch.save(blob, ckpts / "epoch_1_step_1000.pth")
    torch.save({"state_dict": moved, "state_dict_ema": moved}, ckpts / "epoch_2_step_2000.pth")
    (ckpts / "epoch_3_step_3000.pth").write_bytes(tiny["original"].read_bytes()[:4096])   # a crash mid-save
    (tmp_path / "prompts.txt").write_text("a red circle\na blue square left of a green triangle\na striped star\n")
    config = {
        "tiny_clip": {"out": "results/weights/tiny/clip", "seed": 0},
        "scorers": {"clip_tiny": {"kind": "clip_score", "weights": "results/weights/tiny/clip/tiny-clip-32.bin",
                                  "model_name": "tiny-clip-32", "config_dir": "results/weights/tiny/clip"}},
        "text_encoders": {"t5": {"source": str(tiny["pipeline"])}},
        "series": {"run": {"checkpoints": [str(ckpts), str(tmp_path / "gone" / "step_5000.pth")],
                           "arch": str(tiny["arch"]), "vae": str(tiny["pipeline"]), "text_encoder": "t5",
                           "uncond": "original", "n_resamples": 200}},
        "benchmarks": {"micro": {"prompts": str(tmp_path / "prompts.txt"), "images_per_prompt": 2,
                                 "seed_rule": "per_image", "seed_base": 42, "metrics": ["clip_tiny"]}},
        "sweep": {"samplers": ["dpm-solver:5"], "cfg": [4.5]},
        "generation": {"batch_size": 4, "shards": 1},
        "prefork": True,  # jobs fork from one pre-imported interpreter; the micro DAG runs them plainly
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, ckpts


def test_series_names_bad_checkpoints_gates_the_rest_and_adds_one_incrementally(tmp_path, tiny):
    config, ckpts = _series_config(tmp_path, tiny)
    result = _run(["--configfile", str(config), "--profile", str(ROOT / "workflows/profiles/local"), "--cores", "2"],
                  tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    series = tmp_path / "results/series/run"
    status = pd.read_csv(series / "checkpoints.csv").set_index("step")
    assert list(status.index) == [1000, 2000, 3000, 5000]
    assert list(status["status"]) == ["ok", "ok", "unreadable", "missing"]
    summary = (series / "summary.md").read_text()
    assert "epoch_3_step_3000.pth: unreadable" in summary and "step_5000.pth: missing" in summary
    assert "| run@1000 | 1000 | baseline |" in summary
    gate = json.loads((series / "gate" / "run@2000.json").read_text())
    assert gate["exit_code"] in (0, 1) and gate["verdict"] in ("pass", "REGRESSED") and gate["comparisons"]
    assert f"| {gate['verdict']}" in next(line for line in summary.splitlines() if line.startswith("| run@2000 "))
    assert (series / "gate" / "run@2000.md").read_text().startswith("## Regression gate")
    table = pd.read_parquet(tmp_path / "results/table.parquet")
    assert sorted(table["model"]) == ["run@1000", "run@2000"] and table["value"].notna().all()
    report = tmp_path / "results/report"
    assert "epoch_3_step_3000.pth: unreadable" in (report / "README.md").read_text()
    assert (report / "tables/series__run.csv").exists() and list((report / "figures").glob("step__run__*.png"))
    # incremental: a new checkpoint schedules its own cell, its gate and the aggregates, nothing else
    shutil.copy(ckpts / "epoch_1_step_1000.pth", ckpts / "epoch_4_step_4000.pth")
    plan = _run(["-n", "--configfile", str(config), "--cores", "2"], tmp_path)
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, re.M)}
    assert counts == {"model_spec": 1, "generate_cell": 1, "score": 1, "series_check": 1, "gate": 1,
                      "series_summary": 1, "table": 1, "history": 1, "report": 1, "all": 1, "total": 10}, \
        plan.stdout[-2000:]


def test_series_discovery_steps_layouts_and_duplicates(tmp_path, tiny):
    from reports.series import discover, parse_step

    assert [parse_step(n) for n in ("epoch_1_step_2000.pth", "step_2000", "ckpt-500.safetensors", "final.pth",
                                    "model_0001200.pt")] == [2000, 2000, 500, None, 1200]
    from safetensors.torch import save_file
    import torch

    blob = torch.load(tiny["original"], weights_only=True)
    save_file({k: v.contiguous() for k, v in blob["state_dict"].items()}, str(tmp_path / "ckpt-300.safetensors"))
    shutil.copytree(tiny["pipeline"], tmp_path / "step_200")
    shutil.copy(tiny["original"], tmp_path / "step_100.pth")
    shutil.copy(tiny["original"], tmp_path / "step_300.pth")      # the same step twice
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    found = discover("s", [str(tmp_path)])
    assert [(c.step, c.model, c.status) for c in found] == [
        (100, "s@100", "ok"), (200, "s@200", "ok"), (300, "s@300", "ok"), (300, None, "skipped"),
        (None, None, "skipped")]
    assert "already" in found[3].reason and "no step number" in found[4].reason
    # EMA: a .pth's state_dict_ema entry, a step folder's transformer_ema/; a safetensors file holds one set of
    # weights, and a folder without transformer_ema/ has no EMA set: both are named, not loaded as EMA
    found = discover("s", [str(tmp_path)], "state_dict_ema")
    assert [(c.step, c.model, c.status) for c in found] == [
        (100, "s@100", "ok"), (200, None, "unreadable"), (300, None, "unreadable"), (300, "s@300", "ok"),
        (None, None, "skipped")]
    assert "transformer_ema/" in found[1].reason and "one set of weights" in found[2].reason
    shutil.copytree(tmp_path / "step_200" / "transformer", tmp_path / "step_200" / "transformer_ema")
    assert discover("s", [str(tmp_path / "step_200")], "state_dict_ema")[0].model == "s@200"
    assert [c.model for c in discover("s", str(tmp_path / "step_*.pth"))] == ["s@100", "s@300"]
    bad = discover("s", [str(tmp_path / "step_100.pth")], "weights_that_do_not_exist")
    assert bad[0].status == "unreadable" and "weights_that_do_not_exist" in bad[0].reason


def _training_config(tmp_path):
    """Three stages on a dataset of coloured squares: class DiT → re-parameterised PixArt → series + ablation."""
    from PIL import Image, ImageDraw

    from pixart.tiny import TINY_TRANSFORMER

    data = tmp_path / "squares"
    data.mkdir()
    colours = {"red": (220, 30, 30), "blue": (40, 60, 220)}
    lines = []
    for i in range(8):
        name = list(colours)[i % 2]
        image = Image.new("RGB", (64, 64), (235, 235, 235))
        ImageDraw.Draw(image).rectangle([4 + 4 * i, 16, 24 + 4 * i, 36], fill=colours[name])
        image.save(data / f"{i}.png")
        lines.append(json.dumps({"file": f"{i}.png", "caption": f"a {name} square", "label": i % 2}))
    (data / "captions.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "prompts.txt").write_text("a red square\na blue square\n")
    dit = dict(sample_size=16, num_layers=2, num_attention_heads=2, attention_head_dim=16, in_channels=4,
               out_channels=8, patch_size=2, num_embeds_ada_norm=2, norm_type="ada_norm_zero",
               activation_fn="gelu-approximate", norm_elementwise_affine=False, norm_eps=1e-6, attention_bias=True)
    fast = {"batch_size": 4, "threads": 1, "optimizer": {"lr": 1e-3, "warmup_steps": 1, "grad_clip": 1.0,
                                                         "lr_scaling": "none"}}
    config = {
        "tiny_models": {"out": "results/weights/tiny", "seed": 0},
        "tiny_clip": {"out": "results/weights/tiny/clip", "seed": 0},
        "scorers": {"clip_tiny": {"kind": "clip_score", "weights": "results/weights/tiny/clip/tiny-clip-32.bin",
                                  "model_name": "tiny-clip-32", "config_dir": "results/weights/tiny/clip"}},
        "text_encoders": {"t5": {"source": "results/weights/tiny/pipeline"}},
        "train": {
            "datasets": {"squares": {"data": str(data), "vae": "results/weights/tiny/pipeline", "text_encoder": "t5",
                                     "resolution": 64, "batch_size": 8}},
            "recipes": {"stage1": {"dataset": "squares", "stage": "class", "model": dit, "steps": 2, "save_every": 2,
                                   **fast},
                        "stage2": {"dataset": "squares", "model": dict(TINY_TRANSFORMER), "steps": 2, "save_every": 1,
                                   "init": {"kind": "dit", "from": "stage1"}, **fast}}},
        "series": {"run": {"checkpoints": "train:stage2", "text_encoder": "t5", "n_resamples": 200}},
        "ablation": {"adaln-single": {"model": "run@2", "stats": "results/train/stage2/stats.json"}},
        "benchmarks": {"micro": {"prompts": str(tmp_path / "prompts.txt"), "images_per_prompt": 2,
                                 "seed_rule": "per_image", "seed_base": 42, "metrics": ["clip_tiny"]}},
        "sweep": {"samplers": ["dpm-solver:5"], "cfg": [4.5]},
        "generation": {"batch_size": 4, "shards": 1},
        "prefork": True,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_training_data_in_any_layout_plans_and_missing_training_sources_are_named(tmp_path):
    """The DAG waited for captions.jsonl, so sidecar .txt captions (read by pixart.train.features) stopped the
    plan; a missing start checkpoint, dataset or dataset VAE first failed when its training job ran, hours in."""
    config = _training_config(tmp_path)
    data = tmp_path / "results/squares"  # under results/, where a rule could write but none does
    shutil.move(tmp_path / "squares", data)
    for line in (data / "captions.jsonl").read_text().splitlines():
        item = json.loads(line)
        (data / item["file"]).with_suffix(".txt").write_text(item["caption"])
    (data / "captions.jsonl").unlink()
    sidecars = yaml.safe_load(config.read_text())
    sidecars["train"]["datasets"]["squares"]["data"] = "results/squares"
    sidecars["train"]["recipes"]["stage1"]["init"] = {"kind": "checkpoint", "source": "facebook/DiT-XL-2-256"}
    config.write_text(yaml.safe_dump(sidecars))
    plan = _run(["-n", "--configfile", str(config), "--cores", "2"], tmp_path)
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-3000:]  # a hub id is not checked here
    assert re.search(r"^train_features\s+1$", plan.stdout, re.M), plan.stdout

    (tmp_path / "data/empty").mkdir(parents=True)
    broken = yaml.safe_load(config.read_text())
    broken["train"]["datasets"]["squares"].update(data="data/gone", vae="weights/tiny/gone/vae")
    broken["train"]["datasets"]["hollow"] = {**broken["train"]["datasets"]["squares"], "data": "data/empty"}
    broken["train"]["recipes"]["stage2"]["init"] = {"kind": "dit", "source": "weights/facebook/DiT-XL-2-256"}
    broken["train"]["recipes"]["stage3"] = {**broken["train"]["recipes"]["stage1"],
                                            "init": {"kind": "checkpoint", "source": "results/train/x/step_1"}}
    config.write_text(yaml.safe_dump(broken))
    out = _run(["-n", "--configfile", str(config), "--cores", "2"], tmp_path)
    said = out.stdout + out.stderr
    assert out.returncode != 0
    assert "train.datasets.squares.data: data/gone does not exist" in said
    assert "train.datasets.hollow.data: data/empty is empty; put the images there" in said
    assert "train.datasets.squares.vae: weights/tiny/gone/vae does not exist" in said
    assert "train.recipes.stage2.init.source: weights/facebook/DiT-XL-2-256 does not exist; fix the path" in said
    assert "train.recipes.stage3.init.source: results/train/x/step_1 does not exist; start from a stage" in said


@pytest.mark.slow
def test_training_stages_feed_a_series_that_is_evaluated_and_gated(tmp_path):
    config = _training_config(tmp_path)
    plan = _run(["-n", "--configfile", str(config), "--cores", "2"], tmp_path)
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, re.M)}
    assert counts["train"] == 2 and counts["train_features"] == 1, plan.stdout
    assert counts["generate_cell"] == 2 and "manifest" not in counts, plan.stdout  # one shard: no merge job
    result = _run(["--configfile", str(config), "--profile", str(ROOT / "workflows/profiles/local"), "--cores", "2"],
                  tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    stats = json.loads((tmp_path / "results/train/stage2/stats.json").read_text())
    assert stats["reparam"] is True and stats["steps"] == 2 and len(stats["checkpoints"]) == 2
    spec = json.loads((tmp_path / "results/models/run@2.json").read_text())
    assert spec["checkpoint"].endswith("stage2/checkpoints/step_0000002/model.pth") and spec["uncond"] == "original"
    status = pd.read_csv(tmp_path / "results/series/run/checkpoints.csv")
    assert list(status["status"]) == ["ok", "ok"]
    assert (tmp_path / "results/series/run/gate/run@2.json").exists()
    table = pd.read_parquet(tmp_path / "results/table.parquet")
    assert sorted(table["model"]) == ["run@1", "run@2"]
    ablation = (tmp_path / "results/report/tables/ablation.md")
    assert ablation.exists() and f"{stats['params']:,}" in ablation.read_text()

    # stage 1 trained on: stage 1 resumes its own run, stage 2 (whose start changed) is retrained, not resumed
    started = json.loads((tmp_path / "results/train/stage2/checkpoints/step_0000002/meta.json").read_text())["start"]
    longer = yaml.safe_load(config.read_text())
    longer["train"]["recipes"]["stage1"].update(steps=3, save_every=1)
    config.write_text(yaml.safe_dump(longer))
    result = _run(["results/train/stage2/stats.json", "--configfile", str(config), "--cores", "2"], tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    runs = tmp_path / "results/train"
    assert json.loads((runs / "stage1/checkpoints/step_0000003/meta.json").read_text())["recipe"]["steps"] == 3
    assert not (runs / "stage1/checkpoints/step_0000001").exists()  # resumed from step 2, not retrained
    restarted = json.loads((runs / "stage2/checkpoints/step_0000002/meta.json").read_text())["start"]
    assert restarted["weights"] != started["weights"] and restarted["features"] == started["features"]
    assert "discarded the stale run" in (tmp_path / "results/logs/train/stage2.log").read_text()
    assert [json.loads(line)["step"] for line in (runs / "stage2/log.jsonl").read_text().splitlines()] == [2]

    # what the features depend on changed (here the T5's max_length): the DAG extracts them anew and retrains
    # both stages, where the features job used to stop and ask for the folder to be deleted by hand
    shorter = yaml.safe_load(config.read_text())
    shorter["text_encoders"]["t5"]["max_length"] = 60
    config.write_text(yaml.safe_dump(shorter))
    result = _run(["results/train/stage2/stats.json", "--configfile", str(config), "--cores", "2"], tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    features = tmp_path / "results/train/features/squares"
    assert json.loads((features / "settings.json").read_text())["max_length"] == 60
    assert "discarded the stale features" in (tmp_path / "results/logs/train/features/squares.log").read_text()
    retrained = json.loads((runs / "stage2/checkpoints/step_0000002/meta.json").read_text())["start"]
    assert retrained["features"] != restarted["features"]
    assert "discarded the stale run" in (tmp_path / "results/logs/train/stage1.log").read_text()
