"""Counts and sizes given on a command line must be positive: a negative one was stored or used silently
(`--max-length -5` kept one T5 token per caption; `--height -5` was recorded in a prompt set)."""
import pytest

from evals.benchmarks.__main__ import main as benchmarks_main
from pixart.train.features import main as features_main
from reports.build import main as build_main
from reports.regress import main as regress_main

CASES = [
    (features_main, ["--data", "d", "--out", "o", "--vae", "v", "--text-encoder", "t", "--resolution", "32"],
     "--max-length"),
    (features_main, ["--data", "d", "--out", "o", "--vae", "v", "--text-encoder", "t", "--resolution", "32"],
     "--batch-size"),
    (features_main, ["--data", "d", "--out", "o", "--vae", "v", "--text-encoder", "t"], "--resolution"),
    (features_main, ["--data", "d", "--out", "o", "--vae", "v", "--text-encoder", "t"], "--patch-size"),
    (benchmarks_main, ["--benchmark", "t2i_compbench", "--subset", "color", "--width", "64", "--out", "p.parquet"],
     "--height"),
    (regress_main, ["--baseline", "a", "--candidate", "b"], "--n-resamples"),
    (build_main, ["--table", "t", "--out", "o"], "--grid-prompts"),
]


@pytest.mark.parametrize("main,args,flag", CASES, ids=[f"{m.__module__}{f}" for m, _, f in CASES])
@pytest.mark.parametrize("value", ["-5", "0"])
def test_a_count_below_one_is_refused_by_name(main, args, flag, value, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as ended:
        main([*args, flag, value])
    assert ended.value.code == 2
    assert f"argument {flag}: {value} is not a positive whole number" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing was written


def test_an_unknown_dtype_and_a_negative_worst_k_are_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for main, args, message in (
            (features_main, ["--data", "d", "--out", "o", "--vae", "v", "--text-encoder", "t", "--dtype", "float7"],
             "argument --dtype: invalid choice: 'float7'"),
            (build_main, ["--table", "t", "--out", "o", "--worst-k", "-1"],
             "argument --worst-k: -1 is not a whole number ≥ 0")):
        with pytest.raises(SystemExit) as ended:
            main(args)
        assert ended.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
