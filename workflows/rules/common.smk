# Helpers and config lookup shared by the rules. No computation here.
import json
import os
import re
import sys
from pathlib import Path

# The interpreter running snakemake (the suite's venv), through the prefork client: a job forks from the
# prefork server when this run started one (config `prefork`), else the client execs python itself.
PY = f"{sys.executable} -m pixart.prefork"
# Jobs import the suite's packages from the checkout, whatever the working directory (--directory). (`update`:
# `snakemake --lint` reads an item assignment to os.environ as an environment variable the workflow needs.)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")])))
sys.path.insert(0, workflow.basedir)
from pixart.samplers import parse_sampler  # light: no torch import
from pixart.train.recipe import TRAINER_VERSION, resolve as resolve_recipe  # light: no torch import
from reports.series import Checkpoint, discover  # light: torch is imported only to read a series' checkpoints
from evals.versions import BACKEND_VERSIONS, SCORER_VERSIONS, SHAPES_RENDER_VERSION  # light: constants
R = config["results"]
# Settings files (model specs, scorer/series/check settings, recipes) are written by a shell printf, not a
# `run:` block: Snakemake runs each `run:` job in a fresh Snakemake process, seconds apiece.
WRITE_SETTINGS = "printf '%s\\n' {params.text:q} > {output} 2> {log}"


def folder_of(key, kind="output"):
    """A `params:` function: the folder that holds a rule's named output (or input) file, read from the file's path
    as Snakemake resolved it rather than rebuilt from config, so the two cannot disagree (`snakemake --lint`)."""

    def folder(wildcards, input, output):
        return str(Path({"input": input, "output": output}[kind][key]).parent)

    return folder


def settings_text(settings: dict) -> str:
    return json.dumps(settings, indent=1, sort_keys=True)


WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".json")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# the scorer keys that name weights or reference images (files, folders or hub ids)
SCORER_PATH_KEYS = ("weights", "blip_weights", "detector_weights", "depth_weights", "clip_weights", "reference")

wildcard_constraints:
    series=r"[^/@]+",
    model=r"[^/]+",
    bench=r"[^/]+",
    encoder=r"[^/]+",
    sampler=r"[a-z-]+-[0-9]+",
    cfg=r"[0-9]+(\.[0-9]+)?",
    shard=r"[0-9]+",
    metric=r"[A-Za-z0-9_.-]+",
    nshards=r"[0-9]+",


def entry_defaults(section):
    """The schema's defaults of one entry of a section (models, benchmarks, scorers, series …)."""
    schema = SCHEMA["properties"][section]["additionalProperties"]["properties"]
    return {k: v["default"] for k, v in schema.items() if "default" in v}


def with_defaults(section, name):
    """One named entry of a section with the schema's per-entry defaults filled in."""
    return {**entry_defaults(section), **config[section][name]}


import yaml

SCHEMA = yaml.safe_load(Path(workflow.basedir, "workflows/schemas/config.schema.yaml").read_text())


def sampler_label(spec):
    return parse_sampler(spec).label


def sampler_spec(label):
    name, steps = label.rsplit("-", 1)
    return f"{name}:{steps}"


def cfg_label(value):
    return f"{float(value):g}" if float(value) != int(value) else f"{float(value):.1f}"


def is_hub_id(source):
    """org/name that is neither a local path nor a weights file's name (weights/clip.bin reads like a hub id)."""
    return bool(HUB_ID.match(source)) and not source.endswith(WEIGHT_SUFFIXES) and not Path(source).exists()


def local_inputs(source):
    """Files a rule must wait for when a source is local (built by another rule or given by the user)."""
    if source is None:
        return []
    if source.endswith(WEIGHT_SUFFIXES):  # a file, even where it reads like a hub id: a missing one is named
        return [source]
    if is_hub_id(source):
        return []
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
    # model folders (from_pretrained) and image folders are inputs as folders; hub ids are not files
    return [p for p in (entry.get(k) for k in SCORER_PATH_KEYS) if p and not is_hub_id(p)]


def bench_models(bench):
    """The models generated for a prompt set: its `models:` (series names expanded), else every model."""
    names = with_defaults("benchmarks", bench)["models"]
    if not names:
        return list(config["models"])
    return [m for name in names for m in (series_models(name) if name in config["series"] else [name])]


def cells(models=None):
    """Every (model, bench, sampler label, cfg label) of the sweep (of `models` only, when given)."""
    for bench, b in config["benchmarks"].items():
        for model in bench_models(bench):
            if models is not None and model not in models:
                continue
            for sampler in b.get("samplers", config["sweep"]["samplers"]):
                for cfg in b.get("cfg", config["sweep"]["cfg"]):
                    yield model, bench, sampler_label(sampler), cfg_label(cfg)


def cell_dir(model, bench, sampler, cfg):
    return f"{R}/samples/{model}/{bench}/{sampler}/cfg{cfg}"


def all_manifests():
    return [f"{cell_dir(*c)}/manifest.parquet" for c in cells()]


def all_metrics(models=None):
    """One aggregate JSON per (cell, metric listed by the cell's benchmark), of `models` only when given."""
    return [f"{R}/metrics/{m}/{b}/{s}/cfg{c}/{metric}.json"
            for m, b, s, c in cells(models) for metric in with_defaults("benchmarks", b)["metrics"]]


def model_metrics(model):
    return all_metrics([model])


def scorer_settings(metric):
    """A scorer's settings as its jobs read them. Reference statistics live under this run's results/ unless
    the scorer names another cache; a judge endpoint named by base_url_env comes from the environment."""
    settings = {"refstats_dir": f"{R}/refstats", **with_defaults("scorers", metric)}
    settings["scorer_version"] = SCORER_VERSIONS.get(settings.get("kind"))  # a bump rescores this kind's cells
    backends = {settings[k] for k in ("vqa", "detector", "color_classifier") if settings.get(k) in BACKEND_VERSIONS}
    if backends:  # and a backend's bump the cells it scored
        settings["backend_versions"] = {name: BACKEND_VERSIONS[name] for name in sorted(backends)}
    if os.environ.get(settings.get("base_url_env") or ""):
        settings["base_url"] = os.environ[settings["base_url_env"]]
    return settings


def protocol_of(bench):
    """bench@version: from the protocol file, or the sha256 of a plain prompt file's content."""
    import hashlib

    b = with_defaults("benchmarks", bench)
    if "protocol" in b:
        from evals.benchmarks.protocols import load_protocol

        tag = load_protocol(b["protocol"]).tag
        return f"{tag}/{b['subset']}" if b["subset"] else tag
    digest = hashlib.sha256(Path(data_path(b["prompts"])).read_bytes()).hexdigest()
    return f"{bench}@custom-{digest[:12]}"


def prompt_limit_arg(bench):
    """The score job's `--prompt-limit N` when the benchmark keeps only its first N prompts, else ''."""
    limit = with_defaults("benchmarks", bench)["limit"]
    return "" if limit is None else f" --prompt-limit {limit}"


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


# ---------------------------------------------------------------------------------------------- training

TRAIN_SOURCE = re.compile(r"^train:(?P<recipe>[^@]+)@(?P<step>\d+|last)$")
DAG_ONLY_RECIPE_KEYS = ("dataset", "gpus", "threads", "priority")


def _train_entry(part, name):
    entries = config.get("train", {}).get(part, {})
    if name not in entries:
        raise ValueError(f"train.{part}: no entry {name!r}; configured: {sorted(entries)}")
    schema = SCHEMA["properties"]["train"]["properties"][part]["additionalProperties"]["properties"]
    return {**{k: v["default"] for k, v in schema.items() if "default" in v}, **entries[name]}


def train_dataset(name):
    return _train_entry("datasets", name)


def train_recipe(name):
    return _train_entry("recipes", name)


def train_priority(name):
    """Scheduling priority of a recipe's training job: the recipe's `priority`, else the number of recipes that
    start from it (directly or through others), so a chain's next stage is not queued behind side runs."""
    explicit = train_recipe(name).get("priority")
    if explicit is not None:
        return explicit
    recipes = config.get("train", {}).get("recipes", {})
    children = [r for r, spec in recipes.items() if spec.get("init", {}).get("from") == name]
    return len(children) + sum(train_priority(c) for c in children)


def vae_inputs(source, subfolder):
    """A VAE in its own folder (no subfolder; e.g. built by a rule) is tracked by its config.json."""
    if subfolder is None and not (HUB_ID.match(source) and not Path(source).exists()):
        return [f"{source}/config.json"]
    return local_inputs(source)


def is_shapes_train_folder(data):
    """Whether a dataset is the shapes world's renders, the one training folder a rule writes (shapes_train_data)."""
    return Path(data).resolve() == Path(config["shapes"]["out"], "train").resolve()


def train_dataset_input(name):
    """What features wait for: captions.jsonl where the folder has one or the shapes rule writes it, else the
    folder itself, for the .tar-shard and sidecar-.txt layouts pixart.train.features also reads."""
    data = train_dataset(name)["data"]
    captions = f"{data}/captions.jsonl"
    return captions if Path(captions).exists() or is_shapes_train_folder(data) else data


def train_dataset_weights(name):
    d = train_dataset(name)
    return vae_inputs(d["vae"], d["vae_subfolder"]) + local_inputs(with_defaults("text_encoders", d["text_encoder"])["source"])


def saved_steps(recipe):
    r = train_recipe(recipe)
    steps = list(range(r["save_every"], r["steps"] + 1, r["save_every"]))
    return steps if steps and steps[-1] == r["steps"] else steps + [r["steps"]]


def step_folder(recipe, step):
    return f"{R}/train/{recipe}/checkpoints/step_{step:07d}"


def train_recipe_file(name):
    """The recipe pixart.train reads: DAG keys dropped, the dataset's features folder and the init path filled in."""
    r = train_recipe(name)
    body = {k: v for k, v in r.items() if k not in DAG_ONLY_RECIPE_KEYS}
    init = dict(r["init"])
    if "from" in init:
        init["source"] = step_folder(init["from"], train_recipe(init.pop("from"))["steps"])
    body["init"] = init
    body["features"] = f"{R}/train/features/{r['dataset']}"
    body.setdefault("resolution", train_dataset(r["dataset"])["resolution"])
    body.setdefault("multiscale", train_dataset(r["dataset"])["multiscale"])
    return body


def train_init_inputs(name):
    init = train_recipe(name)["init"]
    return [f"{R}/train/{init['from']}/stats.json"] if "from" in init else []


def train_launcher(name):
    gpus = train_recipe(name)["gpus"]
    return PY if gpus == 1 else f"{PY} -m accelerate.commands.launch --multi_gpu --num_processes {gpus}"


def train_source(checkpoint):
    """(recipe, step) of a `train:<recipe>@<step|last>` model source, or None for any other source."""
    match = TRAIN_SOURCE.match(checkpoint or "")
    if match is None:
        return None
    recipe = match["recipe"]
    step = train_recipe(recipe)["steps"] if match["step"] == "last" else int(match["step"])
    if step not in saved_steps(recipe):
        raise ValueError(f"{checkpoint}: recipe {recipe!r} saves steps {saved_steps(recipe)}; name one of them or @last")
    return recipe, step


def resolved_model(name):
    """A models: entry with a `train:` source replaced by the step's original-layout .pth (whose null caption the
    model was trained with, hence uncond: original unless set), its config and the dataset's VAE."""
    m = with_defaults("models", name)
    trained = train_source(m["checkpoint"])
    if trained is None:
        return {**m, "uncond": m["uncond"] or "diffusers"}
    recipe, step = trained
    dataset = train_dataset(train_recipe(recipe)["dataset"])
    folder = step_folder(recipe, step)
    return {**m, "checkpoint": f"{folder}/model.pth", "arch": f"{folder}/transformer/config.json",
            "vae": m["vae"] or dataset["vae"], "vae_subfolder": m["vae_subfolder"] if m["vae"] else dataset["vae_subfolder"],
            "uncond": m["uncond"] or "original", "trained": {"recipe": recipe, "step": step}}


def model_weight_inputs(name):
    """Files generation waits for: the training stage of a `train:` model, else local weights."""
    m = with_defaults("models", name)
    trained = train_source(m["checkpoint"])
    if trained is not None:
        m = resolved_model(name)
        return [f"{R}/train/{trained[0]}/stats.json"] + vae_inputs(m["vae"], m["vae_subfolder"])
    files = local_inputs(m["checkpoint"]) + local_inputs(m["vae"])
    return files + ([m["arch"]] if m["arch"] != "xl-2" else [])


# ------------------------------------------------------------------------------------------------ series

SERIES_MODEL_KEYS = tuple(k for k in SCHEMA["properties"]["models"]["additionalProperties"]["properties"]
                          if k != "checkpoint")


def series_recipe(name):
    """The training recipe of a series given as `checkpoints: "train:<recipe>"`, else None."""
    spec = config["series"][name]["checkpoints"]
    return spec[len("train:"):] if isinstance(spec, str) and spec.startswith("train:") else None


def series_spec(name):
    """The paths a series names; a training series names the step folders its recipe will save."""
    recipe = series_recipe(name)
    if recipe is not None:
        return [step_folder(recipe, step) for step in saved_steps(recipe)]
    spec = config["series"][name]["checkpoints"]
    return [spec] if isinstance(spec, str) else list(spec)


def series_checkpoints(name):
    """A training series' checkpoints do not exist yet when the DAG is built: every saved step is evaluated
    (models `train:<recipe>@<step>`) and series_check reads them after training."""
    recipe = series_recipe(name)
    if recipe is None:
        return discover(name, series_spec(name), series_weights(name))
    return [Checkpoint(step_folder(recipe, step), step, f"{name}@{step}", "ok") for step in saved_steps(recipe)]


def series_check_inputs(name):
    recipe = series_recipe(name)
    if recipe is not None:
        return [f"{R}/train/{recipe}/stats.json"]
    return [c.path for c in SERIES[name] if c.status != "missing"]


def series_model_entry(name, checkpoint):
    """The models: entry of one checkpoint of a series: the series' model keys with this checkpoint."""
    return {"checkpoint": checkpoint, **{k: v for k, v in config["series"][name].items() if k in SERIES_MODEL_KEYS}}


def series_weights(name):
    """The entry of an original .pth the series reads (the models: default unless the series names one)."""
    return config["series"][name].get("weights", entry_defaults("models")["weights"])


# Which checkpoints become models is decided here, when the DAG is built, from their names and headers; the
# series_check job writes the same answer (reports.series.discover) into the status table the summary shows.
SERIES = {name: series_checkpoints(name) for name in config["series"]}
for _name, _checkpoints in SERIES.items():
    for _c in _checkpoints:
        if _c.model in config["models"]:
            raise ValueError(f"series {_name}: checkpoint model {_c.model} is also a `models:` entry; rename one")
        if _c.model:
            source = f"train:{series_recipe(_name)}@{_c.step}" if series_recipe(_name) else _c.path
            config["models"][_c.model] = series_model_entry(_name, source)


def series_models(name):
    """The evaluated (readable) checkpoints of a series, in step order."""
    return [c.model for c in SERIES[name] if c.model]


def series_baseline(name):
    """The model the series is gated against; None when that checkpoint is missing or unreadable."""
    baseline = str(with_defaults("series", name)["baseline"])
    models = series_models(name)
    if baseline == "first":
        return models[0] if models else None
    if baseline.isdigit():
        return f"{name}@{int(baseline)}" if f"{name}@{int(baseline)}" in models else None
    return baseline


def series_candidates(name):
    baseline = series_baseline(name)
    return [m for m in series_models(name) if m != baseline] if baseline else []


def series_gate_reports(name):
    return [f"{R}/series/{name}/gate/{m}.json" for m in series_candidates(name)]


def series_settings(name):
    """What the gate and the summary read: the resolved baseline and the gate's settings."""
    s = with_defaults("series", name)
    return {"series": name, "baseline": series_baseline(name), "baseline_rule": str(s["baseline"]),
            **{k: s[k] for k in ("alpha", "n_resamples", "thresholds", "fail_on_regression")}}


def series_report_inputs():
    """The files the report reads per series: status table, settings, gate reports."""
    return [f for name in config["series"] for f in (f"{R}/series/{name}/checkpoints.csv",
                                                     f"{R}/series/{name}/settings.json",
                                                     *series_gate_reports(name))]


def series_summaries():
    return [f"{R}/series/{name}/summary.md" for name in config["series"]]


# ------------------------------------------------------------------------------------------------ checks
def checks_settings():
    """The checks section for reports.checks, recipes resolved to their training logs."""
    out = {}
    for name, c in config["checks"].items():
        c = dict(c)
        if c["kind"] == "steps_to_loss":
            c["runs"] = {r: f"{R}/train/{r}/log.jsonl" for r in c.pop("recipes")}
        out[name] = c
    return out


def checks_inputs():
    """What the checks read besides the table: the stats.json that marks each compared recipe trained."""
    return sorted({f"{R}/train/{r}/stats.json" for c in config["checks"].values() for r in c.get("recipes", [])})


# ------------------------------------------------------------------------------------------------ ablation
def ablation_args():
    """reports.build arguments mapping the ablation rows to models and their training stats."""
    return " ".join(f"--ablation {row}={r['model']}" + (f" --train-stats {r['model']}={r['stats']}" if r.get("stats")
                                                         else "")
                    for row, r in config["ablation"].items())


def train_stats_inputs():
    """Training stats of the ablation rows: those of this config's recipes are built by the train rule; others
    are read when present (a missing one shows as n/a)."""
    built = {f"{R}/train/{recipe}/stats.json" for recipe in config.get("train", {}).get("recipes", {})}
    return [r["stats"] for r in config["ablation"].values()
            if r.get("stats") and (r["stats"] in built or Path(r["stats"]).exists())]


# ------------------------------------------------------------------------------------------------ references
def built_by_rules(path):
    """Whether a path lies where this config's rules write (results, tiny weights, the shapes world)."""
    roots = [R] + [config.get(section, {}).get("out") for section in ("tiny_models", "tiny_clip", "shapes")]
    resolved = Path(path).resolve()
    return any(root and (resolved == Path(root).resolve() or Path(root).resolve() in resolved.parents)
               for root in roots)


def missing_local_sources():
    """User-given files and folders that are not there. Snakemake names a missing input only when it must
    run the job: with the old outputs present, a mistyped checkpoint path kept the old model's numbers."""
    sources = [(f"models.{name}.{key}", entry.get(key)) for name, entry in config["models"].items()
               for key in ("checkpoint", "arch", "vae")]
    sources += [(f"text_encoders.{name}.source", entry.get("source")) for name, entry in config["text_encoders"].items()]
    sources += [(f"scorers.{name}.{key}", entry.get(key)) for name, entry in config["scorers"].items()
                for key in SCORER_PATH_KEYS]
    sources += [(f"train.datasets.{name}.vae", train_dataset(name)["vae"])
                for name in config.get("train", {}).get("datasets", {})]
    problems = []
    for where, source in sources:
        if not isinstance(source, str) or source.startswith("train:") or source == "xl-2":  # a built-in arch
            continue
        if not is_hub_id(source) and not Path(source).exists() and not built_by_rules(source):
            problems.append(f"{where}: {source} does not exist (and no rule of this config builds it); fix the path")
    return problems


def training_source_problems():
    """Training inputs that no job is ordered after: a dataset folder (only the shapes world's is written by a rule)
    must hold data, and a start checkpoint given by path must exist (a stage of this config is `init.from`)."""
    train = config.get("train", {})
    problems = []
    for name in train.get("datasets", {}):
        data = train_dataset(name)["data"]  # a folder, also where its path reads like a hub id
        if is_shapes_train_folder(data):
            continue
        fill = "put the images there with captions.jsonl, .txt captions beside them or .tar shards"
        if not Path(data).is_dir():
            problems.append(f"train.datasets.{name}.data: {data} does not exist; {fill}, or fix the path")
        elif next(Path(data).iterdir(), None) is None:
            problems.append(f"train.datasets.{name}.data: {data} is empty; {fill}")
    for name in train.get("recipes", {}):
        source = train_recipe(name)["init"].get("source")
        if source and not is_hub_id(source) and not Path(source).exists():
            fix = ("start from a stage of this config with init.from: <recipe>" if built_by_rules(source)
                   else "fix the path")
            problems.append(f"train.recipes.{name}.init.source: {source} does not exist; {fix}")
    return problems


def benchmark_problems():
    """Keys a benchmark's kind ignores (a protocol fixes its prompts' images and seeds; a prompt file has no
    subsets), an unknown subset and a missing prompt file, named before any job runs."""
    from evals.benchmarks.protocols import ProtocolError, load_protocol

    defaults = entry_defaults("benchmarks")  # validation fills them in: a key counts as set where it differs
    problems = []
    for bench, b in config["benchmarks"].items():
        if "protocol" in b:
            ignored = sorted(k for k in ("images_per_prompt", "seed_rule", "seed_base", "column")
                             if k in b and b[k] != defaults.get(k))
            fix = "the protocol fixes them; remove them, or use prompts: for a prompt file of your own"
            try:
                load_protocol(b["protocol"]).subset(b.get("subset"))
            except ProtocolError as err:
                problems.append(f"benchmarks.{bench}: {err}")
            if b.get("source") and not Path(b["source"]).exists():
                problems.append(f"benchmarks.{bench}.source: {b['source']} does not exist; fix the path")
        else:
            ignored = sorted(k for k in ("subset", "source") if b.get(k) not in (None, defaults.get(k)))
            fix = "a prompt file has no subsets or source; remove them"
            if "prompts" in b and not Path(data_path(b["prompts"])).is_file():
                problems.append(f"benchmarks.{bench}.prompts: {b['prompts']} does not exist; fix the path")
        if ignored:
            problems.append(f"benchmarks.{bench}: {ignored} would be ignored: {fix}")
    return problems


def check_metric_problems(name, c):
    """A check's bench/metric pairs and cfg values must be ones the DAG scores: otherwise the check read
    'not scored' forever, which names no typo."""
    problems = []
    metrics = c.get("metrics", [])
    pairs = [(c["bench"], c["metric"])] if c["kind"] == "cfg" else [m.split("/", 1) for m in metrics]
    for bench, metric in pairs:  # (the schema makes every metrics: entry a bench/metric pair)
        if bench in config["benchmarks"] and metric not in config["benchmarks"][bench].get("metrics", []):
            problems.append(f"checks.{name}: {metric!r} is not a metric of benchmarks.{bench} "
                            f"({config['benchmarks'][bench].get('metrics', [])})")
        elif bench not in config["benchmarks"] and c["kind"] != "cfg":
            problems.append(f"checks.{name}.metrics: {bench!r} is not a benchmarks: entry")
    if c["kind"] == "cfg" and c["bench"] in config["benchmarks"]:
        swept = [float(v) for v in config["benchmarks"][c["bench"]].get("cfg", config["sweep"]["cfg"])]
        problems += [f"checks.{name}.cfg: {v} is not swept for benchmarks.{c['bench']} ({swept})"
                     for v in c.get("cfg", []) if float(v) not in swept]
    return problems


def check_references():
    """Names that point at other config entries must exist: the error names the key and what is there."""
    problems = []
    for section in ("models", "series"):
        for name, entry in config[section].items():
            if entry.get("text_encoder") not in config["text_encoders"]:
                problems.append(f"{section}.{name}.text_encoder: {entry.get('text_encoder')!r} is not an entry of "
                                f"text_encoders ({sorted(config['text_encoders'])})")
    known = set(config["models"]) | set(config["series"])
    for bench, b in config["benchmarks"].items():
        problems += [f"benchmarks.{bench}.models: {m!r} is neither a models: entry nor a series ({sorted(known)})"
                     for m in b.get("models", []) if m not in known]
        problems += [f"benchmarks.{bench}.metrics: {m!r} is not an entry of scorers ({sorted(config['scorers'])})"
                     for m in b.get("metrics", []) if m not in config["scorers"]]
    for name, s in config["series"].items():
        baseline = str(s.get("baseline", "first"))
        if baseline != "first" and not baseline.isdigit() and baseline not in config["models"]:
            problems.append(f"series.{name}.baseline: {baseline!r} is not 'first', a step number or a models: entry")
    problems += [f"ablation.{row}.model: {r['model']!r} is not a model ({sorted(config['models'])})"
                 for row, r in config["ablation"].items() if r["model"] not in config["models"]]
    recipes = config.get("train", {}).get("recipes", {})
    for name, c in config["checks"].items():
        if c["kind"] == "checkpoints" and c["series"] not in config["series"]:
            problems.append(f"checks.{name}.series: {c['series']!r} is not a series ({sorted(config['series'])})")
        if c["kind"] == "cfg" and c["model"] not in known:
            problems.append(f"checks.{name}.model: {c['model']!r} is neither a models: entry nor a series")
        if c["kind"] == "cfg" and c["bench"] not in config["benchmarks"]:
            problems.append(f"checks.{name}.bench: {c['bench']!r} is not a benchmarks: entry")
        problems += [f"checks.{name}.recipes: {r!r} is not a train: recipe ({sorted(recipes)})"
                     for r in c.get("recipes", []) if r not in recipes]
        problems += check_metric_problems(name, c)
    # a recipe key pixart.train would refuse fails when the DAG is built, not when its training job starts
    for name in recipes:
        try:
            resolve_recipe(train_recipe_file(name), where=f"train.recipes.{name}")
        except ValueError as err:
            problems.append(str(err))
    # the shipped shapes protocol's prompts and FID captions come from world seed 0 (evals/benchmarks/shapes.yaml)
    shapes_benches = sorted(b for b, e in config["benchmarks"].items() if e.get("protocol") == "shapes")
    if shapes_benches and config.get("shapes", {}).get("seed", 0) != 0:
        problems.append(f"shapes.seed: {config['shapes']['seed']}, but benchmarks {shapes_benches} use the shapes "
                        f"protocol, whose prompts were drawn from the seed-0 world: with another seed its held-out "
                        f"prompts become training captions and the FID reference renders other captions. Use "
                        f"shapes.seed 0 (vary the training recipes' seeds instead)")
    problems += missing_local_sources() + training_source_problems() + benchmark_problems()
    problems += [f"scorers.{name}: a wise judge needs base_url (or base_url_env set in the environment)"
                 for name, s in config["scorers"].items()
                 if s["kind"] == "wise" and not scorer_settings(name).get("base_url")]
    if problems:
        raise ValueError("config: " + "; ".join(problems))


check_references()
