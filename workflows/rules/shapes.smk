# The shapes world (evals/shapes; DESIGN §9): its training images, its FID reference, and the tiny VAE and
# CLIP trained on it. Used by the embedded demo; any config may use them (section `shapes:`).


rule shapes_train_data:
    output:
        captions=f"{config['shapes']['out']}/train/captions.jsonl",
    params:
        s=config["shapes"],
        render=SHAPES_RENDER_VERSION,  # a change to the renderer re-renders
        out=folder_of("captions"),
    log:
        f"{R}/logs/shapes/train_data.log",
    shell:
        "{PY} -m evals.shapes train --out {params.out} --n {params.s[n_train]} --seed {params.s[seed]}"
        " --size {params.s[size]} > {log} 2>&1"


rule shapes_reference:
    output:
        directory(f"{config['shapes']['out']}/reference"),
    params:
        s=config["shapes"],
        render=SHAPES_RENDER_VERSION,
    log:
        f"{R}/logs/shapes/reference.log",
    shell:
        "{PY} -m evals.shapes reference --out {output} --n {params.s[n_reference]} --seed {params.s[seed]}"
        " --size {params.s[size]} > {log} 2>&1"


rule shapes_vae:
    input:
        captions=rules.shapes_train_data.output.captions,
    output:
        config=f"{config['shapes']['out']}/vae/config.json",
    params:
        s=config["shapes"],
        data=folder_of("captions", "input"),
        out=folder_of("config"),
    threads: config["shapes"]["threads"]
    log:
        f"{R}/logs/shapes/vae.log",
    shell:
        "{PY} -m pixart.train.vae --data {params.data} --out {params.out} --steps {params.s[vae_steps]}"
        " --seed {params.s[seed]} --threads {threads} --crop {params.s[vae_crop]} > {log} 2>&1"


rule shapes_clip:
    input:
        captions=rules.shapes_train_data.output.captions,
    output:
        weights=f"{config['shapes']['out']}/clip/tiny-clip-32.bin",
        config=f"{config['shapes']['out']}/clip/tiny-clip-32.json",
    params:
        s=config["shapes"],
        data=folder_of("captions", "input"),
        out=folder_of("weights"),
    threads: config["shapes"]["threads"]
    log:
        f"{R}/logs/shapes/clip.log",
    shell:
        "{PY} -m evals.shapes.train_clip --data {params.data} --out {params.out} --steps {params.s[clip_steps]}"
        " --seed {params.s[seed]} --threads {threads} > {log} 2>&1"
