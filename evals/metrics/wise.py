"""WISE judge (original protocol, benchmarks.md §2.1): a multimodal chat model grades each image 0/1/2 on
Consistency, Realism and Aesthetic Quality; WiScore = (0.7·C + 0.2·R + 0.1·A)/2; Overall weights the six
categories by their share of the 1,000 prompts.

Any OpenAI-compatible chat-completions endpoint can judge (`--base-url`, `--model`). The API key is read
from an environment variable (its NAME is configurable) and is never logged or written. Every judgement is
cached by (image sha256, prompt id, judge model, rubric version), so an image already judged is never sent
again; images the judge could not score are counted and reported, never dropped silently.

`python -m evals.metrics.wise --prompts results/prompts/wise.parquet --samples DIR --base-url URL
 --scores OUT.parquet --metrics OUT.json [--cache judgements.jsonl] [--model M] [--api-key-env NAME]
 [--concurrency 4] [--timeout 120] [--retries 3]`
"""
import argparse
import base64
import hashlib
import http.client
import io
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from pixart.cli import clean_errors
from pixart.prompts import read_prompt_set

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-2024-05-13"
RUBRIC_VERSION = "wise-rubric-1"   # bump when SYSTEM_PROMPT or RUBRIC changes: cached judgements then miss
CRITERIA = ("Consistency", "Realism", "Aesthetic Quality")
WISCORE_WEIGHTS = (0.7, 0.2, 0.1)
OVERALL_WEIGHTS = {"cultural": 0.4, "time": 0.167, "space": 0.133, "biology": 0.1, "physics": 0.1, "chemistry": 0.1}

# Our own wording, with the structure of WISE_legacy/gpt_eval.py: system line; inputs; three 0/1/2 criteria
# with a one-line rubric per level; exact 3-line output; strictness paragraph; the actual strings.
SYSTEM_PROMPT = ("You are an exacting auditor of AI-generated images. You check each image against the text "
                 "it was made from and grade it without leniency.")
RUBRIC = """\
Grade one AI-generated image against the text it was generated from.

INPUTS
- PROMPT: the text the image generator received.
- EXPLANATION: what a correct image has to show, i.e. the knowledge the prompt implies.

CRITERIA (score each 0, 1 or 2)
Consistency: does the image realise the prompt, as the explanation interprets it, completely and correctly?
  0: the essential content is absent or wrong.
  1: partly right; some required elements or implied knowledge are absent or wrong.
  2: every required element is present and correct.
Realism: could the image be a photograph of the real world, with plausible physics, light and detail?
  0: plainly artificial or physically impossible.
  1: mostly believable, with visible flaws.
  2: indistinguishable from a real photograph.
Aesthetic Quality: composition, use of colour, and overall visual appeal.
  0: poor or unpleasant.
  1: acceptable but unremarkable.
  2: striking, well composed and harmonious.

OUTPUT
Answer with exactly these three lines and nothing else:
Consistency: <0, 1 or 2>
Realism: <0, 1 or 2>
Aesthetic Quality: <0, 1 or 2>

STRICTNESS
Grade harshly. A 2 is reserved for an image in which nothing at all can be faulted on that criterion;
any doubt lowers the score. Expect most images to receive no 2 at all.

PROMPT: {prompt}
EXPLANATION: {explanation}"""

_LABELLED = re.compile(r"\*{0,2}(Consistency|Realism|Aesthetic Quality)\*{0,2}\s*:?\s*\*{0,2}\s*(\d)", re.IGNORECASE)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class JudgeError(RuntimeError):
    """The judge cannot be used at all (missing key, refused credentials): the run stops."""


class JudgementFailed(RuntimeError):
    """One image could not be judged after every retry."""


@dataclass(frozen=True)
class Judgement:
    consistency: int
    realism: int
    aesthetic: int

    @property
    def wiscore(self) -> float:
        return wiscore(self.consistency, self.realism, self.aesthetic)


def wiscore(consistency: int, realism: int, aesthetic: int) -> float:
    """(0.7·C + 0.2·R + 0.1·A) / 2, in [0, 1]."""
    wc, wr, wa = WISCORE_WEIGHTS
    return (wc * consistency + wr * realism + wa * aesthetic) / 2


def overall_score(category_means: dict[str, float], weights: dict[str, float] = OVERALL_WEIGHTS) -> float:
    missing = sorted(set(weights) - set(category_means))
    if missing:
        raise ValueError(f"Overall needs every WISE category; no scores for {missing}")
    return sum(w * category_means[c] for c, w in weights.items())


def parse_judgement(reply: str) -> Judgement | None:
    """Labelled scores (optionally **bold**; a label given twice counts its last score), else exactly three lines
    holding only a digit 0–2 (C, R, A)."""
    found = {}
    for label, digit in _LABELLED.findall(reply):
        found[label.lower()] = int(digit)  # the last label wins, as WISE_legacy/gpt_eval.py's extract_scores
    scores = [found.get(c.lower()) for c in CRITERIA]
    if None in scores:
        scores = [int(line.strip()) for line in reply.splitlines() if line.strip() in ("0", "1", "2")]
    if len(scores) != 3 or any(s not in (0, 1, 2) for s in scores):
        return None
    return Judgement(*scores)


def as_png(image: bytes) -> bytes:
    if image.startswith(_PNG_SIGNATURE):
        return image
    out = io.BytesIO()
    Image.open(io.BytesIO(image)).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def build_messages(prompt: str, explanation: str, png: bytes) -> list[dict]:
    """System line, then the rubric text followed by the image as a base64 PNG data URL."""
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": [
            {"type": "text", "text": RUBRIC.format(prompt=prompt, explanation=explanation)},
            {"type": "image_url", "image_url": {"url": url}},
        ]},
    ]


class JudgeClient:
    """Chat-completions client: per-request timeout, retries with exponential backoff on HTTP errors,
    network errors, timeouts and unparsable replies. 401/403 stop the run (every image would fail)."""

    def __init__(self, base_url: str, model: str = DEFAULT_MODEL, *, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 120.0, retries: int = 3, backoff: float = 2.0,
                 temperature: float = 0.0, max_tokens: int = 2000):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.retries, self.backoff = model, timeout, retries, backoff
        self.temperature, self.max_tokens = temperature, max_tokens
        self._headers = {"Content-Type": "application/json"}
        if api_key_env:   # None: an endpoint without authentication (e.g. a local server)
            key = os.environ.get(api_key_env)
            if not key:
                raise JudgeError(f"environment variable {api_key_env} is empty or unset: export the judge's API "
                                 "key there (it is read from the environment only, never from files or arguments)")
            self._headers["Authorization"] = f"Bearer {key}"

    def __repr__(self) -> str:
        return f"JudgeClient(url={self.url!r}, model={self.model!r})"

    def judge(self, prompt: str, explanation: str, png: bytes) -> tuple[Judgement, str]:
        """(judgement, raw reply); raises JudgementFailed after 1 + `retries` attempts."""
        body = json.dumps({"model": self.model, "messages": build_messages(prompt, explanation, png),
                           "temperature": self.temperature, "max_tokens": self.max_tokens}).encode()
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                reply = self._post(body)
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException,
                    ValueError, KeyError, IndexError, TypeError) as err:
                problem = _describe(err)
            else:
                judgement = parse_judgement(reply)
                if judgement is not None:
                    return judgement, reply
                problem = f"unparsable reply {reply[:120]!r}"
            log.warning("judge attempt %d/%d failed: %s", attempt + 1, self.retries + 1, problem)
        raise JudgementFailed(f"{self.retries + 1} attempts failed; last: {problem}")

    def _post(self, body: bytes) -> str:
        request = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = json.loads(response.read())
        except urllib.error.HTTPError as err:
            err.close()
            if err.code in (401, 403):
                raise JudgeError(f"{self.url} refused the credentials (HTTP {err.code}); check the API key "
                                 "variable and the endpoint") from None
            raise
        return data["choices"][0]["message"]["content"] or ""


def _describe(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"connection error ({err.reason})"
    if isinstance(err, TimeoutError):
        return "timed out"
    return f"{type(err).__name__}: {err}"


class JudgementCache:
    """Append-only JSONL of judgements keyed by (image sha256, prompt id, judge model, rubric version)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries = {}
        if self.path.is_file():
            for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    record = json.loads(line)
                    self._entries[record["key"]] = record
                except (json.JSONDecodeError, KeyError):   # a line cut short by a killed run: judged again
                    log.warning("%s:%d: unreadable cache line ignored", self.path, number)

    @staticmethod
    def key(image_sha256: str, prompt_id: str, model: str, rubric_version: str = RUBRIC_VERSION) -> str:
        return f"{image_sha256}|{prompt_id}|{model}|{rubric_version}"

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put(self, key: str, record: dict) -> None:
        record = {"key": key, **record}
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._entries[key] = record


@dataclass(frozen=True)
class JudgeItem:
    sample_id: str
    prompt_id: str
    category: str
    prompt: str
    explanation: str
    image: Path


def items_from_prompts(prompts: pd.DataFrame, samples_dir: Path) -> list[JudgeItem]:
    """One item per sample of a WISE prompt set (metadata from evals.benchmarks), image `{sample_id}.png`."""
    items = []
    for row in prompts.itertuples():
        meta = json.loads(row.metadata)
        items.append(JudgeItem(row.sample_id, f"wise{meta['wise_id']}", meta["category"], row.prompt,
                               meta["Explanation"], Path(samples_dir) / f"{row.sample_id}.png"))
    return items


def judge_images(items: list[JudgeItem], client: JudgeClient, cache: JudgementCache,
                 concurrency: int = 4) -> pd.DataFrame:
    """Per-image C, R, A, wiscore, cached, error (failed images keep a row with their error)."""
    def run(item: JudgeItem) -> dict:
        row = {"sample_id": item.sample_id, "prompt_id": item.prompt_id, "category": item.category,
               "consistency": None, "realism": None, "aesthetic": None, "wiscore": None,
               "cached": False, "error": None}
        try:
            image = item.image.read_bytes()
        except OSError as err:
            return {**row, "error": f"image unreadable: {err}"}
        key = cache.key(hashlib.sha256(image).hexdigest(), item.prompt_id, client.model)
        record = cache.get(key)
        if record is None:
            try:
                png = as_png(image)
            except (OSError, ValueError) as err:  # a damaged JPEG/WebP: counted, not a crash of the whole run
                return {**row, "error": f"image undecodable: {err}"}
            try:
                judgement, reply = client.judge(item.prompt, item.explanation, png)
            except JudgementFailed as err:
                log.warning("%s: not judged: %s", item.sample_id, err)
                return {**row, "error": str(err)}
            record = {"consistency": judgement.consistency, "realism": judgement.realism,
                      "aesthetic": judgement.aesthetic, "reply": reply}
            cache.put(key, record)
        else:
            row["cached"] = True
        scores = (record["consistency"], record["realism"], record["aesthetic"])
        return {**row, "consistency": scores[0], "realism": scores[1], "aesthetic": scores[2],
                "wiscore": wiscore(*scores)}

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(run, item) for item in items]
        try:
            rows = [f.result() for f in futures]
        except JudgeError:
            pool.shutdown(cancel_futures=True)
            raise
    return pd.DataFrame(rows, columns=["sample_id", "prompt_id", "category", "consistency", "realism",
                                       "aesthetic", "wiscore", "cached", "error"])


def summarize(scores: pd.DataFrame, weights: dict[str, float] = OVERALL_WEIGHTS) -> dict:
    """Category means, Overall (None unless every category has scores), and counts incl. failures."""
    scored = scores.dropna(subset=["wiscore"])
    means = {c: float(v) for c, v in scored.groupby("category")["wiscore"].mean().items()}
    missing = sorted(set(weights) - set(means))
    failed = scores[scores["wiscore"].isna()]
    return {"categories": means, "overall": None if missing else overall_score(means, weights),
            "categories_without_scores": missing, "n": len(scores), "n_scored": len(scored),
            "n_failed": len(failed), "n_failed_by_category": failed.groupby("category").size().to_dict(),
            "n_cached": int(scores["cached"].sum())}


@clean_errors("evals.metrics.wise")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=Path, required=True, help="WISE prompt set (python -m evals.benchmarks)")
    parser.add_argument("--samples", type=Path, required=True, help="folder with {sample_id}.png")
    parser.add_argument("--scores", type=Path, required=True, help="per-image scores (parquet)")
    parser.add_argument("--metrics", type=Path, required=True, help="aggregates (json)")
    parser.add_argument("--cache", type=Path, default=Path("results/cache/wise_judgements.jsonl"))
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible API root, e.g. https://api.openai.com/v1")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="NAME of the variable holding the key ('' for an endpoint without one)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--retries", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    client = JudgeClient(args.base_url, args.model, api_key_env=args.api_key_env or None,
                         timeout=args.timeout, retries=args.retries)
    items = items_from_prompts(read_prompt_set(args.prompts), args.samples)
    scores = judge_images(items, client, JudgementCache(args.cache), args.concurrency)
    summary = {**summarize(scores), "judge_model": args.model, "rubric_version": RUBRIC_VERSION,
               "temperature": client.temperature, "max_tokens": client.max_tokens}
    args.scores.parent.mkdir(parents=True, exist_ok=True)
    scores.to_parquet(args.scores, index=False)
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(summary, indent=2))
    overall = "n/a" if summary["overall"] is None else f"{summary['overall']:.3f}"
    print(f"wise: {summary['n_scored']}/{summary['n']} judged ({summary['n_cached']} from cache, "
          f"{summary['n_failed']} failed), Overall {overall} → {args.metrics}")


if __name__ == "__main__":
    main()
