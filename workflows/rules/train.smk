# Training: offline features per dataset, then one job per recipe stage (resumable: a rerun continues from the
# last checkpoint under results/train/<recipe>/checkpoints/ when that checkpoint comes from the same start and
# recipe; one from another start, e.g. stage 3's after stage 2 was retrained, is discarded: --discard-stale).
# Models `train:<recipe>@<step>` read those checkpoints (common.smk: resolved_model), so evaluation waits for
# the stage that writes them.


rule train_features:
    input:
        data=lambda w: train_dataset_input(w.dataset),
        weights=lambda w: train_dataset_weights(w.dataset),
    output:
        index=f"{R}/train/features/{{dataset}}/index.parquet",
    params:
        d=lambda w: train_dataset(w.dataset),
        vae_subfolder=lambda w: train_dataset(w.dataset)["vae_subfolder"] or "''",
        t5=lambda w: with_defaults("text_encoders", train_dataset(w.dataset)["text_encoder"]),
        out=folder_of("index"),
        clean=lambda w: str(with_defaults("text_encoders", train_dataset(w.dataset)["text_encoder"])["clean_caption"]).lower(),
        multiscale=lambda w: "--multiscale" if train_dataset(w.dataset)["multiscale"] else "",
    resources:
        gpu=1,
    log:
        f"{R}/logs/train/features/{{dataset}}.log",
    shell:
        "{PY} -m pixart.train.features --data {params.d[data]} --out {params.out} --vae {params.d[vae]}"
        " --vae-subfolder {params.vae_subfolder} --text-encoder {params.t5[source]}"
        " --text-encoder-subfolder {params.t5[subfolder]} --tokenizer-subfolder {params.t5[tokenizer_subfolder]}"
        " --clean-caption {params.clean} --max-length {params.t5[max_length]}"
        " --resolution {params.d[resolution]} {params.multiscale} --batch-size {params.d[batch_size]}"
        " --discard-stale > {log} 2>&1"


rule train_recipe:
    output:
        f"{R}/train/{{recipe}}/recipe.json",
    params:
        text=lambda w: settings_text(train_recipe_file(w.recipe)),
        trainer=TRAINER_VERSION,  # a new version rewrites the recipe file: the stage retrains (--discard-stale)
    localrule: True
    log:
        f"{R}/logs/settings/train/{{recipe}}.log",
    shell:
        WRITE_SETTINGS


rule train:
    input:
        recipe=rules.train_recipe.output[0],
        features=lambda w: f"{R}/train/features/{train_recipe(w.recipe)['dataset']}/index.parquet",
        init=lambda w: train_init_inputs(w.recipe),
    output:
        stats=f"{R}/train/{{recipe}}/stats.json",
    params:
        out=folder_of("stats"),
        launch=lambda w: train_launcher(w.recipe),
    threads: lambda w: train_recipe(w.recipe)["threads"]
    resources:
        gpu=lambda w: train_recipe(w.recipe)["gpus"],
    priority: lambda w: train_priority(w.recipe)
    log:
        f"{R}/logs/train/{{recipe}}.log",
    shell:
        "{params.launch} -m pixart.train --recipe {input.recipe} --out {params.out} --threads {threads}"
        " --discard-stale > {log} 2>&1"
