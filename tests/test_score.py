"""Scoring CLI: per-image scores, aggregate with a bootstrap CI over prompts, counted failures, the table."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evals import score, table
from evals.tiny import build_tiny_clip


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """A synthetic generated cell: 4 prompts × 3 images with a manifest like pixart.generate writes."""
    root = tmp_path_factory.mktemp("cell")
    rng = np.random.default_rng(0)
    rows = []
    for p in range(4):
        for k in range(3):
            sid = f"p{p:06d}_{k:02d}"
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / f"{sid}.png")
            rows.append({"sample_id": sid, "prompt_id": f"p{p:06d}", "image_index": k, "file": f"{sid}.png",
                         "prompt": ["a red cube", "a blue ball", "two stars", "a dotted square"][p],
                         "model": "m", "model_fingerprint": "abc", "sampler": "dpm-solver", "steps": 20,
                         "cfg": 4.5, "uncond": "diffusers", "cell_key": "k"})
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    clip = build_tiny_clip(root / "clip")
    settings = root / "clip.json"
    settings.write_text(json.dumps({"kind": "clip_score", "weights": clip["weights"],
                                    "model_name": clip["model_name"], "config_dir": clip["config_dir"]}))
    return root


def _score(cell, tmp_path, name="clip_tiny"):
    return score.run(score.parser().parse_args([
        "--scorer", name, "--settings", str(cell / "clip.json"), "--cell", str(cell), "--protocol", "demo@custom-1",
        "--scores-out", str(tmp_path / f"{name}.parquet"), "--metric-out", str(tmp_path / f"{name}.json")]))


def test_scores_and_aggregate_with_ci(cell, tmp_path):
    result = _score(cell, tmp_path)
    assert result["prompt_limit"] is None and result["n_prompts"] == 4
    per_image = pd.read_parquet(tmp_path / "clip_tiny.parquet")
    assert len(per_image) == 12 and per_image["score"].notna().all()
    assert result["value"] == pytest.approx(per_image["score"].mean())
    assert result["ci_low"] <= result["value"] <= result["ci_high"]
    # the CI resamples whole prompts (3 images each), not single images
    from evals.stats import bootstrap_ci

    by_prompt = bootstrap_ci(per_image["score"].to_numpy(float), groups=per_image["prompt_id"].to_numpy(),
                             n_resamples=1000, seed=0)
    by_image = bootstrap_ci(per_image["score"].to_numpy(float), n_resamples=1000, seed=0)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((by_prompt.low, by_prompt.high), rel=1e-12)
    assert (by_image.low, by_image.high) != pytest.approx((by_prompt.low, by_prompt.high), rel=1e-6)
    assert result["ci_method"].startswith("bootstrap over prompts")
    assert result["n"] == 12 and result["n_failed"] == 0
    assert result["protocol"] == "demo@custom-1" and result["model_fingerprint"] == "abc"
    assert json.loads((tmp_path / "clip_tiny.json").read_text())["weights_fingerprint"] == result["weights_fingerprint"]


def test_a_prompt_limit_is_recorded_with_the_number(cell, tmp_path):
    result = score.run(score.parser().parse_args([
        "--scorer", "clip_tiny", "--settings", str(cell / "clip.json"), "--cell", str(cell), "--protocol",
        "demo@custom-1", "--prompt-limit", "6", "--scores-out", str(tmp_path / "s.parquet"),
        "--metric-out", str(tmp_path / "m.json")]))
    assert json.loads((tmp_path / "m.json").read_text())["prompt_limit"] == 6 and result["n_prompts"] == 4


def _with_a_corrupt_image(cell, folder):
    """A copy of the cell whose image p000002_01 (row 7) is a truncated PNG."""
    folder.mkdir()
    for f in cell.iterdir():
        if f.is_file():
            (folder / f.name).write_bytes(f.read_bytes())
    (folder / "p000002_01.png").write_bytes(b"\x89PNG truncated")
    return folder


def test_corrupt_image_is_named_and_counted(cell, tmp_path):
    broken = _with_a_corrupt_image(cell, tmp_path / "broken")
    result = _score(broken, tmp_path)
    assert result["n_failed"] == 1 and result["n"] == 11
    assert "p000002_01.png" in result["failed_examples"][0]


def test_clip_scores_a_cell_a_chunk_of_images_at_a_time(cell, tmp_path, monkeypatch):
    """The whole cell decoded at once would not fit for a 1024-px COCO-30K cell (~94 GB); chunks give the same
    scores, the corrupt image in the middle still named at its place."""
    broken = _with_a_corrupt_image(cell, tmp_path / "broken")
    _score(broken, tmp_path / "whole")
    opened = []
    real_open = score.open_images
    monkeypatch.setattr(score, "open_images", lambda c, files: opened.append(len(files)) or real_open(c, files))
    monkeypatch.setattr(score, "OPEN_CHUNK", 5)
    _score(broken, tmp_path / "chunked")
    assert opened == [5, 5, 2]
    whole, chunked = (pd.read_parquet(tmp_path / run / "clip_tiny.parquet") for run in ("whole", "chunked"))
    pd.testing.assert_frame_equal(whole, chunked)
    assert chunked["score"].isna().sum() == 1 and chunked.loc[7, "score"] != chunked.loc[7, "score"]


@pytest.mark.parametrize("extractor", ["inception", "dinov2", "clip"])
def test_a_feature_extractor_loads_on_the_scorers_device(extractor, monkeypatch):
    # CLIP-FID's tower loaded on the CPU whatever the settings said: reference statistics and every cell's
    # features on a GPU job. "meta" is a device no default or fallback picks on a CPU machine.
    import torch

    from evals.metrics import clip_score, features

    asked = {}

    def spy(*args, **kwargs):
        asked.update(kwargs)
        raise RuntimeError("stop here")

    for module, loader in ((features, "load_inception"), (features, "load_dinov2"), (clip_score, "load_clip")):
        monkeypatch.setattr(module, loader, spy)
    with pytest.raises(RuntimeError, match="stop here"):
        score.load_extractor({"extractor": extractor, "weights": "w.bin", "device": "meta"})
    assert asked["device"] == torch.device("meta")


def test_a_cell_without_a_manifest_says_why(cell, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(score.CellInputError, match="manifest.parquet does not exist or is not a file; generate the "
                                                   r"cell, or merge its shards \(python -m pixart.manifest\)"):
        score.run(score.parser().parse_args([
            "--scorer", "clip_tiny", "--settings", str(cell / "clip.json"), "--cell", str(tmp_path / "empty"),
            "--protocol", "demo@custom-1", "--scores-out", str(tmp_path / "s.parquet"),
            "--metric-out", str(tmp_path / "m.json")]))


def _score_argv(cell, settings, out, protocol="demo@custom-1"):
    return ["--scorer", "clip_tiny", "--settings", settings, "--cell", cell, "--protocol", protocol,
            "--scores-out", out / "s.parquet", "--metric-out", out / "m.json"]


BAD_SETTINGS = {  # settings file text → what the error must say
    "": "not valid JSON", "[]": "expected a JSON object, got a list",
    '{"weights": "w.bin"}': "(top level): 'kind' is a required property",
    '{"kind": "bogus"}': "kind: 'bogus' is not one of",
    '{"kind": "compbench_blip_vqa", "np_num": "eight"}': "np_num: 'eight' is not of type 'integer'",
    '{"kind": "clip_score", "wieghts": "w.bin"}': "Additional properties are not allowed ('wieghts' was unexpected)",
    '{"kind": "fidelity", "extractor": "bogus"}': "extractor: 'bogus' is not one of ['inception', 'dinov2', 'clip']",
}


@pytest.mark.parametrize("text", BAD_SETTINGS, ids=range(len(BAD_SETTINGS)))
def test_bad_settings_are_named_before_anything_loads(text, cell, tmp_path, cli_error, monkeypatch):
    def no_load(*args):
        raise AssertionError("a scorer was loaded")

    for kind in score.KINDS:
        monkeypatch.setitem(score.KINDS, kind, no_load)
    settings = tmp_path / "settings.json"
    settings.write_text(text)
    err = cli_error(score.main, _score_argv(cell, settings, tmp_path))
    assert f"evals.score: error: {settings}: " in err and BAD_SETTINGS[text] in err and "--settings is the" in err
    assert list(tmp_path.iterdir()) == [settings]  # nothing written


def test_missing_settings_and_a_schema_reference_are_handled(cell, tmp_path, cli_error):
    from pixart.configschema import entry_problem

    assert "none.json: cannot be read" in cli_error(score.main, _score_argv(cell, tmp_path / "none.json", tmp_path))
    # a series entry's keys point into the models: entry ($ref): resolved, so their rules hold there too
    assert entry_problem("series", {"checkpoints": "c", "dtype": "float8"}, {}, required=["checkpoints"]) == (
        "dtype: 'float8' is not one of ['float32', 'float16', 'bfloat16']")
    assert entry_problem("series", {"checkpoints": "c", "dtype": "bfloat16"}, {}, required=["checkpoints"]) is None


def test_a_bad_manifest_or_protocol_is_named(cell, tmp_path, cli_error):
    manifest = pd.read_parquet(cell / "manifest.parquet")
    bad = {"truncated": lambda path: path.write_bytes((cell / "manifest.parquet").read_bytes()[:100]),
           "empty": lambda path: manifest.iloc[0:0].to_parquet(path),
           "no prompt_id": lambda path: manifest.drop(columns=["prompt_id"]).to_parquet(path)}
    expected = {"truncated": "not a readable parquet file", "empty": "lists no images: nothing to score",
                "no prompt_id": "lacks the columns ['prompt_id']"}
    for name, spoil in bad.items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        spoil(folder / "manifest.parquet")
        err = cli_error(score.main, _score_argv(folder, cell / "clip.json", folder))
        assert f"{folder / 'manifest.parquet'}" in err and expected[name] in err, name
        assert sorted(p.name for p in folder.iterdir()) == ["manifest.parquet"]
    for protocol in ("garbage", "coco30k@", "a@1@2", "@1"):
        err = cli_error(score.main, _score_argv(cell, cell / "clip.json", tmp_path, protocol))
        assert f"--protocol {protocol!r} is not BENCH@VERSION[/SUBSET]" in err


def test_the_per_image_scores_and_the_metric_json_are_replaced_together(cell, tmp_path, monkeypatch):
    """The parquet was replaced before the JSON was written: a failed JSON write left the pair out of step."""
    settings = json.loads((cell / "clip.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps(settings))
    (tmp_path / "b.json").write_text(json.dumps({**settings, "scale": 100.0}))  # other per-image scores
    out = tmp_path / "out"
    score.main([str(a) for a in _score_argv(cell, tmp_path / "a.json", out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_write_text = Path.write_text

    def full_disk(self, *args, **kwargs):  # the JSON's write fails after the parquet's temporary is written
        if self.name.startswith(".m.json.tmp"):
            raise OSError("disk full")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="disk full"):
        score.main([str(a) for a in _score_argv(cell, tmp_path / "b.json", out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # both kept, no temporary left
    monkeypatch.undo()
    score.main([str(a) for a in _score_argv(cell, tmp_path / "b.json", out)])
    value = json.loads((out / "m.json").read_text())["value"]
    assert pd.read_parquet(out / "s.parquet")["score"].mean() == pytest.approx(value)
    assert value == pytest.approx(100 * json.loads(before["m.json"])["value"])


def test_an_image_made_for_another_cell_is_a_counted_failure_no_scorer_sees(cell, tmp_path, monkeypatch):
    """Images copied in from another cell (same names, another cfg) were scored as this cell's; each PNG records
    the cell and sample it was made for."""
    from pixart import pngio

    ours = tmp_path / "ours"
    ours.mkdir()
    manifest = pd.read_parquet(cell / "manifest.parquet")
    for row in manifest.itertuples():
        key = "another-cell" if row.sample_id == "p000001_02" else row.cell_key
        pngio.write_png(Image.open(cell / row.file), ours / row.file, {"cell_key": key, "sample_id": row.sample_id})
    manifest.to_parquet(ours / "manifest.parquet")
    (ours / "clip.json").write_bytes((cell / "clip.json").read_bytes())
    seen = []
    real_kind = score.KINDS["clip_score"]
    monkeypatch.setitem(score.KINDS, "clip_score", lambda s, m, c: seen.append(list(m["sample_id"])) or real_kind(s, m, c))
    result = _score(ours, tmp_path / "scored")
    assert "p000001_02" not in seen[0] and len(seen[0]) == 11
    assert result["n"] == 11 and result["n_failed"] == 1
    assert "p000001_02.png: made for cell another-cell as p000001_02, not for this cell (k)" in result["failed_examples"][0]
    per_image = pd.read_parquet(tmp_path / "scored" / "clip_tiny.parquet")
    assert per_image["score"].isna().tolist() == [sid == "p000001_02" for sid in manifest["sample_id"]]


def test_table_gathers_one_row_per_number(cell, tmp_path):
    _score(cell, tmp_path, "a")
    _score(cell, tmp_path, "b")
    frame = table.gather([tmp_path / "a.json", tmp_path / "b.json"])
    assert list(frame["metric"]) == ["a", "b"]
    assert {"value", "ci_low", "ci_high", "n", "n_failed", "protocol", "model_fingerprint"} <= set(frame)


def test_a_bad_metric_file_is_named_and_leaves_the_table_as_it_was(cell, tmp_path, capsys):
    _score(cell, tmp_path, "a")
    out = tmp_path / "table.parquet"
    table.main(["--out", str(out), str(tmp_path / "a.json")])
    before = out.read_bytes()
    good = json.loads((tmp_path / "a.json").read_text())
    bad = {"empty.json": "", "list.json": "[]",
           "nometric.json": json.dumps({k: v for k, v in good.items() if k != "metric"}),
           "text.json": json.dumps({**good, "value": "abc"}), "parts.json": json.dumps({**good, "breakdown": [1]})}
    expected = {"empty.json": "not a readable metric JSON", "list.json": "a metric JSON is an object, this is a list",
                "nometric.json": "no metric: not a score job's aggregate", "text.json": "value 'abc' is not a number",
                "parts.json": "breakdown is not an object"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SystemExit) as ended:
            table.main(["--out", str(out), str(tmp_path / "a.json"), str(tmp_path / name)])
        assert ended.value.code == 2
        assert f"evals.table: error: {tmp_path / name}: {expected[name]}" in capsys.readouterr().err, name
        assert out.read_bytes() == before  # the good table is kept


def test_a_history_folder_that_is_missing_or_empty_is_named(cell, tmp_path, cli_error):
    out = tmp_path / "history.parquet"
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    for folder, message in ((tmp_path / "none", "is not a folder"), (tmp_path / "file", "is not a folder"),
                            (tmp_path / "empty", "holds no metric JSON")):
        assert f"evals.table: error: --history {folder} {message}" in cli_error(table.main, ["--out", out,
                                                                                           "--history", folder])
    assert "no metric files given" in cli_error(table.main, ["--out", out])
    assert not out.exists()
    _score(cell, tmp_path, "a")  # files named beside an empty history folder: the table is built from them
    table.main(["--out", str(out), "--history", str(tmp_path / "empty"), str(tmp_path / "a.json")])
    assert list(pd.read_parquet(out)["metric"]) == ["a"]


def test_fidelity_kind_clip_fid_and_kid(cell, tmp_path, monkeypatch):
    """FID/KID with the tiny CLIP image tower (CLIP-FID) against a reference folder equal the metric functions on
    the good images' features (their parity with clean-fid: tests/test_fid.py); CI contains the value; a corrupt
    image is counted when the cell is given relative, as the workflow gives it."""
    from evals.metrics import fid as fidelity
    from evals.metrics.features import extract_features

    rng = np.random.default_rng(1)
    reference = tmp_path / "ref"
    reference.mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (80, 64, 3), dtype=np.uint8)).save(reference / f"r{i:03d}.png")
    bigger = tmp_path / "cell40"
    bigger.mkdir()
    rows = []
    for i in range(40):  # more good images than the 32 feature dimensions, else the covariance is singular
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(bigger / f"s{i:03d}.png")
        rows.append({"sample_id": f"s{i:03d}", "prompt_id": f"p{i // 2:06d}", "image_index": i % 2,
                     "file": f"s{i:03d}.png", "prompt": "x", "model": "m"})
    (bigger / "s039.png").write_bytes(b"not a png")  # a corrupt image, named and counted
    pd.DataFrame(rows).to_parquet(bigger / "manifest.parquet")
    monkeypatch.chdir(tmp_path)
    clip = json.loads((cell / "clip.json").read_text())
    for distance in ("fid", "kid"):
        spec = {"kind": "fidelity", "distance": distance, "extractor": "clip", "weights": clip["weights"],
                "model_name": clip["model_name"], "config_dir": clip["config_dir"], "reference": str(reference),
                "preprocess": "none", "n_resamples": 50, "refstats_dir": str(tmp_path / "refstats")}
        settings = tmp_path / f"{distance}.settings.json"
        settings.write_text(json.dumps(spec))
        result = score.run(score.parser().parse_args([
            "--scorer", distance, "--settings", str(settings), "--cell", "cell40", "--protocol", "x@1",
            "--scores-out", str(tmp_path / f"{distance}.parquet"), "--metric-out", str(tmp_path / f"{distance}.json")]))
        assert result["n"] == 39 and result["n_failed"] == 1 and "s039.png" in result["failed_examples"][0]
        assert result["ci_low"] <= result["value"] <= result["ci_high"] and result["higher_is_better"] is False
        assert result["reference_n"] == 40
        extractor = score.load_extractor(spec)
        ref = fidelity.reference_stats(reference, extractor, preprocess="none", keep_features=True,
                                       cache_dir=tmp_path / "own-refstats")
        good = extract_features([bigger / f"s{i:03d}.png" for i in range(39)], extractor).features
        expected = (fidelity.kid_from_features(good, ref["features"], seed=0) if distance == "kid"
                    else fidelity.fid_from_features(good, ref))
        assert result["value"] == pytest.approx(expected, rel=1e-6) and expected != 0  # KID may be below 0
    assert len(list((tmp_path / "refstats").glob("*.npz"))) >= 1  # reference statistics cached


def test_category_aggregate_weights_and_missing_categories():
    scores = np.array([1.0, 0.0, 1.0, 1.0, np.nan, 0.0])
    cats = ["a", "a", "b", "b", "c", "c"]
    prompts = ["p0", "p1", "p2", "p3", "p4", "p5"]
    weights = {"a": 0.5, "b": 0.25, "c": 0.25}
    aggregate, breakdown = score.category_aggregate(scores, cats, prompts, weights, 200)
    assert aggregate["value"] == pytest.approx(0.5 * 0.5 + 0.25 * 1.0 + 0.25 * 0.0)
    # c kept one scored prompt: nothing to resample within it, so no CI (not one of width 0)
    assert aggregate["ci_low"] is None and "no CI: ['c'] scored on one prompt only" in aggregate["note"]
    assert breakdown["c"] == {"value": 0.0, "n": 1, "ci_low": None, "ci_high": None, "n_failed": 1}
    two_each, _ = score.category_aggregate(np.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0]), cats, prompts, weights, 200)
    assert "within each category" in two_each["ci_method"] and two_each["ci_low"] < two_each["ci_high"]
    # several images of one prompt are not several prompts
    _, rows = score.category_aggregate(np.array([1.0, 0.0, 1.0, 1.0]), ["a"] * 4, ["p", "p", "q", "q"], None, 200)
    assert rows["a"]["ci_low"] is not None
    one, rows = score.category_aggregate(np.array([1.0, 0.0]), ["a", "a"], ["p", "p"], None, 200)
    assert one["value"] == 0.5 and one["ci_low"] is None and rows["a"]["ci_low"] is None
    unweighted, _ = score.category_aggregate(scores, cats, prompts, None, 200)
    assert unweighted["value"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # GenEval: mean of task scores
    # a category with no scored image (absent, or every image failed): the headline is undefined, not the
    # mean of the others, and the category stays in the breakdown with its failures
    for partial_scores, partial_cats in ((scores[:4], cats[:4]), (np.array([1.0, 0.0, 1.0, 1.0, np.nan, np.nan]), cats)):
        partial, rows = score.category_aggregate(partial_scores, partial_cats, prompts[:len(partial_cats)], weights, 200)
        assert partial["value"] is None and "no scores for ['c']" in partial["note"]
        assert rows["c"]["value"] is None and rows["c"]["n"] == 0
    _, rows = score.category_aggregate(np.array([1.0, 0.0, 1.0, 1.0, np.nan, np.nan]), cats, prompts, None, 200)
    assert rows["c"]["n_failed"] == 2
    with pytest.raises(ValueError, match=r"categories \['d'\] have no weight"):
        score.category_aggregate(scores, cats[:5] + ["d"], prompts, weights, 200)


def test_mismatched_images_per_prompt_are_refused(cell, tmp_path):
    uneven = tmp_path / "uneven"
    uneven.mkdir()
    manifest = pd.read_parquet(cell / "manifest.parquet")
    manifest[manifest["sample_id"] != "p000001_02"].to_parquet(uneven / "manifest.parquet")
    with pytest.raises(ValueError, match=r"images per prompt differ \(most prompts have 3; p000001: 2\)"):
        score.check_images_per_prompt(pd.read_parquet(uneven / "manifest.parquet"), uneven)


def test_refstats_rule_command_writes_a_pointer_and_reuses_the_cache(cell, tmp_path, monkeypatch):
    from evals import refstats
    from evals.tiny import draw_shapes_reference

    draw_shapes_reference(tmp_path / "ref", 40)
    clip = json.loads((cell / "clip.json").read_text())
    settings = tmp_path / "fid.json"
    settings.write_text(json.dumps({"kind": "fidelity", "extractor": "clip", "weights": clip["weights"],
                                    "model_name": clip["model_name"], "config_dir": clip["config_dir"],
                                    "reference": str(tmp_path / "ref"), "preprocess": "none",
                                    "refstats_dir": str(tmp_path / "cache")}))
    refstats.main(["--settings", str(settings), "--out", str(tmp_path / "pointer.json")])
    pointer = json.loads((tmp_path / "pointer.json").read_text())
    assert pointer["n"] == 40 and (tmp_path / "cache" / f"{pointer['key']}.npz").exists()
    import evals.metrics.fid as fidelity

    monkeypatch.setattr(fidelity, "extract_features", lambda *a, **k: pytest.fail("recomputed a cached reference"))
    refstats.main(["--settings", str(settings), "--out", str(tmp_path / "again.json")])
    assert json.loads((tmp_path / "again.json").read_text())["key"] == pointer["key"]


def test_history_is_append_only_one_file_per_job(cell, tmp_path, capsys):
    args = ["--scorer", "clip_tiny", "--settings", str(cell / "clip.json"), "--cell", str(cell),
            "--protocol", "demo@custom-1", "--scores-out", str(tmp_path / "s.parquet"),
            "--metric-out", str(tmp_path / "m.json"), "--history-dir", str(tmp_path / "history")]
    first = score.run(score.parser().parse_args(args))
    import time

    time.sleep(1.1)  # history file names carry the second of the run
    score.run(score.parser().parse_args(args))
    files = sorted((tmp_path / "history").glob("*.json"))
    assert len(files) == 2
    merged = table.gather(files)
    assert len(merged) == 2 and merged["time"].nunique() == 2
    assert first["seeds"] == "unknown"  # this synthetic manifest records no seeds
    assert {"seeds", "time", "value", "ci_low", "ci_high", "protocol"} <= set(merged)
    capsys.readouterr()
    table.main(["--out", str(tmp_path / "history.parquet"), "--history", str(tmp_path / "history")])
    assert capsys.readouterr().out.startswith("history: 2 numbers from 2 score jobs (1 metrics × 1 models)")


def test_seed_summary_names_the_per_image_rule():
    frame = pd.DataFrame({"prompt_id": ["a"] * 10 + ["b"] * 10, "image_index": list(range(10)) * 2,
                          "seed": list(range(42, 52)) * 2})
    assert score.seed_summary(frame) == "42..51 per image"
    assert score.seed_summary(frame.assign(seed=range(20))) == "0..19"


def test_every_scorer_kind_has_a_version():  # the micro DAG test reads it back from the settings the DAG writes
    from evals.versions import SCORER_VERSIONS

    assert set(SCORER_VERSIONS) == set(score.KINDS)
    assert all(isinstance(v, int) and v >= 1 for v in SCORER_VERSIONS.values())


def test_one_prompt_gets_a_value_without_a_ci():
    frame = pd.DataFrame({"sample_id": ["a", "b"], "prompt_id": ["p", "p"], "score": [0.2, 0.4], "error": [None, None]})
    result = score.aggregate(frame)
    assert result["value"] == pytest.approx(0.3) and result["ci_low"] is None and "one prompt" in result["note"]


def test_geneval_overall_needs_all_six_tasks(monkeypatch, tmp_path):
    """A `limit:` subset scoring two of GenEval's six tasks has task rows but no Overall."""
    from evals.metrics import geneval_backends

    manifest = pd.DataFrame({"sample_id": [f"s{i}" for i in range(8)], "prompt_id": [f"p{i // 2}" for i in range(8)],
                             "metadata": [json.dumps({"tag": "colors" if i < 4 else "counting"}) for i in range(8)]})
    monkeypatch.setattr(geneval_backends, "geneval_kind",
                        lambda settings, manifest, cell: (np.array([1.0, 0, 1, 1, 0, 0, 1, 0]), [None] * 8, {}))
    _, _, meta = score.geneval_score_kind({}, manifest, tmp_path)
    assert meta["aggregate"]["value"] is None and "no scores for" in meta["aggregate"]["note"]
    assert meta["breakdown"]["colors"]["value"] == pytest.approx(0.75)
    assert meta["breakdown"]["counting"]["value"] == pytest.approx(0.25)
