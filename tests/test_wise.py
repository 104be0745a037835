"""WISE judge against a real local chat-completions server: retries, timeouts, cache, key hygiene, formulas."""
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from evals.metrics import wise

ROOT = Path(__file__).resolve().parent.parent
KEY_ENV = "PIXART_EVAL_TEST_JUDGE_KEY"
KEY = "sk-test-7f3a9c1e5b2d4f6a8c0e"
GOOD = "Consistency: 2\nRealism: 1\nAesthetic Quality: 0"


class ChatServer(ThreadingHTTPServer):
    """Answers each PROMPT by a script: one action per attempt (the last repeats)."""
    daemon_threads = True

    def __init__(self, script: dict[str, list]):
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.script, self.requests, self.lock = script, [], threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def count(self, prompt: str) -> int:
        return sum(1 for p, _ in self.requests if p == prompt)


class ChatHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):   # keep test output clean
        pass

    def do_POST(self):
        assert self.path == "/v1/chat/completions"
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["model"] == wise.DEFAULT_MODEL and body["temperature"] == 0 and body["max_tokens"] == 2000
        system, user = body["messages"]
        assert system["role"] == "system"
        text, image = user["content"]   # the image comes after the text
        assert text["type"] == "text" and image["image_url"]["url"].startswith("data:image/png;base64,")
        prompt = re.search(r"^PROMPT: (.*)$", text["text"], re.M).group(1)
        with self.server.lock:
            attempt = self.server.count(prompt)
            self.server.requests.append((prompt, self.headers.get("Authorization")))
        actions = self.server.script[prompt]
        kind, value = actions[min(attempt, len(actions) - 1)]
        if kind == "sleep":
            time.sleep(value)
            kind, value = "reply", GOOD
        if kind == "status":
            self._send(value, b'{"error": {"message": "server error"}}')
        elif kind == "raw":
            self._send(200, value.encode())
        else:
            self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": value}}]}).encode())

    def _send(self, status: int, payload: bytes):
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:   # the client already timed out and closed the connection
            pass


@pytest.fixture
def server():
    servers = []

    def start(script):
        srv = ChatServer(script)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _png(path: Path, colour) -> Path:
    Image.new("RGB", (16, 16), colour).save(path)
    return path


SCRIPT = {
    "good": [("reply", GOOD)],
    "bold": [("reply", "**Consistency**: 1\n**Realism:** 2\n**Aesthetic Quality**: 2")],
    "malformed then bare lines": [("reply", "The image looks fine to me."), ("reply", "2\n2\n2")],
    "bad json then good": [("raw", "not json"), ("reply", GOOD)],
    "500 then good": [("status", 500), ("status", 503), ("reply", GOOD)],
    "always 500": [("status", 500)],
    "slow": [("sleep", 1.0)],
}
CATEGORIES = ["cultural", "time", "space", "biology", "physics", "chemistry", "chemistry"]


def _prompt_set(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    samples = tmp_path / "samples"
    samples.mkdir()
    rows = []
    for i, (prompt, category) in enumerate(zip(SCRIPT, CATEGORIES)):
        sample_id = f"p{i:06d}_00"
        _png(samples / f"{sample_id}.png", (30 * i, 10, 200))
        meta = {"wise_id": i + 1, "category": category, "Explanation": f"explanation of {prompt}"}
        rows.append({"sample_id": sample_id, "prompt_id": f"p{i:06d}", "image_index": 0, "prompt": prompt,
                     "seed": i, "height": None, "width": None, "metadata": json.dumps(meta)})
    return pd.DataFrame(rows), samples


def test_judge_retries_caches_and_never_leaks_the_key(server, tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level("DEBUG")
    monkeypatch.setenv(KEY_ENV, KEY)
    srv = server(SCRIPT)
    prompts, samples = _prompt_set(tmp_path)
    cache = tmp_path / "judgements.jsonl"
    client = wise.JudgeClient(srv.url, api_key_env=KEY_ENV, timeout=0.25, retries=3, backoff=0.01)
    assert KEY not in repr(client)

    start = time.monotonic()
    scores = wise.judge_images(wise.items_from_prompts(prompts, samples), client, wise.JudgementCache(cache),
                               concurrency=3)
    assert time.monotonic() - start < 10
    by_prompt = dict(zip(prompts["prompt"], scores.to_dict("records")))
    assert by_prompt["good"]["wiscore"] == pytest.approx(0.80)
    assert (by_prompt["bold"]["consistency"], by_prompt["bold"]["realism"], by_prompt["bold"]["aesthetic"]) == (1, 2, 2)
    assert by_prompt["malformed then bare lines"]["wiscore"] == pytest.approx(1.0)
    assert by_prompt["bad json then good"]["wiscore"] == pytest.approx(0.80)
    assert by_prompt["500 then good"]["wiscore"] == pytest.approx(0.80)
    assert "HTTP 500" in by_prompt["always 500"]["error"]
    assert "timed out" in by_prompt["slow"]["error"]
    assert {p: srv.count(p) for p in SCRIPT} == {"good": 1, "bold": 1, "malformed then bare lines": 2,
                                                 "bad json then good": 2, "500 then good": 3, "always 500": 4,
                                                 "slow": 4}
    assert all(auth == f"Bearer {KEY}" for _, auth in srv.requests)
    summary = wise.summarize(scores)
    assert summary["n"] == 7 and summary["n_failed"] == 2 and summary["n_failed_by_category"] == {"chemistry": 2}
    assert summary["categories_without_scores"] == ["chemistry"] and summary["overall"] is None

    # rerun through the CLI: judged images come from the cache, only the two failures are sent again
    prompts.to_parquet(tmp_path / "wise.parquet", index=False)
    before = len(srv.requests)
    wise.main(["--prompts", str(tmp_path / "wise.parquet"), "--samples", str(samples),
               "--scores", str(tmp_path / "scores.parquet"), "--metrics", str(tmp_path / "metrics.json"),
               "--cache", str(cache), "--base-url", srv.url, "--api-key-env", KEY_ENV, "--timeout", "0.25",
               "--concurrency", "2", "--retries", "0"])
    sent_again = [p for p, _ in srv.requests[before:]]
    assert set(sent_again) == {"always 500", "slow"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_cached"] == 5 and metrics["n_failed"] == 2 and metrics["judge_model"] == wise.DEFAULT_MODEL

    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 4 and not any(KEY.encode() in data for data in written)
    out = capsys.readouterr()
    assert KEY not in caplog.text + out.out + out.err


def test_refused_credentials_stop_the_run(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    srv = server({"good": [("status", 401)]})
    prompts, samples = _prompt_set(tmp_path)
    client = wise.JudgeClient(srv.url, api_key_env=KEY_ENV, timeout=1, backoff=0.01)
    with pytest.raises(wise.JudgeError, match="HTTP 401") as err:
        wise.judge_images(wise.items_from_prompts(prompts[:1], samples), client,
                          wise.JudgementCache(tmp_path / "c.jsonl"))
    assert KEY not in str(err.value) and srv.count("good") == 1


def test_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(wise.JudgeError, match=KEY_ENV):
        wise.JudgeClient("http://127.0.0.1:9/v1", api_key_env=KEY_ENV)


def test_worked_examples():
    assert wise.wiscore(2, 1, 0) == pytest.approx(0.80)
    assert wise.wiscore(2, 2, 2) == pytest.approx(1.0)
    pixart = {"cultural": .45, "time": .50, "space": .48, "biology": .49, "physics": .56, "chemistry": .34}
    assert round(wise.overall_score(pixart), 3) == 0.466
    assert sum(wise.OVERALL_WEIGHTS.values()) == pytest.approx(1.0)
    protocol = yaml.safe_load((ROOT / "evals/benchmarks/wise.yaml").read_text())
    assert {c: v["weight"] for c, v in protocol["categories"].items()} == wise.OVERALL_WEIGHTS


@pytest.mark.parametrize("reply, expected", [
    ("Consistency: 2\nRealism: 1\nAesthetic Quality: 0", (2, 1, 0)),
    ("**Consistency:** 0\n**Realism**: 1\n**Aesthetic Quality:** 2", (0, 1, 2)),
    ("Sure.\nconsistency: 1\nrealism: 1\naesthetic quality: 1", (1, 1, 1)),
    ("1\n0\n2", (1, 0, 2)),
    ("Consistency: 2 would need more detail\nConsistency: 1\nRealism: 1\nAesthetic Quality: 1", (1, 1, 1)),
    ("Consistency: 2\nRealism: 1", None),
    ("Consistency: 3\nRealism: 1\nAesthetic Quality: 0", None),
    ("no scores here", None),
])
def test_parser(reply, expected):
    judgement = wise.parse_judgement(reply)
    assert (judgement and (judgement.consistency, judgement.realism, judgement.aesthetic)) == expected


def test_undecodable_image_is_a_counted_failure(tmp_path):
    class NeverCalled:
        model = "judge"

        def judge(self, *args):
            raise AssertionError("an undecodable image must not reach the judge")

    (tmp_path / "s0.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    item = wise.JudgeItem("s0", "wise1", "cultural", "a koi pond", "koi are orange", tmp_path / "s0.jpg")
    rows = wise.judge_images([item], NeverCalled(), wise.JudgementCache(tmp_path / "cache.jsonl"))
    assert rows["wiscore"].isna().all() and "s0" in set(rows["sample_id"])
    assert "image undecodable" in rows["error"].iloc[0]


def test_rubric_has_the_protocol_structure():
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    system, user = wise.build_messages("a koi pond", "koi are orange fish", png.getvalue())
    text = user["content"][0]["text"]
    for part in ("PROMPT", "EXPLANATION", "Consistency: <0, 1 or 2>", "Realism: <0, 1 or 2>",
                 "Aesthetic Quality: <0, 1 or 2>", "PROMPT: a koi pond", "EXPLANATION: koi are orange fish"):
        assert part in text
    assert system["role"] == "system" and user["content"][1]["type"] == "image_url"
