# PixArt-α evaluation DAG: prompt set → T5 embeddings → samples per model × benchmark × sampler × cfg × shard.
# Wiring and config lookup only; every step is a `python -m …` command (DESIGN §2).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "workflows/config/demo.yaml"


validate(config, "workflows/schemas/config.schema.yaml")


include: "workflows/rules/common.smk"
include: "workflows/rules/models.smk"
include: "workflows/rules/prompts.smk"
include: "workflows/rules/generate.smk"
include: "workflows/rules/score.smk"
# Reports (reports/) attach to results/table.parquet and the per-cell metric JSONs of score.smk.


rule all:
    input:
        all_manifests(),
        all_metrics(),
        table=f"{R}/table.parquet" if all_metrics() else [],
    default_target: True
