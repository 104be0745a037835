# Prompt sets and their cached T5 embeddings (content-addressed store shared by every model).


rule prompts:
    input:
        lambda w: prompt_inputs(w.bench),
    output:
        f"{R}/prompts/{{bench}}.parquet",
    params:
        command=lambda w: prompt_command(w.bench),
        protocol=lambda w: protocol_of(w.bench),  # a version bump rebuilds the prompt set and all that follows
    log:
        f"{R}/logs/prompts/{{bench}}.log",
    shell:
        "{PY} -m {params.command} --out {output} > {log} 2>&1"


rule embeddings:
    input:
        prompts=rules.prompts.output[0],
        encoder=lambda w: local_inputs(config["text_encoders"][w.encoder]["source"]),
    output:
        f"{R}/embeds/{{encoder}}/{{bench}}.json",
    params:
        e=lambda w: with_defaults("text_encoders", w.encoder),
        clean=lambda w: str(with_defaults("text_encoders", w.encoder)["clean_caption"]).lower(),
        negative=lambda w: with_defaults("text_encoders", w.encoder)["negative_prompt"],
        store=f"{R}/embeds/store",
        device=config["generation"]["device"],
    resources:
        gpu=1,
    log:
        f"{R}/logs/embeddings/{{encoder}}/{{bench}}.log",
    shell:
        "{PY} -m pixart.embeddings --prompts {input.prompts} --text-encoder {params.e[source]}"
        " --subfolder {params.e[subfolder]} --tokenizer-subfolder {params.e[tokenizer_subfolder]}"
        " --clean-caption {params.clean} --max-length {params.e[max_length]}"
        " --negative-prompt={params.negative:q} --encoder-dtype {params.e[dtype]}"
        " --store-dtype {params.e[store_dtype]} --device {params.device}"
        " --store {params.store} --out {output} > {log} 2>&1"
