# Scoring: one job per (cell, metric), then one tidy table of every number of the run.


rule tiny_clip:
    output:
        weights=f"{config['tiny_clip']['out']}/tiny-clip-32.bin",
        config=f"{config['tiny_clip']['out']}/tiny-clip-32.json",
    params:
        out=folder_of("weights"),
        seed=config["tiny_clip"]["seed"],
    log:
        f"{R}/logs/tiny_clip.log",
    shell:
        "{PY} -m evals.tiny clip --out {params.out} --seed {params.seed} > {log} 2>&1"


rule tiny_compbench:
    output:
        blip=directory(f"{config['tiny_compbench']['out']}/blip"),
        owlv2=directory(f"{config['tiny_compbench']['out']}/owlv2"),
        dpt=directory(f"{config['tiny_compbench']['out']}/dpt"),
        mask2former=directory(f"{config['tiny_compbench']['out']}/mask2former"),
    params:
        out=folder_of("blip"),
        seed=config["tiny_compbench"]["seed"],
    log:
        f"{R}/logs/tiny_compbench.log",
    shell:
        "{PY} -m evals.tiny compbench --out {params.out} --seed {params.seed} > {log} 2>&1"


rule tiny_reference:
    output:
        directory(config["tiny_reference"]["out"]),
    params:
        n=config["tiny_reference"]["n"],
        seed=config["tiny_reference"]["seed"],
    log:
        f"{R}/logs/tiny_reference.log",
    shell:
        "{PY} -m evals.tiny shapes --out {output} --n {params.n} --seed {params.seed} > {log} 2>&1"


rule scorer_settings:
    output:
        f"{R}/scorers/{{metric}}.json",
    params:
        text=lambda w: settings_text(scorer_settings(w.metric)),
    localrule: True
    log:
        f"{R}/logs/settings/scorers/{{metric}}.log",
    shell:
        WRITE_SETTINGS


rule checks_settings:
    output:
        f"{R}/checks/settings.json",
    params:
        text=settings_text(checks_settings()),
    localrule: True
    log:
        f"{R}/logs/settings/checks.log",
    shell:
        WRITE_SETTINGS


rule refstats:
    input:
        settings=rules.scorer_settings.output[0],
        data=lambda w: scorer_inputs(w.metric),
    output:
        f"{R}/refstats/{{metric}}.json",
    resources:
        gpu=1,
    log:
        f"{R}/logs/refstats/{{metric}}.log",
    shell:
        "{PY} -m evals.refstats --settings {input.settings} --out {output} > {log} 2>&1"


rule score:
    input:
        manifest=f"{CELL}/manifest.parquet",
        settings=rules.scorer_settings.output[0],
        refstats=lambda w: [f"{R}/refstats/{w.metric}.json"] if config["scorers"][w.metric]["kind"] == "fidelity" else [],
        weights=lambda w: scorer_inputs(w.metric),
    output:
        scores=f"{R}/scores/{{model}}/{{bench}}/{{sampler}}/cfg{{cfg}}/{{metric}}.parquet",
        metric=f"{R}/metrics/{{model}}/{{bench}}/{{sampler}}/cfg{{cfg}}/{{metric}}.json",
    params:
        cell=lambda w: cell_dir(w.model, w.bench, w.sampler, w.cfg),
        protocol=lambda w: protocol_of(w.bench),
        limit=lambda w: prompt_limit_arg(w.bench),
        history=f"{R}/history",
    resources:
        gpu=1,
    log:
        f"{R}/logs/score/{{model}}/{{bench}}/{{sampler}}/cfg{{cfg}}/{{metric}}.log",
    shell:
        "{PY} -m evals.score --scorer {wildcards.metric} --settings {input.settings} --cell {params.cell}"
        " --protocol {params.protocol} --bench {wildcards.bench}{params.limit} --scores-out {output.scores}"
        " --metric-out {output.metric} --history-dir {params.history} > {log} 2>&1"


rule table:
    input:
        all_metrics(),
    output:
        f"{R}/table.parquet",
    log:
        f"{R}/logs/table.log",
    shell:
        "{PY} -m evals.table --out {output} {input} > {log} 2>&1"


rule history:
    input:
        all_metrics(),
    output:
        f"{R}/history.parquet",
    params:
        history=rules.score.params.history,
    log:
        f"{R}/logs/history.log",
    shell:
        "{PY} -m evals.table --out {output} --history {params.history} > {log} 2>&1"


rule report:
    input:
        table=rules.table.output[0],
        paper=f"{workflow.basedir}/reports/paper_values.yaml",  # an edited paper value rebuilds the report
        manifests=all_manifests(),
        series=series_report_inputs(),
        train_stats=train_stats_inputs(),
        checks=[f"{R}/checks/settings.json", *checks_inputs()] if config["checks"] else [],
    output:
        tables=report(directory(f"{R}/report/tables"), patterns=["{name}.csv"], category="Tables",
                      caption="../report/tables.rst"),
        figures=report(directory(f"{R}/report/figures"), patterns=["{name}.png"], category="Figures",
                       caption="../report/figures.rst"),
    params:
        out=folder_of("tables"),
        samples=f"{R}/samples",
        scores=f"{R}/scores",
        series=" ".join(f"--series {R}/series/{name}" for name in config["series"]),
        ablation=ablation_args(),
        checks=f"--checks {R}/checks/settings.json" if config["checks"] else "",
    log:
        f"{R}/logs/report.log",
    shell:
        "{PY} -m reports.build --table {input.table} --paper-values {input.paper} --out {params.out}"
        " --samples {params.samples} --scores {params.scores} {params.series} {params.ablation} {params.checks}"
        " > {log} 2>&1"
