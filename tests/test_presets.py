"""The presets in workflows/config/: each validates against the schema and plans (snakemake -n, SLURM profile) the
expected jobs, with empty placeholder files standing in for the weights and data it names."""
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = yaml.safe_load((ROOT / "workflows/schemas/config.schema.yaml").read_text())
LOCAL_ROOTS = ("weights/", "data/", "runs/")
FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".json", ".csv")

# Jobs per rule in a fresh dry run. Shards are jobs, images are not: COCO-30K is 8 jobs per model, not 30,000.
EXPECTED = {
    "paper-table2": {"model_spec": 4, "prompts": 1, "embeddings": 1, "scorer_settings": 2, "refstats": 1,
                     "generate_shard": 32, "manifest": 4, "score": 8, "table": 1, "history": 1, "report": 1, "all": 1},
    "paper-table3": {"model_spec": 2, "prompts": 8, "embeddings": 8, "scorer_settings": 8, "generate_shard": 64,
                     "manifest": 16, "score": 24, "table": 1, "history": 1, "report": 1, "all": 1},
    "paper-wise": {"model_spec": 1, "prompts": 1, "embeddings": 1, "scorer_settings": 1, "generate_shard": 2,
                   "manifest": 1, "score": 1, "table": 1, "history": 1, "report": 1, "all": 1},
    "paper-ablation": {"model_spec": 3, "prompts": 2, "embeddings": 2, "scorer_settings": 2, "refstats": 2,
                       "train_features": 1, "train_recipe": 3, "train": 3, "generate_shard": 12, "manifest": 6,
                       "score": 6, "table": 1, "history": 1, "report": 1, "all": 1},
    "cfg-sweep": {"model_spec": 4, "prompts": 9, "embeddings": 9, "scorer_settings": 8, "refstats": 1,
                  "generate_shard": 384, "manifest": 96, "score": 128, "table": 1, "history": 1, "report": 1, "all": 1},
    "checkpoint-series": {"model_spec": 3, "prompts": 3, "embeddings": 3, "scorer_settings": 4, "refstats": 1,
                          "generate_shard": 18, "manifest": 9, "score": 12, "series_settings": 1, "series_check": 1,
                          "gate": 2, "series_summary": 1, "table": 1, "history": 1, "report": 1, "all": 1},
}
PRESETS = sorted(EXPECTED)


def test_every_preset_is_tested():
    assert sorted(p.stem for p in (ROOT / "workflows/config").glob("*.yaml") if not p.stem.startswith("demo")) == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates_and_starts_with_what_it_costs(name):
    text = (ROOT / f"workflows/config/{name}.yaml").read_text()
    jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load(text))
    header = text[:text.index("\nresults:")]
    assert all(line.startswith("#") for line in header.splitlines()), "the comment block comes first"
    assert "Estimated GPU time on one H100" in header and "ESTIMATE" in header and "docs/benchmarks.md" in header
    assert "Weights and data" in header or "Checkpoints:" in header


def local_paths(value, roots=LOCAL_ROOTS):
    """Every string of a config that names a local path under one of `roots` (weights/…, data/…, runs/…)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from local_paths(v, roots)
    elif isinstance(value, list):
        for v in value:
            yield from local_paths(v, roots)
    elif isinstance(value, str) and value.startswith(roots):
        yield value


def fake_checkpoint(path):
    """A few tensors under PixArt's original key names: enough for the series' header check."""
    import torch

    state = {"x_embedder.proj.weight": torch.zeros(2, 2), "blocks.0.attn.qkv.weight": torch.zeros(2, 2)}
    torch.save({"state_dict": state, "state_dict_ema": state}, path)


def placeholders(config: dict, root: Path):
    for rel in local_paths(config):
        path = root / rel
        if path.suffix in FILE_SUFFIXES:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    for dataset in config.get("train", {}).get("datasets", {}).values():
        (root / dataset["data"] / "captions.jsonl").touch()
    for series in config.get("series", {}).values():
        for step in (1000, 2000, 3000):
            fake_checkpoint(root / series["checkpoints"] / f"epoch_1_step_{step}.pth")


def dry_run(config_paths: Path | list[Path], cwd: Path, *extra):
    """`snakemake -n` with the SLURM profile; several config files merge in order, as on the command line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    paths = config_paths if isinstance(config_paths, list) else [config_paths]
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n",
                           "--configfile", *map(str, paths), "--profile", str(ROOT / "workflows/profiles/slurm"),
                           *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """The job counts per rule from `snakemake -n`'s summary table."""
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", dry_run_output, re.M) if rule != "total"}


def demo_with_overlay(overlay: Path) -> dict:
    """demo.yaml with an overlay merged over it, as Snakemake merges two --configfile's, validated."""
    from snakemake.utils import update_config

    config = yaml.safe_load((ROOT / "workflows/config/demo.yaml").read_text())
    update_config(config, yaml.safe_load(overlay.read_text()))
    jsonschema.Draft202012Validator(SCHEMA).validate(config)
    return config


@pytest.mark.parametrize("name", PRESETS)
def test_preset_plans_the_expected_jobs(name, tmp_path):
    path = ROOT / f"workflows/config/{name}.yaml"
    placeholders(yaml.safe_load(path.read_text()), tmp_path)
    result = dry_run(path, tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    counts = planned_jobs(result.stdout)
    assert counts == EXPECTED[name]


DEMO_GPU_JOBS = {"checks_settings": 1, "model_spec": 6, "prompts": 8, "scorer_settings": 6, "series_settings": 1,
                 "shapes_reference": 1, "shapes_train_data": 1, "tiny_weights": 1, "train_recipe": 5,
                 "embeddings": 8, "shapes_clip": 1, "shapes_vae": 1, "refstats": 1, "train_features": 1, "train": 5,
                 "generate_cell": 22, "score": 32, "series_check": 1, "gate": 2, "history": 1, "series_summary": 1,
                 "table": 1, "report": 1, "all": 1}


def test_demo_gpu_overlay_plans_the_demo_at_gpu_size(tmp_path):
    """demo-gpu.yaml merges over demo.yaml as Snakemake merges two --configfile's: the result validates, writes
    only under results-gpu/, and plans the demo's DAG with the series at steps 5,000, 10,000 and 15,000."""
    demo, overlay = ROOT / "workflows/config/demo.yaml", ROOT / "workflows/config/demo-gpu.yaml"
    config = demo_with_overlay(overlay)
    # demo.yaml's anchors make nested mappings (optimizer, model) shared objects: check every recipe as merged
    sizes = {name: (r["steps"], r["save_every"], r["batch_size"], r["num_workers"], r["optimizer"]["lr"],
                    r["optimizer"]["warmup_steps"]) for name, r in config["train"]["recipes"].items()}
    assert sizes == {"stage1-dit": (1000, 1000, 256, 4, 3e-4, 500), "stage2": (15000, 5000, 256, 6, 3e-4, 500),
                     "stage2-adaln": (5000, 5000, 256, 3, 3e-4, 500),
                     "stage2-no-reparam": (5000, 5000, 256, 3, 3e-4, 500), "stage3": (2000, 2000, 256, 6, 1e-4, 1)}
    assert all(recipe["preload"] for recipe in config["train"]["recipes"].values())
    assert config["generation"]["device"] == "cuda"
    assert config["tiny_models"]["local_text_attention"] is True  # the plain random T5 cannot bind attributes
    stray = [p for p in local_paths(config, ("results",)) if not p.startswith("results-gpu")]
    assert not stray, f"demo-gpu.yaml leaves these paths in the CPU demo's results/: {stray}"
    result = dry_run([demo, overlay], tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    counts = planned_jobs(result.stdout)
    assert counts == DEMO_GPU_JOBS
    series = sorted(set(re.findall(r"results-gpu/samples/stage2@(\d+)/", result.stdout)), key=int)
    assert series == ["5000", "10000", "15000"]


def test_the_device_shakedown_plans_every_rule_of_the_gpu_demo(tmp_path):
    """tools/device/shakedown.yaml (demo.yaml's DAG at test size, run beside the GPU demo) validates, and its plan
    has every rule demo-gpu.yaml's has, so a rule that fails on the GPU machine fails in the shakedown first."""
    demo, overlay = ROOT / "workflows/config/demo.yaml", ROOT / "tools/device/shakedown.yaml"
    config = demo_with_overlay(overlay)
    assert config["generation"]["device"] == "cuda" and config["prefork"] is False
    assert config["tiny_models"]["local_text_attention"] is True
    result = dry_run([demo, overlay], tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    counts = planned_jobs(result.stdout)
    assert set(counts) == set(DEMO_GPU_JOBS)
    assert sorted(set(re.findall(r"results/samples/stage2@(\d+)/", result.stdout)), key=int) == ["10", "20"]


def test_preset_with_a_missing_weight_names_the_file(tmp_path):
    path = ROOT / "workflows/config/paper-wise.yaml"
    placeholders(yaml.safe_load(path.read_text()), tmp_path)
    (tmp_path / "weights/PixArt-alpha/PixArt-XL-2-1024-MS.pth").unlink()
    result = dry_run(path, tmp_path)
    assert result.returncode != 0 and "weights/PixArt-alpha/PixArt-XL-2-1024-MS.pth" in result.stdout + result.stderr


def test_a_name_that_points_nowhere_is_named(tmp_path):
    config = yaml.safe_load((ROOT / "workflows/config/paper-wise.yaml").read_text())
    placeholders(config, tmp_path)
    config["benchmarks"]["wise"]["models"] = ["pixart-1024"]
    config["ablation"] = {"adaln": {"model": "nope"}}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    out = dry_run(path, tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "benchmarks.wise.models: 'pixart-1024' is neither a models: entry nor a series" in text
    assert "ablation.adaln.model: 'nope' is not a model" in text
