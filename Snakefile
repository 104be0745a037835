# PixArt-α evaluation DAG: prompt set → T5 embeddings → samples per model × benchmark × sampler × cfg × shard
# → scores → table, report; checkpoint series → status, gates, summary.
# Wiring and config lookup only; every step that computes is a `python -m …` command (DESIGN §2).
from snakemake.utils import min_version, validate

min_version("9.0")


# The embedded demo only when no --configfile is given: Snakemake would merge it under a user's config
# (its benchmarks and models would join every preset's DAG).
if not config:

    configfile: "workflows/config/demo.yaml"



report: "workflows/report/workflow.rst"


validate(config, "workflows/schemas/config.schema.yaml")


include: "workflows/rules/common.smk"
include: "workflows/rules/models.smk"
include: "workflows/rules/prompts.smk"
include: "workflows/rules/generate.smk"
include: "workflows/rules/score.smk"
# score.smk ends with the report rule (reports.build: paper tables, figures) for `snakemake --report`.
include: "workflows/rules/series.smk"
include: "workflows/rules/train.smk"
include: "workflows/rules/shapes.smk"


# One import of torch/diffusers/open_clip for the whole run instead of one per job (pixart/prefork.py).
if config["prefork"]:
    from pixart import prefork

    PREFORK = {}

    onstart:
        PREFORK["server"] = prefork.start_server(f"{R}/logs/prefork.log")

    onsuccess:
        prefork.stop_server(PREFORK["server"])

    onerror:
        prefork.stop_server(PREFORK["server"])


rule all:
    input:
        all_manifests(),
        all_metrics(),
        table=f"{R}/table.parquet" if all_metrics() else [],
        report=f"{R}/report/figures" if all_metrics() else [],
        history=f"{R}/history.parquet" if all_metrics() else [],
        series=series_summaries(),
    default_target: True
