"""Regression gate (reports.regress): exit codes on crafted runs, thresholds, Holm, FID, false-alarm rate."""
import json

import numpy as np
import pandas as pd
import pytest

from reports import regress
from reports.regress import Comparison, compare_per_image, compare_set_level, decide, holm, main, resamples_for

SAMPLER, STEPS, CFG = "dpm-solver", 20, 4.5


def write_run(root, model, scores, *, bench="t2i_color", metric="compbench_blip_vqa", protocol="t2i_compbench@1/color",
              scorer="blip_vqa", weights="abc123", higher_is_better=True, kind="compbench_blip_vqa", extra=None):
    """One cell of a run in the results layout: per-image parquet + metric JSON. scores: (prompts, images)."""
    scores = np.asarray(scores, dtype=float)
    n_prompts, k = scores.shape
    cell = f"{model}/{bench}/{SAMPLER}-{STEPS}/cfg{CFG}"
    frame = pd.DataFrame({"sample_id": [f"p{p:06d}_{i:02d}" for p in range(n_prompts) for i in range(k)],
                          "prompt_id": [f"p{p:06d}" for p in range(n_prompts) for _ in range(k)],
                          "image_index": [i for _ in range(n_prompts) for i in range(k)],
                          "score": scores.ravel(), "error": None})
    (root / "scores" / cell).mkdir(parents=True, exist_ok=True)
    frame.to_parquet(root / "scores" / cell / f"{metric}.parquet", index=False)
    valid = scores[~np.isnan(scores)]
    data = {"metric": metric, "kind": kind, "protocol": protocol, "value": float(valid.mean()) if valid.size else None,
            "ci_low": None, "ci_high": None, "level": 0.95, "n": int(valid.size), "n_failed": 0, "scorer": scorer,
            "weights_fingerprint": weights, "higher_is_better": higher_is_better, "model": model,
            "model_fingerprint": model, "sampler": SAMPLER, "steps": STEPS, "cfg": CFG, "bench": bench,
            **(extra or {})}
    path = root / "metrics" / cell / f"{metric}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def base_scores(seed=0, n_prompts=60, k=4):
    rng = np.random.default_rng(seed)
    prompt = rng.normal(0.5, 0.15, size=(n_prompts, 1))
    return np.clip(prompt + rng.normal(0, 0.05, size=(n_prompts, k)), 0, 1)


def gate(tmp_path, *extra, capsys=None):
    code = main(["--baseline", str(tmp_path / "metrics" / "base"), "--candidate", str(tmp_path / "metrics" / "cand"),
                 "--n-resamples", "1000", "--out", str(tmp_path / "gate.md"), "--json", str(tmp_path / "gate.json"),
                 *extra])
    return code, (tmp_path / "gate.md").read_text(), json.loads((tmp_path / "gate.json").read_text())


def test_pass_when_candidate_equals_baseline_up_to_noise(tmp_path):
    scores = base_scores()
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "cand", scores + np.random.default_rng(1).normal(0, 0.002, scores.shape))
    code, md, report = gate(tmp_path)
    assert code == 0
    assert "✅ PASS" in md and "❌" not in md.split("\n| ")[0]
    (row,) = report["comparisons"]
    assert row["status"] == "no significant change" and row["verdict"] == "✅"
    assert row["ci_low"] < 0 < row["ci_high"]  # noise of ±0.002: the paired interval straddles no change
    assert row["n"] == scores.size and row["n_prompts"] == 60


def test_regression_exits_1_with_red_row(tmp_path, capsys):
    scores = base_scores()
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "cand", scores - 0.05)
    code, md, report = gate(tmp_path)
    assert code == 1
    assert "❌ REGRESSION" in md and "| ❌ regression" in md
    assert md in capsys.readouterr().out  # same summary on stdout
    (row,) = report["comparisons"]
    assert row["diff"] == pytest.approx(-0.05) and row["ci_high"] < 0 and row["p_holm"] < 0.05
    assert report["exit_code"] == 1


def test_improvement_passes_and_is_named(tmp_path):
    scores = base_scores()
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "cand", scores + 0.05)
    code, md, report = gate(tmp_path)
    assert code == 0
    assert report["comparisons"][0]["status"] == "improved" and "1 improved" in md


def test_lower_is_better_direction(tmp_path):
    scores = base_scores()
    write_run(tmp_path, "base", scores, metric="error_rate", higher_is_better=False)
    write_run(tmp_path, "cand", scores + 0.05, metric="error_rate", higher_is_better=False)
    assert gate(tmp_path)[0] == 1
    write_run(tmp_path, "cand", scores - 0.05, metric="error_rate", higher_is_better=False)
    assert gate(tmp_path)[0] == 0


@pytest.mark.parametrize("field,base_value,cand_value", [
    ("protocol", "t2i_compbench@1/color", "t2i_compbench@2/color"),
    ("scorer", "blip_vqa", "blip_vqa_large"),
    ("weights_fingerprint", "abc123", "def456"),
])
def test_protocol_mismatch_refuses_with_field_and_values(tmp_path, field, base_value, cand_value):
    keys = {"protocol": "protocol", "scorer": "scorer", "weights_fingerprint": "weights"}
    scores = base_scores()
    write_run(tmp_path, "base", scores, **{keys[field]: base_value})
    write_run(tmp_path, "cand", scores - 0.2, **{keys[field]: cand_value})  # a "regression" must not count
    code, md, report = gate(tmp_path)
    assert code == 2
    assert f"{field} differs" in md and repr(base_value) in md and repr(cand_value) in md
    assert "REFUSED" in md and report["comparisons"] == []


def test_fid_set_level_uses_both_cis(tmp_path):
    nan = np.full((40, 1), np.nan)  # FID: per-image score NaN, the JSON carries the set-level number

    def fid_run(model, value, low, high):
        write_run(tmp_path, model, nan, bench="coco", metric="fid", protocol="coco_fid@1", scorer="fid_clean_inception",
                  higher_is_better=False, kind="fidelity",
                  extra={"value": value, "ci_low": low, "ci_high": high, "n": 40, "reference_key": "ref1"})

    fid_run("base", 10.0, 9.6, 10.4)
    fid_run("cand", 10.1, 9.7, 10.5)  # overlapping CIs, small change
    code, _, report = gate(tmp_path)
    assert code == 0
    row = report["comparisons"][0]
    assert "bootstrap-over-images CIs" in row["method"] and row["diff"] == pytest.approx(0.1)
    fid_run("cand", 11.5, 11.1, 11.9)  # clearly worse: lower is better
    code, md, report = gate(tmp_path)
    assert code == 1 and "fid ↓" in md
    fid_run("cand", 8.5, 8.1, 8.9)
    assert gate(tmp_path)[0] == 0
    fid_run("cand", 11.5, 11.1, 11.9)
    assert gate(tmp_path, "--thresholds", str(_thresholds(tmp_path, "fid: 20%\n")))[0] == 0  # 2.0 > 1.5
    # a different reference set is a different protocol
    write_run(tmp_path, "cand", nan, bench="coco", metric="fid", protocol="coco_fid@1", scorer="fid_clean_inception",
              higher_is_better=False, kind="fidelity",
              extra={"value": 10.0, "ci_low": 9.6, "ci_high": 10.4, "reference_key": "ref2"})
    code, md, _ = gate(tmp_path)
    assert code == 2 and "reference_key differs" in md


def test_other_frozen_parses_are_not_comparable(tmp_path):
    scores = base_scores()
    write_run(tmp_path, "base", scores, extra={"parse_fingerprint": "a" * 16})
    write_run(tmp_path, "cand", scores, extra={"parse_fingerprint": "b" * 16})
    code, md, _ = gate(tmp_path)
    assert code == 2 and "parse_fingerprint differs" in md


def test_set_level_p_value_matches_normal_approximation():
    from scipy.stats import norm

    z = norm.ppf(0.975)
    base = {"value": 10.0, "ci_low": 10 - z, "ci_high": 10 + z, "level": 0.95, "n": 100}  # se = 1
    cand = {"value": 12.0, "ci_low": 12 - z, "ci_high": 12 + z, "level": 0.95, "n": 100}
    out = compare_set_level(base, cand, level=0.95)
    se = np.sqrt(2)
    assert out["p_value"] == pytest.approx(2 * norm.sf(2 / se))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((2 - z * se, 2 + z * se))


def _thresholds(tmp_path, text, name="thr.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_threshold_turns_small_significant_drop_into_warning(tmp_path):
    scores = base_scores()
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "cand", scores - 0.02)
    assert gate(tmp_path)[0] == 1
    for text in ("compbench_blip_vqa: 0.05\n", "compbench_*: 0.05\n", "thresholds:\n  t2i_color/*: 0.05\n",
                 "compbench_blip_vqa: 5%\n"):  # 5% of ~0.5 = 0.025 > 0.02
        code, md, report = gate(tmp_path, "--thresholds", str(_thresholds(tmp_path, text)))
        assert code == 0, text
        assert report["comparisons"][0]["status"] == "worse, within threshold"
        assert "| ⚠️ worse, within threshold" in md  # the row's verdict, not the legend's ⚠️
    json_thr = _thresholds(tmp_path, json.dumps({"compbench_*": 1, "compbench_blip_vqa": 0.01}), "thr.json")
    assert gate(tmp_path, "--thresholds", str(json_thr))[0] == 1  # 0.02 > 0.01, and exact names win
    # a name that matches no metric (a typo) left the metric at threshold 0 without a word; --only refuses too
    code, md, _ = gate(tmp_path, "--thresholds", str(_thresholds(tmp_path, "compbench_blip_vq: 0.05\n")))
    assert code == 2 and "thresholds ['compbench_blip_vq'] match none of the baseline's metrics" in md
    assert regress.threshold_for({"*": 1.0, "m": 0.1}, "b", "m", 5.0) == 0.1
    assert regress.threshold_for({"x*": 1.0, "*": 0.3}, "b", "m", 5.0) == 0.3
    assert regress.threshold_for({}, "b", "m", 5.0) == 0.0
    assert gate(tmp_path, "--thresholds", str(_thresholds(tmp_path, "compbench_blip_vqa: -1\n")))[0] == 2


def test_holm_adjustment_values():
    p = [0.01, 0.04, 0.03, np.nan, 0.005]
    adjusted = holm(p)
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, np.nan, 0.02])
    assert np.isnan(holm([np.nan])).all()


def _comparison(p, diff=-0.1, threshold=0.0):
    return Comparison(candidate="c", baseline="b", bench="x", metric="m", sampler=SAMPLER, steps=STEPS, cfg=CFG,
                      protocol="x@1", method="test", higher_is_better=True, baseline_value=0.5,
                      candidate_value=0.5 + diff, diff=diff, ci_low=diff - 0.01, ci_high=diff + 0.01, p_value=p, n=10,
                      threshold=threshold)


def test_holm_decides_the_family():
    alone = [_comparison(0.02)]
    decide(alone, 0.05)
    assert alone[0].status == "regression"
    family = [_comparison(0.02), _comparison(0.03), _comparison(0.04)]  # Holm: all 0.06
    decide(family, 0.05)
    assert [c.status for c in family] == ["worse, not significant after Holm"] * 3
    assert all(c.verdict == "⚠️" for c in family)
    mixed = [_comparison(0.001), _comparison(0.5, diff=0.1)]
    decide(mixed, 0.05)
    assert [c.status for c in mixed] == ["regression", "no significant change"]


def test_holm_in_the_gate_across_metrics(tmp_path):
    # One mildly worse metric alone regresses; with 30 more (unchanged) metrics in the family it does not.
    noise = np.random.default_rng(5).normal(size=(60, 1))
    noise = (noise - noise.mean()) / noise.std()
    scores = base_scores(n_prompts=60, k=1)
    worse = scores - 0.01 + 0.03 * noise  # mean drop 0.01, se ~0.0039: p ~ 0.01
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "cand", worse)
    code, _, report = gate(tmp_path)
    p_raw = report["comparisons"][0]["p_value"]
    assert code == 1 and 0.002 < p_raw < 0.05, p_raw
    for i in range(30):
        s = base_scores(seed=100 + i, n_prompts=60, k=1)
        write_run(tmp_path, "base", s, metric=f"other{i}")
        write_run(tmp_path, "cand", s, metric=f"other{i}")
    code, md, report = gate(tmp_path)
    row = next(c for c in report["comparisons"] if c["metric"] == "compbench_blip_vqa")
    # 31 comparisons need more than the 1000 resamples asked for (see the next test): p moves a little
    assert report["n_resamples"] == 6199 and row["p_value"] == pytest.approx(p_raw, abs=0.005)
    assert code == 0 and row["p_value"] < 0.05 and row["p_holm"] >= 0.05 and row["verdict"] == "⚠️"


def test_many_comparisons_raise_the_resamples_so_a_regression_can_still_be_found(tmp_path):
    # A bootstrap p is at least 1/(R+1); Holm multiplies it by m. With R = 100 and m = 6, 6/101 > 0.05: a
    # regression of every metric would pass unless the gate raises R (to 10·m/α − 1 = 1199).
    scores = base_scores()
    for i in range(6):
        write_run(tmp_path, "base", scores, metric=f"m{i}")
        write_run(tmp_path, "cand", scores - 0.2, metric=f"m{i}")
    code, md, report = gate(tmp_path, "--n-resamples", "100")
    assert code == 1 and report["n_resamples"] == 1199 and report["n_resamples_asked"] == 100
    assert all(c["status"] == "regression" for c in report["comparisons"])
    assert "1199 resamples, raised from 100" in md
    assert resamples_for(6, 0.05) == 1199 and 6 / (resamples_for(6, 0.05) + 1) == pytest.approx(0.005)


def test_several_candidates_any_regression_fails(tmp_path):
    scores = base_scores()
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "cand", scores)
    write_run(tmp_path, "bad", scores - 0.05)
    code = main(["--baseline", str(tmp_path / "metrics/base"), "--candidate", str(tmp_path / "metrics/cand"),
                 "--candidate", str(tmp_path / "metrics/bad"), "--json", str(tmp_path / "g.json")])
    report = json.loads((tmp_path / "g.json").read_text())
    assert code == 1
    assert {c["candidate"]: c["status"] for c in report["comparisons"]} == {"cand": "no significant change",
                                                                            "bad": "regression"}


def test_partial_overlap_pairs_shared_prompts_and_says_so(tmp_path):
    scores = base_scores()
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "cand", scores[:30])
    _, md, report = gate(tmp_path)
    row = report["comparisons"][0]
    assert row["n_prompts"] == 30 and row["n"] == 120 and "only 30 prompts shared" in md


def test_failed_images_are_left_out_of_the_pairing(tmp_path):
    scores = base_scores()
    cand = scores.copy()
    cand[0, :] = np.nan
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "cand", cand)
    _, md, report = gate(tmp_path)
    assert report["comparisons"][0]["n"] == scores.size - 4 and "left out" in md


def test_missing_inputs_and_no_overlap_exit_2_naming_them(tmp_path, capsys):
    assert main(["--baseline", str(tmp_path / "nope"), "--candidate", str(tmp_path)]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
    scores = base_scores()
    write_run(tmp_path, "base", scores)
    json_path = write_run(tmp_path, "cand", scores)
    parquet = tmp_path / "scores/cand/t2i_color" / f"{SAMPLER}-{STEPS}/cfg{CFG}/compbench_blip_vqa.parquet"
    parquet.unlink()
    code, md, _ = gate(tmp_path)
    assert code == 2 and str(parquet) in md and str(json_path) in md
    # no shared prompts: other sample ids
    frame = pd.read_parquet(tmp_path / "scores/base/t2i_color" / f"{SAMPLER}-{STEPS}/cfg{CFG}/compbench_blip_vqa.parquet")
    frame["sample_id"] = "q" + frame["sample_id"]
    frame["prompt_id"] = "q" + frame["prompt_id"]
    frame.to_parquet(parquet, index=False)
    code, md, _ = gate(tmp_path)
    assert code == 2 and "no overlapping scored images" in md
    with pytest.raises(SystemExit) as exc:  # argparse: missing --candidate
        main(["--baseline", str(tmp_path)])
    assert exc.value.code == 2


def test_malformed_inputs_and_crashes_exit_2_never_1(tmp_path, capsys, monkeypatch):
    # exit 1 means "regression" to CI: bad input and a crash of the gate itself must say 2, naming the file
    scores = base_scores()
    write_run(tmp_path, "base", scores)
    json_path = write_run(tmp_path, "cand", scores - 0.2)
    for name, text in (("bad.json", "{not json"), ("bad.yaml", "a: [1,\n")):
        code, md, _ = gate(tmp_path, "--thresholds", str(_thresholds(tmp_path, text, name)))
        assert code == 2 and str(tmp_path / name) in md and "not valid" in md
    parquet = tmp_path / "scores/cand/t2i_color" / f"{SAMPLER}-{STEPS}/cfg{CFG}/compbench_blip_vqa.parquet"
    parquet.write_bytes(b"PAR1 damaged")
    code, md, _ = gate(tmp_path)
    assert code == 2 and str(parquet) in md and "not a readable parquet" in md
    write_run(tmp_path, "cand", scores - 0.2)
    data = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**data, "steps": "twenty"}))
    code, md, _ = gate(tmp_path)
    assert code == 2 and str(json_path) in md and "not numbers" in md
    json_path.write_text(json.dumps({k: v for k, v in data.items() if k != "higher_is_better"}))
    code, md, _ = gate(tmp_path)
    assert code == 2 and "lacks higher_is_better" in md
    # a damaged metric file in a run folder is named, not skipped as "not scored" (which could let the gate pass)
    for damaged in ({k: v for k, v in data.items() if k != "metric"}, [data]):
        json_path.write_text(json.dumps(damaged))
        code, md, _ = gate(tmp_path)
        assert code == 2 and str(json_path) in md and "not a metric JSON of evals.score" in md
    (json_path.parent / "notes.json").write_text(json.dumps({"reference": "elsewhere"}))  # another JSON: skipped
    json_path.write_text(json.dumps(data))
    assert gate(tmp_path)[0] == 1
    monkeypatch.setattr(regress, "paired_bootstrap", lambda *a, **k: 1 / 0)
    code, md, _ = gate(tmp_path)
    assert code == 2 and "the gate crashed (ZeroDivisionError" in md and "Traceback" in capsys.readouterr().err


def test_unwritable_output_and_a_non_boolean_direction_exit_2(tmp_path, capsys):
    scores = base_scores()
    write_run(tmp_path, "base", scores)
    json_path = write_run(tmp_path, "cand", scores - 0.2)
    (tmp_path / "plain").write_text("")
    code = main(["--baseline", str(tmp_path / "metrics/base"), "--candidate", str(tmp_path / "metrics/cand"),
                 "--out", str(tmp_path / "plain" / "gate.md")])
    assert code == 2 and "could not be written" in capsys.readouterr().err
    data = json.loads(json_path.read_text())
    for bad in (None, "false"):
        json_path.write_text(json.dumps({**data, "higher_is_better": bad}))
        code, md, _ = gate(tmp_path)
        assert code == 2 and "higher_is_better must be true or false" in md


def test_an_undefined_category_headline_still_pairs_the_images(tmp_path):
    # WISE/GenEval: a category without scores leaves the weighted headline None; the images are still compared
    scores = base_scores()
    write_run(tmp_path, "base", scores, extra={"value": None, "note": "no scores for ['chemistry']: undefined"})
    write_run(tmp_path, "cand", scores - 0.2)
    code, md, report = gate(tmp_path, "--thresholds", str(_thresholds(tmp_path, "compbench_blip_vqa: 5%\n")))
    row = report["comparisons"][0]
    assert code == 1 and row["baseline_value"] is None and row["status"] == "regression"
    assert "baseline headline undefined: no scores for ['chemistry']" in md
    assert row["threshold"] == pytest.approx(0.05 * row["baseline_mean"])


def test_a_set_level_number_without_a_ci_is_refused():
    # no CI would mean zero uncertainty: any difference at all would be "significant"
    base = {"value": 10.0, "ci_low": 9.0, "ci_high": 11.0, "level": 0.95}
    with pytest.raises(regress.GateError, match="candidate's set-level number has no CI"):
        compare_set_level(base, {"value": 10.01, "ci_low": None, "ci_high": None}, level=0.95, what="fid")


def test_unmatched_metrics_listed_and_strict_refuses(tmp_path):
    scores = base_scores()
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "base", scores, metric="clip_score")
    write_run(tmp_path, "cand", scores)
    code, md, _ = gate(tmp_path)
    assert code == 0 and "Not compared" in md and "no number for clip_score" in md
    assert gate(tmp_path, "--strict")[0] == 2
    assert gate(tmp_path, "--only", "clip_*")[0] == 2  # the candidate has no clip_score at all
    # nothing matches at all
    write_run(tmp_path, "other", scores, metric="geneval")
    assert main(["--baseline", str(tmp_path / "metrics/base"), "--candidate", str(tmp_path / "metrics/other")]) == 2


def test_module_runs_as_script(tmp_path):
    import subprocess
    import sys

    scores = base_scores()
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "cand", scores - 0.05)
    out = subprocess.run([sys.executable, "-m", "reports.regress", "--baseline", str(tmp_path / "metrics/base"),
                          "--candidate", str(tmp_path / "metrics/cand"), "--n-resamples", "500"],
                         capture_output=True, text=True, cwd=regress.__file__.rsplit("/reports/", 1)[0])
    assert out.returncode == 1, out.stderr
    assert "❌ REGRESSION" in out.stdout


def _simulated_pair(rng, n_prompts=50, k=2):
    """Two runs from one distribution: shared prompt difficulty, independent image noise."""
    prompt = rng.normal(0.5, 0.15, size=(n_prompts, 1))
    a = prompt + rng.normal(0, 0.1, size=(n_prompts, k))
    b = prompt + rng.normal(0, 0.1, size=(n_prompts, k))
    ids = [f"p{p:03d}" for p in range(n_prompts) for _ in range(k)]
    sample = [f"p{p:03d}_{i}" for p in range(n_prompts) for i in range(k)]
    frame = lambda s: pd.DataFrame({"sample_id": sample, "prompt_id": ids, "score": s.ravel()})  # noqa: E731
    return frame(a), frame(b)


def _gate_on_frames(pairs, alpha, seed):
    comparisons = []
    for a, b in pairs:
        stats = compare_per_image(a, b, n_resamples=1000, level=1 - alpha, seed=seed)
        for k in ("n_prompts", "baseline_mean", "candidate_mean", "n_unpaired", "n_baseline_prompts"):
            stats.pop(k)
        comparisons.append(Comparison(candidate="c", baseline="b", bench="x", metric="m", sampler=SAMPLER,
                                      steps=STEPS, cfg=CFG, protocol="x@1", method="sim", higher_is_better=True,
                                      baseline_value=0.5, candidate_value=0.5, threshold=0.0, **stats))
    decide(comparisons, alpha)
    return any(c.status == "regression" for c in comparisons), comparisons


def test_false_alarm_rate_on_identical_distributions_is_at_most_alpha():
    alpha, reps = 0.05, 300
    rng = np.random.default_rng(2024)
    alarms, two_sided = 0, 0
    for rep in range(reps):
        alarm, (c,) = _gate_on_frames([_simulated_pair(rng)], alpha, seed=rep)
        alarms += alarm
        two_sided += c.p_value < alpha
    # binomial sd at p=0.05, n=300 is 0.0126: allow about 1.5 sd above nominal
    assert alarms / reps <= alpha + 0.02, alarms / reps
    assert two_sided / reps <= alpha + 0.04, two_sided / reps  # the test itself (either direction)


def test_family_wise_false_alarm_with_holm_is_at_most_alpha():
    alpha, reps, metrics = 0.05, 150, 4
    rng = np.random.default_rng(7)
    alarms = sum(_gate_on_frames([_simulated_pair(rng) for _ in range(metrics)], alpha, seed=rep)[0]
                 for rep in range(reps))
    assert alarms / reps <= alpha + 0.02, alarms / reps


# ---------------------------------------------------------------- the gate of a checkpoint series (reports.series)

def series_gate(tmp_path, candidate, settings):
    from reports import series

    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    out = tmp_path / "gate" / f"{candidate}.json"
    code = series.main(["gate", "--baseline", str(tmp_path / "metrics" / "base"), "--candidate",
                        str(tmp_path / "metrics" / candidate), "--settings", str(path), "--out",
                        str(out.with_suffix(".md")), "--json", str(out)])
    return code, json.loads(out.read_text())


def test_series_gate_records_the_exit_code_and_never_fails(tmp_path):
    scores = base_scores()
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "same", scores)
    write_run(tmp_path, "worse", scores - 0.05)
    write_run(tmp_path, "other", scores, weights="different")
    settings = {"baseline": "base", "baseline_rule": "first", "alpha": 0.05, "n_resamples": 500,
                "thresholds": {"compbench_*": 0.01}, "fail_on_regression": False}
    assert [series_gate(tmp_path, m, settings)[1]["verdict"] for m in ("same", "worse", "other")] == \
        ["pass", "REGRESSED", "not comparable"]
    code, report = series_gate(tmp_path, "worse", settings)
    assert code == 0 and report["exit_code"] == 1 and report["candidate_model"] == "worse"
    assert report["comparisons"][0]["threshold"] == pytest.approx(0.01)   # thresholds come from the settings
    assert (tmp_path / "gate" / "worse.md").read_text().startswith("## Regression gate")


def test_series_summary_fails_only_with_fail_on_regression(tmp_path, capsys):
    from reports import series

    scores = base_scores()
    write_run(tmp_path, "base", scores)
    write_run(tmp_path, "worse", scores - 0.05)
    settings = {"baseline": "base", "baseline_rule": "first", "alpha": 0.05, "n_resamples": 500, "thresholds": {},
                "fail_on_regression": False}
    series_gate(tmp_path, "worse", settings)
    series.write_status("s", [series.Checkpoint("ck/step_1.pth", 1, "base", "ok"),
                              series.Checkpoint("ck/step_2.pth", 2, "worse", "ok")], tmp_path / "status.csv")
    argv = ["summary", "--series", "s", "--status", str(tmp_path / "status.csv"), "--settings",
            str(tmp_path / "settings.json"), "--out", str(tmp_path / "summary.md"), str(tmp_path / "gate/worse.json")]
    assert series.main(argv) == 0
    assert "REGRESSED: compbench_blip_vqa" in (tmp_path / "summary.md").read_text()
    (tmp_path / "settings.json").write_text(json.dumps({**settings, "fail_on_regression": True}))
    assert series.main(argv) == 1
    assert "failing (fail_on_regression): worse: REGRESSED" in capsys.readouterr().err
