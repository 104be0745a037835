# Helpers and config lookup shared by the rules. No computation here.
import json
import os
import re
import sys
from pathlib import Path

PY = sys.executable  # the interpreter running snakemake (the suite's venv)
# Jobs import the suite's packages from the checkout, whatever the working directory (--directory).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))
sys.path.insert(0, workflow.basedir)
from pixart.samplers import parse_sampler  # light: no torch import
R = config["results"]
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".json")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

wildcard_constraints:
    model=r"[^/]+",
    bench=r"[^/]+",
    encoder=r"[^/]+",
    sampler=r"[a-z-]+-[0-9]+",
    cfg=r"[0-9]+(\.[0-9]+)?",
    shard=r"[0-9]+",
    metric=r"[A-Za-z0-9_.-]+",
    nshards=r"[0-9]+",


def with_defaults(section, name):
    """One named entry of a section with the schema's per-entry defaults filled in."""
    schema = SCHEMA["properties"][section]["additionalProperties"]["properties"]
    entry = config[section][name]
    return {**{k: v["default"] for k, v in schema.items() if "default" in v}, **entry}


import yaml

SCHEMA = yaml.safe_load(Path(workflow.basedir, "workflows/schemas/config.schema.yaml").read_text())


def sampler_label(spec):
    return parse_sampler(spec).label


def sampler_spec(label):
    name, steps = label.rsplit("-", 1)
    return f"{name}:{steps}"


def cfg_label(value):
    return f"{float(value):g}" if float(value) != int(value) else f"{float(value):.1f}"


def local_inputs(source):
    """Files a rule must wait for when a source is local (built by another rule or given by the user)."""
    if source is None or (HUB_ID.match(source) and not Path(source).exists()):
        return []
    if source.endswith(WEIGHT_SUFFIXES):
        return [source]
    # A pipeline folder (ours, or not yet built) is tracked by model_index.json, a plain model folder by
    # config.json: the same answer before and after the folder exists, so reruns see no input change.
    folder = Path(source)
    if folder.is_dir() and not (folder / "model_index.json").exists():
        return [str(folder / "config.json")] if (folder / "config.json").exists() else []
    return [f"{source}/model_index.json"]


def data_path(path):
    """A data file named relative to the checkout (e.g. workflows/data/…) works from any working directory."""
    return path if Path(path).is_absolute() or Path(path).exists() else str(Path(workflow.basedir, path))


def scorer_inputs(metric):
    """Local weights and the reference image folder a scorer reads (built by a rule or given by the user)."""
    entry = config["scorers"][metric]
    paths = [entry.get(k) for k in ("weights", "blip_weights", "detector_weights", "depth_weights", "clip_weights",
                                    "reference")]
    # model folders (from_pretrained) and image folders are inputs as folders; hub ids are not files
    return [p for p in paths if p and not (HUB_ID.match(p) and not Path(p).exists())]


def cells():
    """Every (model, bench, sampler label, cfg label) of the sweep."""
    for model in config["models"]:
        for bench, b in config["benchmarks"].items():
            for sampler in b.get("samplers", config["sweep"]["samplers"]):
                for cfg in b.get("cfg", config["sweep"]["cfg"]):
                    yield model, bench, sampler_label(sampler), cfg_label(cfg)


def cell_dir(model, bench, sampler, cfg):
    return f"{R}/samples/{model}/{bench}/{sampler}/cfg{cfg}"


def all_manifests():
    return [f"{cell_dir(*c)}/manifest.parquet" for c in cells()]


def all_metrics():
    """One aggregate JSON per (cell, metric listed by the cell's benchmark)."""
    return [f"{R}/metrics/{m}/{b}/{s}/cfg{c}/{metric}.json"
            for m, b, s, c in cells() for metric in with_defaults("benchmarks", b)["metrics"]]


def protocol_of(bench):
    """bench@version: from the protocol file, or the sha256 of a plain prompt file's content."""
    import hashlib

    b = with_defaults("benchmarks", bench)
    if "protocol" in b:
        from evals.benchmarks.protocols import load_protocol

        return load_protocol(b["protocol"]).tag + (f"/{b['subset']}" if b["subset"] else "")
    digest = hashlib.sha256(Path(data_path(b["prompts"])).read_bytes()).hexdigest()
    return f"{bench}@custom-{digest[:12]}"


def prompt_inputs(bench):
    b = config["benchmarks"][bench]
    return [data_path(b["prompts"])] if "prompts" in b else ([b["source"]] if b.get("source") else [])


def prompt_command(bench):
    """The module and arguments that write a benchmark's prompt-set parquet (protocol or plain file)."""
    b = with_defaults("benchmarks", bench)
    size = " ".join(f"--{k} {b[k]}" for k in ("height", "width", "limit") if b[k] is not None)
    if "protocol" in b:
        extra = "".join(f" --{k} {b[k]}" for k in ("subset", "source") if b[k])
        return f"evals.benchmarks --benchmark {b['protocol']}{extra} {size}"
    return (f"pixart.prompts --source {data_path(b['prompts'])} --column {b['column']}"
            f" --images-per-prompt {b['images_per_prompt']} --seed-rule {b['seed_rule']}"
            f" --seed-base {b['seed_base']} {size}")
