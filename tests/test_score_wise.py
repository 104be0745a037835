"""The WISE judge through the scoring CLI: a real HTTP server on 127.0.0.1, Overall with a CI, category rows,
failures counted, and a rerun that sends nothing already judged."""
import json

import pytest

from evals import score, table
from tests.test_wise import server  # noqa: F401  (the real chat-completions server fixture)
from tests.test_wise import SCRIPT, _prompt_set


def test_wise_kind_end_to_end(server, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("JUDGE_KEY", "sk-test-secret")
    script = {k: v for k, v in SCRIPT.items() if k != "slow"}
    srv = server(script)
    frame, cell = _prompt_set(tmp_path)
    frame = frame[frame["prompt"] != "slow"].assign(file=lambda f: f["sample_id"] + ".png")
    frame.to_parquet(cell / "manifest.parquet")
    settings = tmp_path / "wise-settings.json"
    settings.write_text(json.dumps({"kind": "wise", "base_url": srv.url, "api_key_env": "JUDGE_KEY",
                                    "timeout": 5, "retries": 2, "concurrency": 2, "n_resamples": 200}))
    args = ["--scorer", "wise", "--settings", str(settings), "--cell", str(cell), "--protocol", "wise@1",
            "--scores-out", str(tmp_path / "wise.parquet"), "--metric-out", str(tmp_path / "wise.json")]
    monkeypatch.setattr("evals.metrics.wise.time.sleep", lambda s: None, raising=False)
    result = score.run(score.parser().parse_args(args))
    assert result["n_failed"] == 1 and "p000005_00.png" in result["failed_examples"][0]  # "always 500"
    assert result["n"] == 5 and result["ci_low"] <= result["value"] <= result["ci_high"]
    # the only chemistry prompt failed: no chemistry row, and Overall says it fell back to the plain mean
    assert set(result["breakdown"]) == {"cultural", "time", "space", "biology", "physics"}
    assert "no scores for ['chemistry']: plain mean" in result["ci_method"]
    assert result["breakdown"]["cultural"]["value"] == pytest.approx(0.8)  # C,R,A = 2,1,0 → 0.80
    sent = len(srv.requests)
    again = score.run(score.parser().parse_args(args))
    assert len(srv.requests) - sent == 3  # only the failed image is sent again (1 try + 2 retries)
    assert again["value"] == pytest.approx(result["value"])
    rows = table.gather([tmp_path / "wise.json"])
    assert {"wise", "wise/cultural", "wise/physics"} <= set(rows["metric"])
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".parquet"):
            assert b"sk-test-secret" not in path.read_bytes()
