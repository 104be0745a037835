# Model sources: tiny local weights (demo/tests) and one resolved spec per configured model.


rule tiny_weights:
    output:
        pipeline=f"{config['tiny_models']['out']}/pipeline/model_index.json",
        original=f"{config['tiny_models']['out']}/original.pth",
        arch=f"{config['tiny_models']['out']}/transformer_config.json",
    params:
        out=folder_of("original"),
        seed=config["tiny_models"]["seed"],
        local="--local-text-attention" if config["tiny_models"]["local_text_attention"] else "",
    log:
        f"{R}/logs/tiny_weights.log",
    shell:
        "{PY} -m pixart.tiny --out {params.out} --seed {params.seed} {params.local} > {log} 2>&1"


rule model_spec:
    output:
        f"{R}/models/{{model}}.json",
    params:
        text=lambda w: settings_text({"name": w.model, **resolved_model(w.model)}),
    localrule: True
    log:
        f"{R}/logs/settings/models/{{model}}.log",
    shell:
        WRITE_SETTINGS
