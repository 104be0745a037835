"""Generation: seeds, parity with stock diffusers, shards, kill-and-resume, cached vs text path, bad input."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pixart import generate, pngio
from pixart.engine import Engine, EngineError, sample_noise
from pixart.prompts import expand_samples, read_prompt_file
from pixart.samplers import SamplerError, parse_sampler

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a red circle left of a blue square", "a striped green triangle", "two yellow stars",
           "a dotted purple square above a red circle", "an orange ring"]


@pytest.fixture(scope="module")
def cell_inputs(tiny, tmp_path_factory):
    """Prompt set (5 prompts × 2 images, seeds 42 + k), embedding pointer, and both model specs."""
    from pixart import embeddings

    root = tmp_path_factory.mktemp("cell")
    (root / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    expand_samples(read_prompt_file(root / "p.txt"), 2, "per_image", 42).to_parquet(root / "prompts.parquet")
    embeddings.main(["--prompts", str(root / "prompts.parquet"), "--text-encoder", str(tiny["pipeline"]),
                     "--store", str(root / "store"), "--out", str(root / "emb.json"), "--clean-caption", "false"])
    specs = {
        "diffusers": {"name": "tiny-d", "checkpoint": str(tiny["pipeline"])},
        "original": {"name": "tiny-o", "checkpoint": str(tiny["original"]), "arch": str(tiny["arch"]),
                     "vae": str(tiny["pipeline"]), "uncond": "original"},
    }
    for name, spec in specs.items():
        (root / f"{name}.json").write_text(json.dumps(spec))
    return root


def _generate(root, out, *extra, spec="diffusers"):
    args = ["--model-spec", str(root / f"{spec}.json"), "--prompts", str(root / "prompts.parquet"),
            "--out", str(out), "--batch-size", "3", "--quiet", *extra]
    if "--text-encoder" not in extra:
        args += ["--embeddings", str(root / "emb.json")]
    return generate.run(generate.parser().parse_args(args))


def _pngs(folder):
    """Pixels and provenance of every PNG, less the wall-clock seconds (which differ run to run)."""
    out = {}
    for p in sorted(Path(folder).glob("*.png")):
        meta = pngio.read_meta(p)
        meta.pop("seconds")
        out[p.name] = (np.asarray(pngio.Image.open(p)).tobytes(), meta)
    return out


def _pixels(folder):
    return {p.name: np.asarray(pngio.Image.open(p)) for p in sorted(Path(folder).glob("*.png"))}


def test_a_png_whose_metadata_is_not_ours_reads_as_none(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(pngio.META_KEY, "not json")
    pngio.Image.new("RGB", (4, 4)).save(tmp_path / "x.png", pnginfo=info)
    assert pngio.read_meta(tmp_path / "x.png") is None  # it raised JSONDecodeError


def test_noise_depends_only_on_the_seed():
    together, _ = sample_noise([7, 8, 9], (4, 8, 8))
    alone = torch.cat([sample_noise([s], (4, 8, 8))[0] for s in (9, 7, 8)])
    assert torch.equal(together, alone[[1, 2, 0]])


def test_same_seed_same_images_and_seed_rule(cell_inputs, tmp_path):
    a = _generate(cell_inputs, tmp_path / "a")
    _generate(cell_inputs, tmp_path / "b")
    assert a["images"] == 10 and _pngs(tmp_path / "a") == _pngs(tmp_path / "b")
    manifest = pd.read_parquet(a["manifest"])
    assert sorted(manifest.loc[manifest.prompt_id == "p000003", "seed"]) == [42, 43]  # T2I-CompBench rule
    for column in ("model_fingerprint", "scheduler_config", "steps", "cfg", "seed", "uncond", "dtype", "device",
                   "versions", "code_version", "seconds", "height", "width"):
        assert manifest[column].notna().all(), column


def test_a_float16_t5_keeps_the_modules_transformers_keeps_in_float32(tiny):
    """`.to(float16)` after loading cast T5's `wo` projections too, which overflow in fp16 (T5's clamps then
    hide it as finite, wrong states); loading in the dtype keeps them float32, as PixArtAlphaPipeline's
    from_pretrained(torch_dtype=float16) does."""
    from transformers import T5EncoderModel

    from pixart.checkpoints import load_text_encoder

    _, encoder = load_text_encoder(str(tiny["pipeline"]), dtype=torch.float16)
    reference = T5EncoderModel.from_pretrained(str(tiny["pipeline"]), subfolder="text_encoder", dtype=torch.float16)
    dtypes = {name: p.dtype for name, p in encoder.named_parameters()}
    assert dtypes == {name: p.dtype for name, p in reference.named_parameters()}
    assert {d for name, d in dtypes.items() if ".wo." in name} == {torch.float32}
    assert {d for name, d in dtypes.items() if ".wo." not in name} == {torch.float16}


def _tiny_engine(tiny, prompts) -> Engine:
    """The tiny pipeline's transformer and VAE in an engine over the prompts' T5 states."""
    from pixart.checkpoints import load_text_encoder, load_transformer, load_vae
    from pixart.embeddings import encode_prompts

    tokenizer, encoder = load_text_encoder(str(tiny["pipeline"]))
    table = encode_prompts(prompts, tokenizer, encoder, clean_caption=False, progress=False)
    return Engine(load_transformer(str(tiny["pipeline"])).transformer, load_vae(str(tiny["pipeline"])), table)


def test_engine_matches_stock_diffusers_pipeline(tiny):
    """Given the same conditioning, the denoising loop and decode are diffusers' bit for bit (the conditioning
    itself is checked against diffusers' own encoding in the next test)."""
    from diffusers import PixArtAlphaPipeline

    engine = _tiny_engine(tiny, PROMPTS[:3])
    context, mask = engine.conditioning(PROMPTS[:3], guided=True)
    pipe = PixArtAlphaPipeline.from_pretrained(str(tiny["pipeline"]))
    pipe.set_progress_bar_config(disable=True)
    for sampler in ("dpm-solver:20", "sa-solver:25", "ddim:10"):
        spec = parse_sampler(sampler)
        pipe.scheduler = spec.build()
        ref = pipe(prompt_embeds=context[3:], prompt_attention_mask=mask[3:], negative_prompt=None,
                   negative_prompt_embeds=context[:3], negative_prompt_attention_mask=mask[:3],
                   generator=[torch.Generator().manual_seed(s) for s in (1, 2, 3)], num_inference_steps=spec.steps,
                   guidance_scale=4.5, height=64, width=64, use_resolution_binning=False, output_type="pil").images
        ours = engine.decode(engine.denoise(PROMPTS[:3], [1, 2, 3], 64, 64, spec, 4.5), 64, 64)
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ours, ref)), sampler


def test_guided_conditioning_is_what_diffusers_encodes_and_the_original_null_caption(tiny):
    """[uncond; cond] against PixArtAlphaPipeline's own prompt and negative-prompt encoding: the same states on
    the valid tokens (16-bit store), the same masks, nothing valid beyond the batch's longest prompt; the images
    from text agree within one level. The original convention puts the checkpoint's null caption under each
    prompt's own mask."""
    from diffusers import PixArtAlphaPipeline

    prompts = PROMPTS[:3]
    engine = _tiny_engine(tiny, prompts)
    context, mask = engine.conditioning(prompts, guided=True)
    pipe = PixArtAlphaPipeline.from_pretrained(str(tiny["pipeline"]))
    pipe.set_progress_bar_config(disable=True)
    cond, cond_mask, uncond, uncond_mask = pipe.encode_prompt(prompts, do_classifier_free_guidance=True,
                                                              negative_prompt="", clean_caption=False)
    length = context.shape[1]
    assert length == int(cond_mask.sum(1).max())
    assert not cond_mask[:, length:].any() and not uncond_mask[:, length:].any()
    assert torch.equal(mask[3:], cond_mask[:, :length]) and torch.equal(mask[:3], uncond_mask[:, :length])
    for ours, theirs, valid in ((context[3:], cond, cond_mask), (context[:3], uncond, uncond_mask)):
        valid = valid[:, :length].bool()
        torch.testing.assert_close(ours[valid], theirs[:, :length][valid].half().float(), rtol=2 ** -9, atol=1e-5)
        assert not ours[~valid].any()  # padding is zero; the mask hides it either way
    spec = parse_sampler("dpm-solver:10")
    pipe.scheduler = spec.build()
    ref = pipe(prompt=prompts, negative_prompt="", clean_caption=False, num_inference_steps=spec.steps,
               generator=[torch.Generator().manual_seed(s) for s in (1, 2, 3)], guidance_scale=4.5, height=64,
               width=64, use_resolution_binning=False, output_type="np").images
    latents = engine.denoise(prompts, [1, 2, 3], 64, 64, spec, 4.5)
    ours = np.stack([np.asarray(i) for i in engine.decode(latents, 64, 64)])
    assert np.abs(ours.astype(int) - np.round(ref * 255).astype(int)).max() <= 1

    null = torch.randn(120, context.shape[2])
    original = Engine(engine.transformer, engine.vae, engine.table, null="original", null_embedding=null)
    context, mask = original.conditioning(prompts, guided=True)
    assert torch.equal(context[:3], null[:length].expand(3, -1, -1)) and torch.equal(mask[:3], mask[3:])


def test_uncond_conventions_differ_and_iddpm_runs(cell_inputs, tmp_path):
    _generate(cell_inputs, tmp_path / "d", "--sampler", "iddpm:10")
    _generate(cell_inputs, tmp_path / "o", "--sampler", "iddpm:10", spec="original")
    d, o = _pixels(tmp_path / "d"), _pixels(tmp_path / "o")
    assert d.keys() == o.keys() and any(not np.array_equal(d[k], o[k]) for k in d)
    assert pd.read_parquet(tmp_path / "o" / "manifest.shard0of1.parquet")["uncond"].iloc[0] == "original"


def test_shard_union_equals_single_run(cell_inputs, tmp_path):
    _generate(cell_inputs, tmp_path / "single")
    for shard in range(3):
        _generate(cell_inputs, tmp_path / "sharded", "--shard", str(shard), "--num-shards", "3")
    from pixart.manifest import merge

    merged = merge(tmp_path / "sharded", 3, cell_inputs / "prompts.parquet")
    assert len(merged) == 10
    assert _pngs(tmp_path / "single") == _pngs(tmp_path / "sharded")


def test_cached_embeddings_equal_text_path(cell_inputs, tiny, tmp_path):
    _generate(cell_inputs, tmp_path / "cache")
    _generate(cell_inputs, tmp_path / "text", "--text-encoder", str(tiny["pipeline"]))
    cache, text = _pixels(tmp_path / "cache"), _pixels(tmp_path / "text")
    assert cache.keys() == text.keys() and all(np.array_equal(cache[k], text[k]) for k in cache)
    from_cache, in_process = (pd.read_parquet(tmp_path / f / "manifest.shard0of1.parquet").iloc[0]
                              for f in ("cache", "text"))
    assert in_process["text_path"] == "in-process"
    assert in_process["embeddings_key"] == from_cache["embeddings_key"]  # same states, same key
    # the text path's key covers the negative prompt: another one regenerates rather than reusing
    again = _generate(cell_inputs, tmp_path / "text", "--text-encoder", str(tiny["pipeline"]),
                      "--negative-prompt", "blurry")
    assert again["reused"] == 0 and again["new"] == 10


def test_kill_and_resume_equals_uninterrupted(cell_inputs, tmp_path):
    _generate(cell_inputs, tmp_path / "whole")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pixart.generate", "--model-spec", str(cell_inputs / "diffusers.json"),
           "--prompts", str(cell_inputs / "prompts.parquet"), "--embeddings", str(cell_inputs / "emb.json"),
           "--out", str(out), "--batch-size", "3", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*.png")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(list(out.glob("*.png")))
    assert 0 < partial < 10, "the kill should land mid-run"
    # a truncated file under a final name (e.g. copied by hand) is not counted as done
    victim = next(iter(sorted(out.glob("*.png"))))
    victim.write_bytes(victim.read_bytes()[:100])
    summary = _generate(cell_inputs, out)
    assert summary["reused"] == partial - 1 and summary["new"] == 10 - partial + 1
    assert _pngs(tmp_path / "whole") == _pngs(out)


def test_interrupted_write_leaves_no_partial_png(tmp_path, monkeypatch):
    image = pngio.Image.new("RGB", (8, 8))

    def full_disk(self, fh, *args, **kwargs):
        fh.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pngio.Image.Image, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        pngio.write_png(image, tmp_path / "x.png", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_changed_settings_regenerate_instead_of_reusing(cell_inputs, tmp_path):
    _generate(cell_inputs, tmp_path / "c", "--cfg", "4.5")
    summary = _generate(cell_inputs, tmp_path / "c", "--cfg", "2.0")
    assert summary["reused"] == 0 and summary["new"] == 10


def test_changed_size_or_architecture_regenerates(cell_inputs, tmp_path):
    """The same weights at another output size, or under another transformer config, are other images."""
    small = cell_inputs / "small.parquet"
    frame = pd.read_parquet(cell_inputs / "prompts.parquet").assign(height=32, width=32)
    frame.to_parquet(small)
    _generate(cell_inputs, tmp_path / "c")
    summary = generate.run(generate.parser().parse_args([
        "--model-spec", str(cell_inputs / "diffusers.json"), "--prompts", str(small), "--batch-size", "3",
        "--embeddings", str(cell_inputs / "emb.json"), "--out", str(tmp_path / "c"), "--quiet"]))
    assert summary["reused"] == 0 and summary["new"] == 10
    assert {pngio.Image.open(p).size for p in (tmp_path / "c").glob("*.png")} == {(32, 32)}

    spec = json.loads((cell_inputs / "original.json").read_text())
    arch = json.loads(Path(spec["arch"]).read_text())
    (tmp_path / "arch2.json").write_text(json.dumps({**arch, "interpolation_scale": 2}))
    # the same weights without the stored pos_embed (which would be refused: it was made with scale 1)
    blob = torch.load(spec["checkpoint"], weights_only=True)
    torch.save({"state_dict": {k: v for k, v in blob["state_dict"].items() if k != "pos_embed"}},
               tmp_path / "no_pos.pth")
    (cell_inputs / "original-is2.json").write_text(json.dumps({**spec, "arch": str(tmp_path / "arch2.json"),
                                                               "checkpoint": str(tmp_path / "no_pos.pth")}))
    _generate(cell_inputs, tmp_path / "o", spec="original")
    assert _generate(cell_inputs, tmp_path / "o", spec="original-is2")["reused"] == 0


def test_another_null_caption_regenerates_original_uncond_cells(cell_inputs, tmp_path):
    """`uncond: original` feeds the checkpoint's y_embedder.y_embedding to the unconditional branch, so a checkpoint
    that differs only there makes other images: its cells must not be reused (they were: same fingerprint)."""
    from pixart.tiny import null_embedding

    spec = json.loads((cell_inputs / "original.json").read_text())
    blob = torch.load(spec["checkpoint"], weights_only=True)
    blob["state_dict"]["y_embedder.y_embedding"] = null_embedding(7, 32)
    torch.save(blob, tmp_path / "other_null.pth")
    other = {**spec, "checkpoint": str(tmp_path / "other_null.pth")}  # same name, weights and settings
    (cell_inputs / "original-null7.json").write_text(json.dumps(other))
    _generate(cell_inputs, tmp_path / "o", spec="original")
    summary = _generate(cell_inputs, tmp_path / "o", spec="original-null7")
    assert summary["reused"] == 0 and summary["new"] == 10


def test_cfg_below_one_guides(cell_inputs, tmp_path):
    """cfg 1 is the conditional model; 0 is the unconditional one, not a copy of cfg 1 (diffusers skips cfg < 1)."""
    for cfg in ("0.0", "0.5", "1.0"):
        _generate(cell_inputs, tmp_path / cfg, "--cfg", cfg)
    zero, half, one = (_pixels(tmp_path / c) for c in ("0.0", "0.5", "1.0"))
    assert all(not np.array_equal(zero[k], one[k]) and not np.array_equal(half[k], one[k]) for k in one)


def test_cfg_zero_is_the_unconditional_model(tiny):
    """Guidance at cfg 0 leaves the unconditional prediction alone: the conditional model given the empty prompt,
    which is the negative prompt the diffusers convention encodes (equal up to masked padding)."""
    engine = _tiny_engine(tiny, [*PROMPTS[:3], ""])
    spec = parse_sampler("dpm-solver:5")
    zero = engine.denoise(PROMPTS[:3], [1, 2, 3], 64, 64, spec, 0.0)
    unconditional = engine.denoise([""] * 3, [1, 2, 3], 64, 64, spec, 1.0)
    torch.testing.assert_close(zero, unconditional, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(zero, engine.denoise(PROMPTS[:3], [1, 2, 3], 64, 64, spec, 1.0), atol=1e-2)


def test_resumed_images_keep_the_code_version_that_made_them(cell_inputs, tmp_path, monkeypatch, caplog):
    _generate(cell_inputs, tmp_path / "c")
    monkeypatch.setattr(generate, "code_version", lambda: "newer")
    with caplog.at_level("WARNING", logger="pixart.generate"):
        summary = _generate(cell_inputs, tmp_path / "c")
    assert summary["reused"] == 10
    assert "newer" not in set(pd.read_parquet(summary["manifest"])["code_version"])
    assert "10 of 10 images" in caplog.text


def test_bad_input_is_named(cell_inputs, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        read_prompt_file(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 \\(line 1"):
        read_prompt_file(tmp_path / "latin1.txt")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"caption": ""}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: no prompt"):
        read_prompt_file(tmp_path / "bad.jsonl")
    (tmp_path / "gap.jsonl").write_text('{"prompt": "ok"}\n\n\n[1]\n')
    with pytest.raises(ValueError, match="gap.jsonl:4: a JSON object"):  # the file's line, blank lines counted
        read_prompt_file(tmp_path / "gap.jsonl")
    (tmp_path / "wide.csv").write_text("text,tag\na cat,x,y\n")
    with pytest.raises(ValueError, match="wide.csv:2: 1 more fields than the header's 2"):
        read_prompt_file(tmp_path / "wide.csv")
    with pytest.raises(SamplerError, match="unknown sampler 'dpm-solverpp'"):
        parse_sampler("dpm-solverpp:20")
    frame = expand_samples([{"prompt": "x"}], height=50, width=64)
    frame.to_parquet(tmp_path / "odd.parquet")
    with pytest.raises(EngineError, match="50x64 is not possible"):
        generate.run(generate.parser().parse_args([
            "--model-spec", str(cell_inputs / "diffusers.json"), "--prompts", str(tmp_path / "odd.parquet"),
            "--embeddings", str(cell_inputs / "emb.json"), "--out", str(tmp_path / "o"), "--quiet"]))
    # raw UnicodeDecodeError / FileExistsError tracebacks that named neither the file nor the option
    from pixart.embeddings import EmbeddingError, load_pointer

    with pytest.raises(EmbeddingError, match="odd.parquet: not an embeddings pointer"):
        load_pointer(tmp_path / "odd.parquet")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="--out .*a_file is a file; give the cell's folder"):
        generate.run(generate.parser().parse_args([
            "--model-spec", str(cell_inputs / "diffusers.json"), "--prompts", str(cell_inputs / "prompts.parquet"),
            "--embeddings", str(cell_inputs / "emb.json"), "--out", str(tmp_path / "a_file"), "--quiet"]))


BAD_SPECS = {  # model spec JSON → what the error must say (before any weights load)
    "[]": "expected a JSON object, got a list", "{": "not valid JSON",
    '{"name": "m"}': "(top level): 'checkpoint' is a required property",
    '{"checkpoint": "c", "dtype": "float8"}': "dtype: 'float8' is not one of",
    '{"checkpoint": "c", "resolution": "256"}': "resolution: '256' is not of type 'integer', 'null'",
    '{"checkpoint": "c", "vea": "v"}': "(top level): Additional properties are not allowed ('vea' was unexpected)",
    '{"checkpoint": "w.pth"}': "model 'w.pth': a weights file carries no VAE; set `vae:`",
}


def test_bad_model_specs_prompt_sets_and_shards_are_named_before_the_model_loads(cell_inputs, tmp_path, cli_error,
                                                                                 monkeypatch):
    """read_spec checked nothing (a misspelt key was ignored, a missing checkpoint a KeyError); a 0-row prompt set
    loaded the model and exited 0; --shard 5 of 2 failed only after the model had loaded."""
    def no_load(spec):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(generate, "load_model", no_load)
    argv = ["--model-spec", cell_inputs / "diffusers.json", "--prompts", cell_inputs / "prompts.parquet",
            "--embeddings", cell_inputs / "emb.json", "--out", tmp_path / "o", "--quiet"]
    spec = tmp_path / "spec.json"
    for text, message in BAD_SPECS.items():
        spec.write_text(text)
        err = cli_error(generate.main, [*argv, "--model-spec", spec])
        assert message in err and (f"pixart.generate: error: {spec}: " in err and "--model-spec is a models: entry"
                                   in err or "no VAE" in message)
    samples = pd.read_parquet(cell_inputs / "prompts.parquet")
    bad = {"empty": (samples.iloc[0:0], "lists no samples: nothing to generate"),
           "no seed": (samples.drop(columns=["seed"]), "lacks the columns ['seed']"),
           "twice": (pd.concat([samples, samples.iloc[:1]]), "sample ids ['p000000_00'] appear more than once"),
           "no seed value": (samples.assign(seed=[None] + list(samples["seed"][1:])),
                             "samples ['p000000_00'] have no whole-number seed")}
    for name, (frame, message) in bad.items():
        path = tmp_path / f"{name}.parquet"
        frame.to_parquet(path)
        assert f"prompt set {path}" in (err := cli_error(generate.main, [*argv, "--prompts", path])) and message in err
    (tmp_path / "text.parquet").write_text("not parquet")
    assert "not a readable parquet file" in cli_error(generate.main, [*argv, "--prompts", tmp_path / "text.parquet"])
    assert "does not exist" in cli_error(generate.main, [*argv, "--prompts", tmp_path / "none.parquet"])
    err = cli_error(generate.main, [*argv, "--shard", "2", "--num-shards", "2"])
    assert "--shard 2 is outside 0..1 (--num-shards 2)" in err
    assert "--shard -1 is outside" in cli_error(generate.main, [*argv, "--shard", "-1"])
    assert "give --embeddings (cached T5 states) or --text-encoder" in cli_error(generate.main, argv[:4] + argv[6:])
    (tmp_path / "a_file").write_text("x")
    err = cli_error(generate.main, [*argv, "--out", tmp_path / "a_file"])
    assert "a_file is a file; give the cell's folder" in err
    assert not (tmp_path / "o").exists()


def test_the_suites_own_errors_end_the_cli_in_one_line_others_keep_their_traceback(cell_inputs, tmp_path):
    from pixart.cli import clean_errors
    from pixart.samplers import SamplerError

    (tmp_path / "pointer.json").write_text("{not json")
    args = [sys.executable, "-m", "pixart.generate", "--model-spec", str(cell_inputs / "diffusers.json"),
            "--prompts", str(cell_inputs / "prompts.parquet"), "--embeddings", str(tmp_path / "pointer.json"),
            "--out", str(tmp_path / "o")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"pixart.generate: error: {tmp_path / 'pointer.json'}: not an embeddings pointer" in done.stderr
    traced = subprocess.run(args, capture_output=True, text=True, env={**env, "PIXART_EVAL_TRACEBACK": "1"}, timeout=300)
    assert traced.returncode == 1 and "Traceback" in traced.stderr
    # an error class of the module run with -m is `__main__.ManifestError` there: still the suite's own
    own = subprocess.run([sys.executable, "-m", "pixart.manifest", "--cell", str(tmp_path / "none"), "--num-shards",
                          "1", "--prompts", str(cell_inputs / "prompts.parquet")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert own.returncode == 2 and "Traceback" not in own.stderr
    assert "pixart.manifest: error: " in own.stderr and "shard manifests missing" in own.stderr

    def failing(error):
        @clean_errors("tool")
        def main(argv=None):
            raise error
        return main

    with pytest.raises(SystemExit) as ended:
        failing(SamplerError("unknown sampler 'x'"))()
    assert ended.value.code == 2
    with pytest.raises(KeyError):  # not one of the suite's messages: a bug keeps its traceback
        failing(KeyError("x"))()


def test_a_batch_size_or_shard_count_below_one_and_an_unusable_device_are_refused(capsys):
    # --batch-size -1 planned no batch and wrote an empty cell as complete; --device gpu was a torch traceback
    from pixart.runtime import pick_device

    for flag, value in (("--batch-size", "-1"), ("--batch-size", "0"), ("--num-shards", "0")):
        with pytest.raises(SystemExit):
            generate.parser().parse_args(["--model-spec", "m", "--prompts", "p", "--out", "o", flag, value])
        assert f"argument {flag}: {value} is not a positive whole number" in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch size -1"):
        generate.plan_batches(expand_samples([{"prompt": "x"}]), {"p000000_00": (64, 64, 64, 64)}, -1)
    with pytest.raises(ValueError, match="unknown device 'gpu'; use auto, cpu, cuda or cuda:N"):
        pick_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:1': this torch .* sees no CUDA device"):
            pick_device("cuda:1")


def test_prompt_files_keep_every_prompt_whole(tmp_path):
    """Only newlines end a prompt; quoted CSV fields keep their line breaks; a byte-order mark is not a name."""
    (tmp_path / "p.txt").write_text("a cat\u2028on a mat\r\nx\x0cy\n", newline="")
    assert [r["prompt"] for r in read_prompt_file(tmp_path / "p.txt")] == ["a cat\u2028on a mat", "x\x0cy"]
    (tmp_path / "p.csv").write_bytes('\ufefftext,tag\n"line one\nline two",a\nthird,b\n'.encode())
    rows = read_prompt_file(tmp_path / "p.csv")
    assert [r["prompt"] for r in rows] == ["line one\nline two", "third"]
    assert json.loads(rows[1]["metadata"]) == {"tag": "b"}


def test_missing_prompts_odd_suffixes_and_absent_columns_are_named(tmp_path):
    """A JSON null or a short CSV row became the prompt "None"; upper-case or .json suffixes were read as one
    prompt per line; a named column that is absent fell back to another field."""
    (tmp_path / "null.jsonl").write_text('{"prompt": "a red cube"}\n{"prompt": null}\n')
    with pytest.raises(ValueError, match="null.jsonl:2: no prompt"):
        read_prompt_file(tmp_path / "null.jsonl")
    (tmp_path / "short.csv").write_text("id,prompt\n1,a red cube\n2\n")
    with pytest.raises(ValueError, match="short.csv:3: no prompt"):
        read_prompt_file(tmp_path / "short.csv")
    (tmp_path / "upper.JSONL").write_text('{"prompt": "a red cube", "tag": "x"}\n')
    assert read_prompt_file(tmp_path / "upper.JSONL")[0]["prompt"] == "a red cube"
    (tmp_path / "list.json").write_text('["a red cube"]\n')
    with pytest.raises(ValueError, match="unknown prompt file type '.json'.*jsonl"):
        read_prompt_file(tmp_path / "list.json")
    (tmp_path / "cols.csv").write_text("caption_en,prompt\na cat,legacy\n")
    # the header lacks the column: said of the header, not of line 2 as an empty cell
    with pytest.raises(ValueError, match=r"cols.csv: the header has no 'captionen' column \(columns: caption_en, prompt\)"):
        read_prompt_file(tmp_path / "cols.csv", column="captionen")
    (tmp_path / "none.csv").write_text("caption_x,id\na cat,1\n")
    with pytest.raises(ValueError, match=r"none.csv: the header has no 'text' / 'prompt' / 'caption' column"):
        read_prompt_file(tmp_path / "none.csv")
    assert read_prompt_file(tmp_path / "cols.csv", column="caption_en")[0]["prompt"] == "a cat"
    assert read_prompt_file(tmp_path / "cols.csv")[0]["prompt"] == "legacy"  # the default falls back to prompt


def test_over_long_prompts_are_counted_and_truncated(tiny, caplog):
    from pixart.checkpoints import load_text_encoder
    from pixart.embeddings import encode_prompts

    tokenizer, encoder = load_text_encoder(str(tiny["pipeline"]))
    table = encode_prompts(["short", "word " * 100], tokenizer, encoder, clean_caption=False, progress=False)
    assert table.meta["n_over_max_length"] == 1
    assert table.lengths([0, 1]) == [6, 120]  # byte-level tokens + EOS; the long one cut at 120
    assert "exceed 120 T5 tokens" in caplog.text


def test_aspect_ratio_binning_like_diffusers():
    from pixart.engine import generation_size
    from pixart.checkpoints import xl2_config
    from types import SimpleNamespace

    model = SimpleNamespace(config=SimpleNamespace(**xl2_config(1024)))
    assert generation_size(model, 8, 1024, 1024) == (1024, 1024)
    assert generation_size(model, 8, 720, 1280) == (768, 1344)


def test_cache_path_loads_no_text_encoder(cell_inputs, tmp_path, monkeypatch):
    import pixart.checkpoints

    def forbidden(*args, **kwargs):
        raise AssertionError("the text encoder was loaded although the embedding cache exists")

    monkeypatch.setattr(pixart.checkpoints, "load_text_encoder", forbidden)
    assert _generate(cell_inputs, tmp_path / "c")["new"] == 10


def test_bfloat16_generation_records_its_dtype(cell_inputs, tmp_path):
    summary = _generate(cell_inputs, tmp_path / "bf16", "--dtype", "bfloat16", "--sampler", "dpm-solver:4")
    manifest = pd.read_parquet(summary["manifest"])
    assert summary["new"] == 10 and manifest["dtype"].eq("bfloat16").all()


def test_clean_caption_is_explicit_and_applied(tiny):
    from pixart.checkpoints import load_text_encoder
    from pixart.embeddings import encode_prompts

    tokenizer, encoder = load_text_encoder(str(tiny["pipeline"]))
    prompt = "A <b>red</b> circle https://example.com/x.png"
    raw = encode_prompts([prompt], tokenizer, encoder, clean_caption=False, progress=False)
    clean = encode_prompts([prompt], tokenizer, encoder, clean_caption=True, progress=False)
    assert clean.meta["clean_caption"] and not raw.meta["clean_caption"]
    assert clean.lengths([0])[0] < raw.lengths([0])[0]  # markup and URL removed before tokenising


def test_iddpm_sampler_uses_iddpm_respaced_timesteps():
    """space_timesteps(1000, "100") of IDDPM: round(i·999/99), stepped to the previous respaced timestep."""
    scheduler = parse_sampler("iddpm:100").build()
    scheduler.set_timesteps(100)
    stride, taken, cur = 999 / 99, [], 0.0
    for _ in range(100):
        taken.append(round(cur))
        cur += stride
    assert scheduler.timesteps.tolist() == sorted(taken, reverse=True)
    assert int(scheduler.previous_timestep(scheduler.timesteps[0])) == int(scheduler.timesteps[1])
    assert scheduler.config.variance_type == "learned_range"


@pytest.mark.parametrize("name", ["dpm-solver", "sa-solver", "iddpm", "ddim"])
def test_samplers_do_not_clip_latents(name):
    """With the exact noise prediction of a fixed x0, every sampler must land on x0, including latents beyond ±1
    (diffusers' DDPM/DDIM schedulers clip x0 to [−1, 1] unless told not to)."""
    spec = parse_sampler(f"{name}:50")
    scheduler = spec.build()
    scheduler.set_timesteps(50)
    x0 = 2.0 * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(x0.shape, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        alpha_bar = scheduler.alphas_cumprod[t]
        eps = (scheduler.scale_model_input(x, t) - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        out = torch.cat([eps, torch.zeros_like(eps)], 1) if spec.uses_learned_variance else eps
        kwargs = {"generator": generator} if name in ("iddpm", "sa-solver") else {}
        x = scheduler.step(out, t, x, **kwargs, return_dict=False)[0]
    assert x0.abs().max() > 4
    assert torch.sqrt(((x - x0) ** 2).mean()) < 0.05, name


def _fake_hub_snapshot(cache: Path, repo: str, pipeline: Path) -> Path:
    """The HF cache layout `hf download` leaves (models--org--name/snapshots/<commit>, refs/main)."""
    base = cache / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    shutil.copytree(pipeline, base / "snapshots" / commit)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    return base / "snapshots" / commit


def test_text_encoder_identity_covers_the_tokenizer_and_hub_ids_load_offline(tiny, tmp_path, monkeypatch):
    """The embeddings key left the tokenizer out (a tokenizer that splits text otherwise reused old states) and
    hashed a hub snapshot whole (two repos with one T5 got two keys); a hub id from an `hf download` cache did
    not load offline (AutoTokenizer looked up tokenizer/config.json, which pipeline repos never have)."""
    import huggingface_hub.constants
    from transformers import AutoTokenizer

    from pixart.checkpoints import load_text_encoder
    from pixart.embeddings import encoder_identity
    from pixart.tiny import build_transformer

    changed = tmp_path / "pipe2"
    shutil.copytree(tiny["pipeline"], changed)
    tokenizer = AutoTokenizer.from_pretrained(str(changed / "tokenizer"))
    tokenizer.add_tokens(["red"])
    tokenizer.save_pretrained(str(changed / "tokenizer"))
    assert encoder_identity(str(changed)) != encoder_identity(str(tiny["pipeline"]))

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    _fake_hub_snapshot(cache, "org/a", tiny["pipeline"])
    other = _fake_hub_snapshot(cache, "org/b", tiny["pipeline"])
    shutil.rmtree(other / "transformer")
    build_transformer(seed=3).save_pretrained(other / "transformer")
    (other / "README.md").write_text("another model card")
    assert encoder_identity("org/a") == encoder_identity("org/b") == encoder_identity(str(tiny["pipeline"]))
    tokenizer, encoder = load_text_encoder("org/a")
    assert type(encoder).__name__ == "T5EncoderModel" and tokenizer("a red cube").input_ids


def test_identity_of_a_root_level_t5_and_partial_hub_snapshots(tiny, tmp_path, monkeypatch):
    """A T5 at a folder's root beside tokenizer/ must still enter the key (only the tokenizer did); a hub
    snapshot cached without text_encoder/ is not used as if it were the pipeline; EMA weights from a hub id are
    refused up front (no released repo has transformer_ema/)."""
    import huggingface_hub.constants

    from pixart.checkpoints import CheckpointError, load_transformer, local_snapshot
    from pixart.embeddings import encoder_identity

    root = tmp_path / "t5"
    shutil.copytree(tiny["pipeline"] / "text_encoder", root)
    shutil.copytree(tiny["pipeline"] / "tokenizer", root / "tokenizer")
    before = encoder_identity(str(root))
    weights = next(root.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert encoder_identity(str(root)) != before

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    partial = _fake_hub_snapshot(cache, "org/partial", tiny["pipeline"])
    shutil.rmtree(partial / "text_encoder")
    assert local_snapshot("org/partial") == partial and local_snapshot("org/partial", "text_encoder") is None
    with pytest.raises(CheckpointError, match="state_dict_ema.*released hub repos never do"):
        load_transformer("org/partial", weights="state_dict_ema")
