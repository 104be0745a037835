"""The embedded demo (workflows/config/demo.yaml, the shapes world) end to end in Snakemake, at a smaller size:
the same rules and models, fewer scenes, steps and prompts. Checks what the demo promises: every stage trains,
every checkpoint is scored, the report has every table and figure it can build, the checks are evaluated,
and a second run has nothing to do."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


def demo_config() -> dict:
    """A fresh copy of workflows/config/demo.yaml, to derive test configs from."""
    return yaml.safe_load((ROOT / "workflows/config/demo.yaml").read_text())


DEMO_CHECKS = demo_config()["checks"]
# the one claim that does not hold on 2 CPU cores, even at 10× the demo's steps (docs/status.md)
COMPOSE_CHECK = "later_checkpoints_compose_better"


def _run(args, cwd, timeout=900):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def small_demo_config(tmp_path: Path) -> Path:
    """demo.yaml with fewer scenes, training steps, prompts and cells; every section and rule kept (shape and
    texture use the colour rule's scorer, so they are left out here)."""
    config = demo_config()
    config["shapes"].update(n_train=300, n_reference=40, vae_steps=40, clip_steps=60)
    recipes = config["train"]["recipes"]
    recipes["stage1-dit"].update(steps=10, save_every=10)
    for name in ("stage2", "stage2-adaln", "stage2-no-reparam"):
        recipes[name].update(steps=20, save_every=10)
    recipes["stage3"].update(steps=5, save_every=5)
    config["ablation"]["adaln-single"]["model"] = "stage2@20"
    del config["benchmarks"]["shape"], config["benchmarks"]["texture"]
    for bench in config["benchmarks"].values():
        bench["limit"] = 40 if bench["subset"].startswith("fid") else 6
    config["benchmarks"]["geneval"]["limit"] = None  # GenEval's Overall needs prompts of all six tasks
    config["benchmarks"]["fid_cfg"]["cfg"] = config["checks"]["clip_rises_with_cfg"]["cfg"] = [1.0, 3.0]
    config["sweep"]["samplers"] = ["dpm-solver:5"]
    config["scorers"]["clip_fid_shapes"]["n_resamples"] = 100
    config["series"]["stage2"]["n_resamples"] = 200
    config["checks"]["reparam_converges_sooner"]["window"] = 10
    path = tmp_path / "demo-small.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_small_demo_runs_every_stage_to_the_report_and_reruns_nothing(tmp_path):
    config = small_demo_config(tmp_path)
    started = time.perf_counter()
    result = _run(["--configfile", str(config), "--profile", str(ROOT / "workflows/profiles/local"), "--cores", "2"],
                  tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    cold = time.perf_counter() - started
    res = tmp_path / "results"
    assert "serving on" in (res / "logs/prefork.log").read_text()  # demo.yaml forks its jobs (pixart/prefork.py)
    vae = json.loads((res / "shapes/vae/train_summary.json").read_text())
    assert vae["psnr_held_out"] > vae["psnr_untrained"]
    stats = {recipe: json.loads((res / f"train/{recipe}/stats.json").read_text()) for recipe in
             ("stage1-dit", "stage2", "stage2-adaln", "stage2-no-reparam", "stage3")}
    assert {recipe: s["steps"] for recipe, s in stats.items()} == {"stage1-dit": 10, "stage2": 20, "stage2-adaln": 20,
                                                                   "stage2-no-reparam": 20, "stage3": 5}
    # the chain: stage 2 (both variants) re-parameterised from stage 1's last checkpoint, the ablation's third run
    # from scratch, stage 3 from the weights of stage 2's last checkpoint
    for recipe in ("stage2", "stage2-adaln"):
        assert stats[recipe]["reparam"] is True and stats[recipe]["init"]["kind"] == "dit"
        assert stats[recipe]["init"]["source"].endswith("train/stage1-dit/checkpoints/step_0000010")
    assert stats["stage2-no-reparam"]["reparam"] is False and stats["stage2-no-reparam"]["init"]["kind"] == "scratch"
    stage2_last = json.loads((res / "train/stage2/checkpoints/step_0000020/meta.json").read_text())
    stage3_last = json.loads((res / "train/stage3/checkpoints/step_0000005/meta.json").read_text())
    assert stage3_last["start"]["weights"] == stage2_last["fingerprint"]
    table = pd.read_parquet(res / "table.parquet")
    cells = set(zip(table["model"], table["bench"], table["cfg"], table["metric"]))
    for model in ("stage2@10", "stage2@20", "pixart-shapes", "adaln", "no-reparam"):
        assert (model, "fid", 4.5, "clip_fid_shapes") in cells and (model, "fid", 4.5, "clip_shapes") in cells
    assert {("pixart-shapes", "fid_cfg", c, "clip_shapes") for c in (1.0, 3.0)} <= cells
    for bench, metric in (("color", "shapes_binding"), ("spatial", "shapes_spatial"), ("complex", "shapes_complex"),
                          ("geneval", "shapes_geneval")):
        assert ("pixart-shapes", bench, 4.5, metric) in cells
    assert table["value"].notna().all() and (table["ci_low"] <= table["ci_high"]).all()
    # a change to the oracle (code of this suite, versioned in evals/versions.py) rescores the cells it scored
    from evals.versions import BACKEND_VERSIONS
    for scorer in ("shapes_binding", "shapes_spatial", "shapes_complex", "shapes_geneval"):
        settings = json.loads((res / f"scorers/{scorer}.json").read_text())
        assert settings["backend_versions"] == {"shapes_oracle": BACKEND_VERSIONS["shapes_oracle"]}, scorer
    # the oracle's answers are exact: every image's binding score is a product of 0/1 answers
    per_image = pd.concat(pd.read_parquet(p) for p in (res / "scores").glob("*/*/*/*/shapes_binding.parquet"))
    assert len(per_image) >= 10 and per_image["score"].isin([0.0, 1.0]).all()

    report = res / "report"
    names = {p.name for p in (report / "tables").iterdir()}
    assert {"ablation.md", "checks.md", "series__stage2.md", "compbench_rules.md", "geneval_rules.md"} <= names, names
    categories = (report / "tables/compbench_rules.md").read_text()
    assert all(f"| {c} |" in categories for c in ("Color", "2D Spatial", "Complex"))  # the categories scored here
    figures = {p.name for p in (report / "figures").glob("*.png")}
    assert any(f.startswith("fid_vs_clip") for f in figures) and any(f.startswith("step__") for f in figures)
    assert "grid__pixart-shapes__fid_cfg__dpm-solver-5.png" in figures, figures
    checks = json.loads((report / "checks.json").read_text())
    assert set(checks) == set(DEMO_CHECKS)
    for check in checks.values():  # each was evaluated (its verdict may be either at this size)
        assert check["holds"] in (True, False) and check["measured"]
    assert "stage2: step" in checks["reparam_converges_sooner"]["measured"]
    assert (res / "series/stage2/summary.md").exists() and (res / "series/stage2/gate/stage2@20.json").exists()

    html = _run(["--configfile", str(config), "--report", "report.html"], tmp_path)
    assert html.returncode == 0 and (tmp_path / "report.html").stat().st_size > 50_000, html.stderr[-2000:]
    started = time.perf_counter()
    again = _run(["-n", "--configfile", str(config), "--cores", "2"], tmp_path)
    warm = time.perf_counter() - started
    assert "Nothing to be done" in again.stdout + again.stderr
    assert warm < 15, f"a rerun with nothing to do took {warm:.1f} s"
    print(f"small demo: cold {cold:.0f} s, warm no-op {warm:.1f} s")
    # the ablation table reads the three training runs' stats
    ablation = (report / "tables/ablation.md").read_text()
    for recipe in ("stage2-adaln", "stage2", "stage2-no-reparam"):
        params = json.loads((res / f"train/{recipe}/stats.json").read_text())["params"]
        assert f"{params:,}" in ablation
    summary = (res / "logs/report.log").read_text().splitlines()[-1]  # what `make demo` shows at its end
    assert re.match(rf"report: checks: \d of {len(DEMO_CHECKS)} hold", summary), summary


def demo_size_config(tmp_path: Path) -> Path:
    """demo.yaml at its own sizes (scenes, models, training steps, prompts, sampler: the same trained weights
    and numbers as `make demo`), less what the asserted checks do not read: the adaLN run, the ablation's
    samples, every compositional category and GenEval (the compositional check does not hold at this size;
    the small demo test evaluates it), and the headline model's cells other than its cfg sweep."""
    config = demo_config()
    del config["train"]["recipes"]["stage2-adaln"], config["models"]["adaln"], config["models"]["no-reparam"]
    config["ablation"] = {}
    for bench in ("color", "shape", "texture", "spatial", "complex", "geneval"):
        del config["benchmarks"][bench]
    del config["checks"][COMPOSE_CHECK]
    config["benchmarks"]["fid"]["models"] = ["stage2"]
    path = tmp_path / "demo-checks.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_at_the_demos_size_the_metrics_move_the_way_they_must(tmp_path):
    """The issue's behaviour claims, on the demo's own models: FID and CLIP score of the last stage-2
    checkpoint beat the first with CIs apart, CLIP score rises with cfg over the low range, the re-parameterised
    run reaches the loss sooner. (The compositional claim does not hold at the demo's CPU budget: docs/status.md
    has the numbers, up to 10× the demo's stage-2 steps.)"""
    result = _run(["--configfile", str(demo_size_config(tmp_path)), "--profile", str(ROOT / "workflows/profiles/local"),
                   "--cores", "2"], tmp_path, timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    checks = json.loads((tmp_path / "results/report/checks.json").read_text())
    assert set(checks) == set(DEMO_CHECKS) - {COMPOSE_CHECK}
    for name, check in checks.items():
        assert check["holds"] is True, f"{name}: {check['measured']}"
    print({name: check["measured"] for name, check in checks.items()})
