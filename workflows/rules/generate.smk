# Sample generation: one job per shard of a cell, then the cell's manifest. With one shard per cell the
# generation job writes the manifest itself (one process instead of two per cell).

GENERATE = (
    "{PY} -m pixart.generate --model-spec {input.spec} --prompts {input.prompts}"
    " --embeddings {input.embeddings} --sampler {params.sampler} --cfg {wildcards.cfg}"
    " --batch-size {params.g[batch_size]} --device {params.g[device]} {params.binning} {params.shard_args}"
    " --out {params.cell} --quiet > {log} 2>&1"
)
CELL = f"{R}/samples/{{model}}/{{bench}}/{{sampler}}/cfg{{cfg}}"
GENERATE_INPUT = dict(
    spec=rules.model_spec.output[0],
    prompts=rules.prompts.output[0],
    embeddings=lambda w: f"{R}/embeds/{config['models'][w.model]['text_encoder']}/{w.bench}.json",
    weights=lambda w: model_weight_inputs(w.model),
)
GENERATE_PARAMS = dict(
    sampler=lambda w: sampler_spec(w.sampler),
    cell=lambda w: cell_dir(w.model, w.bench, w.sampler, w.cfg),
    g=config["generation"],
    binning=lambda w: "" if config["generation"]["binning"] else "--no-binning",
)

if config["generation"]["shards"] == 1:

    rule generate_cell:
        input:
            **GENERATE_INPUT,
        output:
            shard=f"{CELL}/manifest.shard0of1.parquet",
            manifest=f"{CELL}/manifest.parquet",
        params:
            **GENERATE_PARAMS,
            shard_args="--shard 0 --num-shards 1 --write-manifest",
        resources:
            gpu=1,
        log:
            f"{R}/logs/generate/{{model}}/{{bench}}/{{sampler}}/cfg{{cfg}}/shard0of1.log",
        shell:
            GENERATE

else:

    rule generate_shard:
        input:
            **GENERATE_INPUT,
        output:
            f"{CELL}/manifest.shard{{shard}}of{{nshards}}.parquet",
        params:
            **GENERATE_PARAMS,
            shard_args=lambda w: f"--shard {w.shard} --num-shards {w.nshards}",
        resources:
            gpu=1,
        log:
            f"{R}/logs/generate/{{model}}/{{bench}}/{{sampler}}/cfg{{cfg}}/shard{{shard}}of{{nshards}}.log",
        shell:
            GENERATE

    rule manifest:
        input:
            shards=lambda w: expand(
                f"{cell_dir(w.model, w.bench, w.sampler, w.cfg)}/manifest.shard{{i}}of{{n}}.parquet",
                i=range(config["generation"]["shards"]),
                n=config["generation"]["shards"],
            ),
            prompts=rules.prompts.output[0],
        output:
            f"{CELL}/manifest.parquet",
        params:
            cell=lambda w: cell_dir(w.model, w.bench, w.sampler, w.cfg),
            n=config["generation"]["shards"],
        log:
            f"{R}/logs/manifest/{{model}}/{{bench}}/{{sampler}}/cfg{{cfg}}.log",
        shell:
            "{PY} -m pixart.manifest --cell {params.cell} --num-shards {params.n} --prompts {input.prompts} > {log} 2>&1"
