"""reports/checks.py: each claim holds, fails or is 'not evaluated' exactly when it should, from tables and logs."""
import json

import pandas as pd
import pytest

from reports.checks import main, run_checks, steps_to, tally


def _row(model, bench, metric, value, half, cfg=4.5, higher=True):
    return {"model": model, "bench": bench, "metric": metric, "cfg": cfg, "value": value, "ci_low": value - half,
            "ci_high": value + half, "higher_is_better": higher}


def _series_frame(late_fid, late_score):
    return pd.DataFrame([
        _row("run@100", "fid", "clip_fid", 60.0, 3.0, higher=False), _row("run@100", "color", "binding", 0.2, 0.05),
        _row("run@200", "fid", "clip_fid", 50.0, 3.0, higher=False), _row("run@200", "color", "binding", 0.3, 0.05),
        _row("run@400", "fid", "clip_fid", late_fid, 3.0, higher=False),
        _row("run@400", "color", "binding", late_score, 0.05),
        _row("run-other@400", "fid", "clip_fid", 99.0, 3.0, higher=False),
    ])


def test_checkpoints_compares_last_with_first_in_each_metrics_direction():
    check = {"c": {"kind": "checkpoints", "series": "run"}}
    good = run_checks(_series_frame(late_fid=40.0, late_score=0.5), check)["c"]
    assert good["holds"] is True
    assert "step 100" in good["measured"] and "step 400" in good["measured"] and "lower is better" in good["measured"]
    # FID lower but the intervals touch: not apart, so the claim fails
    assert run_checks(_series_frame(late_fid=55.0, late_score=0.5), check)["c"]["holds"] is False
    # a higher FID is worse even though the number grew
    assert run_checks(_series_frame(late_fid=80.0, late_score=0.5), check)["c"]["holds"] is False
    assert run_checks(_series_frame(late_fid=40.0, late_score=0.1), check)["c"]["holds"] is False
    only_fid = {"c": {"kind": "checkpoints", "series": "run", "metrics": ["fid/clip_fid"]}}
    assert run_checks(_series_frame(late_fid=40.0, late_score=0.1), only_fid)["c"]["holds"] is True


def test_checkpoints_without_two_scored_steps_is_not_evaluated():
    frame = _series_frame(40.0, 0.5)
    result = run_checks(frame[frame["model"] == "run@100"], {"c": {"kind": "checkpoints", "series": "run"}})["c"]
    assert result["holds"] is None and "only step 100" in result["measured"]
    missing = run_checks(frame, {"c": {"kind": "checkpoints", "series": "run", "metrics": ["texture/binding"]}})["c"]
    assert missing["holds"] is None and "texture/binding: not scored" in missing["measured"]
    assert run_checks(pd.DataFrame(), {"c": {"kind": "checkpoints", "series": "run"}})["c"]["holds"] is None


def test_cfg_needs_every_step_to_rise():
    rows = [_row("m", "fid", "clip", v, 0.01, cfg=c) for c, v in [(1.0, 0.2), (2.0, 0.3), (3.0, 0.35), (4.5, 0.33)]]
    frame = pd.DataFrame(rows)
    spec = {"kind": "cfg", "model": "m", "bench": "fid", "metric": "clip"}
    assert run_checks(frame, {"low": {**spec, "cfg": [1.0, 2.0, 3.0]}})["low"]["holds"] is True
    assert run_checks(frame, {"all": {**spec, "cfg": [1.0, 2.0, 3.0, 4.5]}})["all"]["holds"] is False
    absent = run_checks(frame, {"x": {**spec, "cfg": [1.0, 1.5]}})["x"]
    assert absent["holds"] is None and "not scored at cfg 1.5" in absent["measured"]


def test_several_settings_must_be_told_apart_by_the_check():
    # the series scored at two cfg values, the cfg sweep with two samplers: without a named setting the checks
    # would pick a row by order; they say which settings they saw instead, and compare at the one named
    frame = pd.concat([_series_frame(40.0, 0.5).assign(sampler="dpm-solver", steps=14),
                       _series_frame(80.0, 0.1).assign(sampler="dpm-solver", steps=14, cfg=2.0)])
    check = {"kind": "checkpoints", "series": "run", "metrics": ["fid/clip_fid"]}
    ambiguous = run_checks(frame, {"c": check})["c"]
    assert ambiguous["holds"] is None and "several settings (dpm-solver steps 14 cfg 4.5, dpm-solver steps 14 cfg 2)" \
        in ambiguous["measured"]
    assert run_checks(frame, {"c": {**check, "cfg": 4.5}})["c"]["holds"] is True
    assert run_checks(frame, {"c": {**check, "cfg": 2.0, "sampler": "dpm-solver", "steps": 14}})["c"]["holds"] is False
    rising = [_row("m", "fid", "clip", v, 0.01, cfg=c) | {"sampler": "ddim", "steps": 50} for c, v in [(1.0, 0.2), (2.0, 0.3)]]
    falling = [_row("m", "fid", "clip", v, 0.01, cfg=c) | {"sampler": "iddpm", "steps": 100} for c, v in [(1.0, 0.3), (2.0, 0.2)]]
    spec = {"kind": "cfg", "model": "m", "bench": "fid", "metric": "clip", "cfg": [1.0, 2.0]}
    for rows in (rising + falling, falling + rising):  # the verdict must not depend on row order
        both = pd.DataFrame(rows)
        result = run_checks(both, {"x": spec})["x"]
        assert result["holds"] is None and "several settings per cfg" in result["measured"]
        assert run_checks(both, {"x": {**spec, "sampler": "ddim"}})["x"]["holds"] is True
        assert run_checks(both, {"x": {**spec, "sampler": "iddpm", "steps": 100}})["x"]["holds"] is False


def test_settings_edge_cases_are_named_not_guessed():
    frame = _series_frame(40.0, 0.5).assign(sampler="dpm-solver", steps=14)
    check = {"kind": "checkpoints", "series": "run", "metrics": ["fid/clip_fid"]}
    # the first checkpoint scored only at cfg 4.5, the last only at 2: not the same setting, not compared
    moved = frame.assign(cfg=[4.5, 4.5, 4.5, 4.5, 2.0, 2.0, 4.5])
    result = run_checks(moved, {"c": check})["c"]
    assert result["holds"] is None and "several settings (dpm-solver steps 14 cfg 4.5, dpm-solver steps 14 cfg 2)" \
        in result["measured"]
    # the sweep's "name:steps" spelling matches nothing: say so, with what was scored
    wrong = run_checks(frame, {"c": {**check, "sampler": "dpm-solver:14"}})["c"]
    assert wrong["holds"] is None and "nothing scored at sampler dpm-solver:14 (scored: dpm-solver steps 14 cfg 4.5" \
        in wrong["measured"]
    every = run_checks(frame, {"c": {"kind": "checkpoints", "series": "run", "sampler": "ddim"}})["c"]
    assert "every metric it was scored on" in every["claim"] and "nothing scored at sampler ddim" in every["measured"]
    # cfg and steps stored as text still print
    text = pd.concat([frame, frame.assign(cfg=2.0)]).astype({"cfg": str, "steps": str})
    assert "cfg 2" in run_checks(text, {"c": check})["c"]["measured"]
    # a cfg sweep: a repeat at a cfg the check does not test does not matter
    rows = [_row("m", "fid", "clip", v, 0.01, cfg=c) | {"sampler": s} for c, v, s in
            [(1.0, 0.2, "ddim"), (2.0, 0.3, "ddim"), (4.5, 0.31, "ddim"), (4.5, 0.33, "iddpm")]]
    spec = {"kind": "cfg", "model": "m", "bench": "fid", "metric": "clip", "cfg": [1.0, 2.0]}
    assert run_checks(pd.DataFrame(rows), {"x": spec})["x"]["holds"] is True


def test_a_checkpoint_without_a_ci_is_not_evaluated():
    frame = _series_frame(40.0, 0.5)
    frame.loc[frame["model"] == "run@400", ["ci_low", "ci_high"]] = None
    result = run_checks(frame, {"c": {"kind": "checkpoints", "series": "run", "metrics": ["fid/clip_fid"]}})["c"]
    assert result["holds"] is None and "no CI for step 400" in result["measured"]
    rows = [_row("m", "fid", "clip", v, 0.01, cfg=c) for c, v in [(1.0, 0.2), (2.0, 0.3)]]
    rows[0]["ci_low"] = rows[0]["ci_high"] = None
    assert "cfg 1: 0.2 (no CI)" in run_checks(pd.DataFrame(rows), {"x": {"kind": "cfg", "model": "m", "bench": "fid",
                                                                       "metric": "clip", "cfg": [1.0, 2.0]}})["x"]["measured"]


def _log(path, losses, every=10):
    path.write_text("".join(json.dumps({"step": every * (i + 1), "loss": v}) + "\n" for i, v in enumerate(losses)))
    return str(path)


def test_steps_to_loss_uses_the_running_mean_and_the_loss_every_run_reaches(tmp_path):
    fast = _log(tmp_path / "fast.jsonl", [0.5, 0.3, 0.2, 0.2, 0.2, 0.2])
    slow = _log(tmp_path / "slow.jsonl", [1.0, 0.9, 0.6, 0.4, 0.3, 0.25])
    result = run_checks(pd.DataFrame(), {"r": {"kind": "steps_to_loss", "runs": {"fast": fast, "slow": slow},
                                               "window": 10}})["r"]
    assert result["holds"] is True and "loss 0.2500" in result["measured"]
    assert "fast: step 30" in result["measured"] and "slow: step 60" in result["measured"]
    reverse = run_checks(pd.DataFrame(), {"r": {"kind": "steps_to_loss", "runs": {"slow": slow, "fast": fast},
                                                "window": 10}})["r"]
    assert reverse["holds"] is False
    never = run_checks(pd.DataFrame(), {"r": {"kind": "steps_to_loss", "runs": {"slow": slow, "fast": fast},
                                              "target": 0.21, "window": 10}})["r"]
    assert never["holds"] is False and "slow: never (60 steps)" in never["measured"]
    # a two-record running mean smooths a single lucky batch away
    noisy = pd.Series([0.5, 0.1, 0.5, 0.2, 0.2], index=[10, 20, 30, 40, 50])
    assert steps_to(noisy, 0.2, window=10) == 20 and steps_to(noisy, 0.2, window=20) == 50


def test_missing_log_is_named_not_passed(tmp_path):
    result = run_checks(pd.DataFrame(), {"r": {"kind": "steps_to_loss",
                                               "runs": {"a": str(tmp_path / "a.jsonl"), "b": str(tmp_path / "b")}}})
    assert result["r"]["holds"] is None and "a.jsonl: no training log" in result["r"]["measured"]


def test_cli_writes_the_table_and_json(tmp_path, capsys, cli_error):
    table = tmp_path / "table.parquet"
    _series_frame(40.0, 0.5).to_parquet(table)
    checks = tmp_path / "checks.json"
    checks.write_text(json.dumps({"later": {"kind": "checkpoints", "series": "run"},
                                  "bad": {"kind": "cfg", "model": "nope", "bench": "fid", "metric": "x",
                                          "cfg": [1, 2]}}))
    assert main(["--table", str(table), "--checks", str(checks), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "check later: yes" in out and "check bad: not evaluated" in out
    assert "checks: 1 of 2 hold (not evaluated: bad) → " in out
    md = (tmp_path / "report/tables/checks.md").read_text()
    assert "not evaluated" in md and json.loads((tmp_path / "report/checks.json").read_text())["later"]["holds"]
    checks.write_text(json.dumps({"x": {"kind": "magic"}}))
    err = cli_error(main, ["--table", table, "--checks", checks, "--out", tmp_path / "r2"])
    assert f"reports.checks: error: {checks}: check 'x': kind 'magic' is not one of" in err
    assert not (tmp_path / "r2").exists()
    with pytest.raises(SystemExit):
        main(["--table", str(table)])


BAD_SPECS = [  # (checks JSON, what the error must say): each names the check and the key
    ([{"kind": "cfg"}], "expected a JSON object, got a list"),
    ({"c": "checkpoints"}, "check 'c': expected an object"),
    ({"c": {"kind": "checkpoints", "series": "run", "smapler": "ddim"}}, "check 'c': unknown key(s) ['smapler']"),
    ({"c": {"kind": "cfg", "model": "m", "bench": "b", "cfg": [1, 2]}}, "check 'c': kind cfg needs metric"),
    ({"c": {"kind": "cfg", "model": "m", "bench": "b", "metric": "x", "cfg": [1]}},
     "check 'c': cfg must be a list of ≥ 2 numbers, got [1]"),
    ({"c": {"kind": "checkpoints", "series": "run", "steps": "14"}}, "check 'c': steps must be a whole number"),
    ({"c": {"kind": "checkpoints", "series": "run", "metrics": ["clip"]}}, "metrics must be a list of 'bench/metric'"),
    ({"c": {"kind": "steps_to_loss", "runs": {"a": "a.jsonl"}}}, "runs must be an object of ≥ 2 run names"),
    ({"c": {"kind": "steps_to_loss", "runs": {"a": "a", "b": "b"}, "window": 0}}, "window must be a whole number"),
]


@pytest.mark.parametrize("spec,message", BAD_SPECS, ids=[m.split(":")[-1][:30] for _, m in BAD_SPECS])
def test_a_malformed_check_spec_is_refused_by_name(spec, message, tmp_path, cli_error):
    # a misspelt selector was ignored, so the check compared at another setting; others gave `checks: 'metric'`
    table, checks = tmp_path / "table.parquet", tmp_path / "checks.json"
    _series_frame(40.0, 0.5).to_parquet(table)
    checks.write_text(json.dumps(spec))
    err = cli_error(main, ["--table", table, "--checks", checks, "--out", tmp_path / "out"])
    assert f"{checks}: " in err and message in err
    assert not (tmp_path / "out").exists()


def test_unreadable_checks_or_table_files_are_named(tmp_path, cli_error):
    table, checks = tmp_path / "table.parquet", tmp_path / "checks.json"
    _series_frame(40.0, 0.5).to_parquet(table)
    checks.write_text('{"c": {"kind": ')
    assert f"{checks}: not valid JSON" in cli_error(main, ["--table", table, "--checks", checks, "--out", tmp_path])
    checks.write_bytes(b"\xff\xfe{")
    assert f"{checks}: not valid JSON" in cli_error(main, ["--table", table, "--checks", checks, "--out", tmp_path])
    checks.write_text(json.dumps({"c": {"kind": "checkpoints", "series": "run"}}))
    assert f"{tmp_path / 'none.json'}: cannot be read" in cli_error(
        main, ["--table", table, "--checks", tmp_path / "none.json", "--out", tmp_path])
    (tmp_path / "bad.parquet").write_text("not parquet")
    assert "is not a readable parquet file" in cli_error(
        main, ["--table", tmp_path / "bad.parquet", "--checks", checks, "--out", tmp_path])
    _series_frame(40.0, 0.5).drop(columns=["ci_low"]).to_parquet(table)
    assert "lacks the columns ['ci_low']" in cli_error(main, ["--table", table, "--checks", checks, "--out", tmp_path])


def test_a_damaged_training_log_is_named_by_line_not_passed(tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    _log(good, [1.0, 0.5, 0.2])
    bad.write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "los')
    result = run_checks(pd.DataFrame(), {"r": {"kind": "steps_to_loss", "runs": {"good": str(good), "bad": str(bad)}}})
    assert result["r"]["holds"] is None and f"{bad}, line 2: not a JSON record" in result["r"]["measured"]
    for text, message in (('{"step": 10}\n', "line 1: a log record needs step and loss"),
                          ('{"step": "10", "loss": 1.0}\n', "line 1: step must be a whole number and loss a number"),
                          ('{"step": 10, "loss": null}\n', "line 1: step must be a whole number and loss a number"),
                          (b"\xff\xfe", "the training log cannot be read")):
        bad.write_bytes(text if isinstance(text, bytes) else text.encode())
        result = run_checks(pd.DataFrame(), {"r": {"kind": "steps_to_loss",
                                                   "runs": {"good": str(good), "bad": str(bad)}}})
        assert result["r"]["holds"] is None and f"{bad}" in result["r"]["measured"], text
        assert message in result["r"]["measured"], text


def test_tally_names_what_did_not_hold():
    results = {"a": {"holds": True}, "b": {"holds": False}, "c": {"holds": None}, "d": {"holds": False}}
    assert tally(results) == "1 of 4 hold (NO: b, d; not evaluated: c)"
    assert tally({"a": {"holds": True}}) == "1 of 1 hold"
