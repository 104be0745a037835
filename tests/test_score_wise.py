"""The WISE judge through the scoring CLI: a real HTTP server on 127.0.0.1, Overall with a CI, category rows,
failures counted, a rerun that sends nothing already judged, and Overall with WISE's weights once complete."""
import json

import pytest

from evals import score, table
from tests.test_wise import server  # noqa: F401  (the real chat-completions server fixture)
from tests.test_wise import SCRIPT, _prompt_set


def test_wise_kind_end_to_end(server, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("JUDGE_KEY", "sk-test-secret")
    script = {k: v for k, v in SCRIPT.items() if k != "slow"}
    # the retried prompts end on replies of their own, so all six category means differ (weights cannot swap)
    script["bad json then good"] = [("raw", "not json"), ("reply", "Consistency: 2\nRealism: 2\nAesthetic Quality: 1")]
    script["500 then good"] = [("status", 500), ("status", 503),
                               ("reply", "Consistency: 1\nRealism: 1\nAesthetic Quality: 1")]
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
    # the only chemistry prompt failed: Overall (weighted over the six categories) is undefined, not the mean of
    # the other five, and the chemistry row is kept with its failure
    assert result["n"] == 5 and result["value"] is None and result["ci_low"] is None
    assert "no scores for ['chemistry']" in result["note"]
    assert result["breakdown"]["chemistry"] == {"value": None, "n": 0, "ci_low": None, "ci_high": None, "n_failed": 1}
    assert result["breakdown"]["cultural"]["value"] == pytest.approx(0.8)  # C,R,A = 2,1,0 → 0.80
    sent = len(srv.requests)
    again = score.run(score.parser().parse_args(args))
    assert len(srv.requests) - sent == 3  # only the failed image is sent again (1 try + 2 retries)
    assert again["breakdown"] == result["breakdown"]
    # once chemistry is judged, Overall is WISE's weighted mean of the category means (one prompt per category
    # here: no CI)
    srv.script["always 500"] = [("reply", "Consistency: 0\nRealism: 1\nAesthetic Quality: 2")]
    complete = score.run(score.parser().parse_args(args))
    means = {c: row["value"] for c, row in complete["breakdown"].items()}
    assert means == pytest.approx({"cultural": 0.8, "time": 0.65, "space": 1.0, "biology": 0.95, "physics": 0.5,
                                   "chemistry": 0.2})
    assert complete["n_failed"] == 0 and "one prompt only" in complete["note"]
    assert complete["value"] == pytest.approx(0.4 * 0.8 + 0.167 * 0.65 + 0.133 * 1.0 + 0.1 * (0.95 + 0.5 + 0.2))
    rows = table.gather([tmp_path / "wise.json"])
    assert {"wise", "wise/cultural", "wise/physics"} <= set(rows["metric"])
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".parquet"):
            assert b"sk-test-secret" not in path.read_bytes()
