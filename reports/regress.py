"""Regression gate: one or more candidate runs against a baseline on the same protocol.

python -m reports.regress --baseline results/metrics/MODEL_A --candidate results/metrics/MODEL_B \
    [--candidate …] [--thresholds regress.yaml] [--alpha 0.05] [--out gate.md] [--json gate.json]

Inputs are the per-cell metric JSONs of `evals.score` (files, or folders searched recursively). Baseline and
candidate numbers are matched on (bench, metric, sampler, steps, cfg); each pair must share protocol, scorer,
weights fingerprint, direction and (fidelity) reference set, otherwise the gate refuses to compare.

Statistics, per matched pair (diff = candidate − baseline):
* per-image metrics: the per-image parquet beside each JSON (results/scores/… for results/metrics/…) is
  joined on sample_id; images that failed in either run are dropped; `evals.stats.paired_bootstrap` resamples
  the shared prompts (all images of a prompt together) and gives the diff's CI and a two-sided p-value.
  diff is the mean per-image difference over the shared images; for plain-mean metrics on complete runs it
  equals the difference of the recorded values (category-weighted headlines such as WISE/GenEval differ).
* set-level metrics (FID/KID/FD: kind "fidelity", per-image score NaN): no per-image pairing exists and
  generated features are not stored, so each run's recorded bias-corrected bootstrap-over-images CI is read
  as a normal interval, se = (high − low) / (2·z), and the runs are treated as independent:
  z = diff / sqrt(se_b² + se_c²), two-sided p = 2·(1 − Φ(|z|)), CI = diff ± z_{1−α/2}·sqrt(se_b² + se_c²).
  (Stricter than eyeballing non-overlapping CIs, which corresponds to α ≈ 0.006, and it yields a p that
  can enter the Holm correction with the other metrics.)

Decision: the two-sided p-values of every comparison in the run (all candidates × metrics: one family,
because the gate gives one exit code) are Holm-adjusted, which keeps the family-wise false-alarm rate
≤ α. A bootstrap p cannot fall below 1/(R+1), and Holm multiplies the smallest by m, the number of
comparisons: with m/(R+1) ≥ α no regression could ever be found. So the gate raises R, when needed, to
10·m/α − 1 (the smallest Holm p then lies a tenth below α) and says so in its report.
A pair is a regression (❌) when it is worse in the metric's direction (`higher_is_better`) by more than its
threshold AND its Holm-adjusted p < α. ⚠️ marks a worsening that did not make it: worse and
significant before correction but not after, or significant but within the threshold. ✅ otherwise
(improvements are named). Because a regression needs both p < α and the worse direction, the false-alarm
rate on two runs from one distribution is about α/2 for a single metric.

Thresholds (`--thresholds FILE`, YAML or JSON): a mapping of metric name or glob pattern (matched against
`metric` and `bench/metric`) to the minimum practically relevant change, as an absolute number or a
percentage of the baseline value ("2%"); the mapping may sit under a top-level `thresholds:` key. Exact names
win over patterns, patterns apply in file order; unmatched metrics get 0.

Exit codes: 0 no significant regression; 1 at least one; 2 no comparison possible (protocol/scorer/
weights mismatch, with the field and both values; missing files; no overlapping prompts; bad input; a
crash of the gate itself, whose traceback goes to stderr: never 1, which would read as a regression).
"""
import argparse
import fnmatch
import json
import math
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evals.stats import paired_bootstrap
from pixart.cli import positive_int

PASS, REGRESSION, REFUSED = 0, 1, 2
KEY_FIELDS = ("bench", "metric", "sampler", "steps", "cfg")
# Fields that must agree for two numbers to be comparable (reference_key: fidelity reference statistics;
# parse_fingerprint: T2I-CompBench's frozen spaCy parses, which decide the questions asked).
SAME_FIELDS = ("protocol", "scorer", "weights_fingerprint", "higher_is_better", "reference_key", "parse_fingerprint")
REQUIRED = ("metric", "protocol", "value", "sampler", "steps", "cfg", "higher_is_better")


class GateError(Exception):
    """The gate cannot compare the runs (exit code 2); the message says why and names the files."""


@dataclass
class Run:
    """One metric JSON of one run, with the per-image parquet that belongs to it."""
    path: Path
    data: dict

    @property
    def key(self) -> tuple:
        d = self.data
        return (d["bench"], d["metric"], d["sampler"], int(d["steps"]), float(d["cfg"]))

    @property
    def model(self) -> str:
        return str(self.data.get("model") or self.path.parent.name)

    @property
    def set_level(self) -> bool:
        return self.data.get("kind") == "fidelity" or bool(self.data.get("set_level"))

    @property
    def higher_is_better(self) -> bool:
        return bool(self.data["higher_is_better"])

    @property
    def scores_path(self) -> Path:
        """results/metrics/…/NAME.json → results/scores/…/NAME.parquet (the layout of workflows/rules/score.smk)."""
        if self.data.get("scores"):
            return Path(self.data["scores"])
        parts = list(self.path.parts)
        idx = max((i for i, p in enumerate(parts[:-1]) if p == "metrics"), default=None)
        if idx is None:
            return self.path.with_suffix(".parquet")
        parts[idx] = "scores"
        return Path(*parts).with_suffix(".parquet")


@dataclass
class Comparison:
    candidate: str
    baseline: str
    bench: str
    metric: str
    sampler: str
    steps: int
    cfg: float
    protocol: str
    method: str
    higher_is_better: bool
    baseline_value: float
    candidate_value: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    threshold: float
    n_prompts: int | None = None
    baseline_mean: float | None = None  # per-image means over the shared images (what diff compares)
    candidate_mean: float | None = None
    baseline_n_failed: int | None = None
    candidate_n_failed: int | None = None
    p_holm: float = float("nan")
    verdict: str = ""
    status: str = ""
    notes: list = field(default_factory=list)

    @property
    def worse_by(self) -> float:
        """How much worse the candidate is in the metric's direction (negative: better)."""
        return -self.diff if self.higher_is_better else self.diff

    def to_dict(self) -> dict:
        return {k: _clean(v) for k, v in asdict(self).items()}


# ---------------------------------------------------------------- loading

def load_runs(source) -> dict[tuple, Run]:
    """Metric JSONs of one run: a JSON file or a folder searched recursively, keyed by KEY_FIELDS."""
    source = Path(source)
    if not source.exists():
        raise GateError(f"{source}: no such file or folder")
    if source.is_file():
        files, explicit = [source], True
    else:
        files, explicit = sorted(p for p in source.rglob("*.json") if not p.name.startswith(".")), False
    runs: dict[tuple, Run] = {}
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise GateError(f"{f}: not a readable metric JSON ({err})") from err
        if not isinstance(data, dict) or not ({"metric", "protocol"} <= set(data)):
            # folders may hold other JSONs (scorer settings, refstats notes), but one with a metric JSON's fields
            # is a damaged metric file: skipped, its number would read as "not scored" and the gate could pass
            if explicit or not isinstance(data, dict) or {"metric", "protocol", "value"} & set(data):
                raise GateError(f"{f}: not a metric JSON of evals.score (needs 'metric' and 'protocol'); if it is a "
                                f"damaged one, delete it and rerun its score job")
            continue
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise GateError(f"{f}: metric JSON lacks {', '.join(missing)}")
        if not isinstance(data["higher_is_better"], bool):
            raise GateError(f"{f}: higher_is_better must be true or false, got {data['higher_is_better']!r}")
        data.setdefault("bench", str(data["protocol"]).split("@")[0])
        run = Run(f, data)
        try:
            run.key
        except (TypeError, ValueError) as err:
            raise GateError(f"{f}: steps {data['steps']!r} / cfg {data['cfg']!r} are not numbers ({err})") from err
        if run.key in runs:
            other = runs[run.key]
            raise GateError(f"{source}: two numbers for {_key_text(run.key)}: {other.path} (model "
                            f"{other.model}) and {f} (model {run.model}); point the gate at one run's folder, "
                            f"e.g. results/metrics/MODEL")
        runs[run.key] = run
    if not runs:
        raise GateError(f"{source}: no metric JSONs found")
    return runs


def read_scores(run: Run) -> pd.DataFrame:
    path = run.scores_path
    if not path.exists():
        raise GateError(f"per-image scores of {run.path} not found: expected {path}")
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise GateError(f"{path}: not a readable parquet of per-image scores ({err}); rescore the cell") from err
    missing = {"sample_id", "prompt_id", "score"} - set(frame.columns)
    if missing:
        raise GateError(f"{path}: lacks column(s) {sorted(missing)}")
    if frame["sample_id"].duplicated().any():
        dup = frame.loc[frame["sample_id"].duplicated(), "sample_id"].iloc[0]
        raise GateError(f"{path}: sample_id {dup!r} occurs more than once")
    return frame


def load_thresholds(path) -> dict:
    if path is None:
        return {}
    path = Path(path)
    if not path.exists():
        raise GateError(f"thresholds file {path} not found")
    import yaml

    text = path.read_text()
    try:
        spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise GateError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({err})") from err
    spec = spec or {}
    if isinstance(spec, dict) and isinstance(spec.get("thresholds"), dict):
        spec = spec["thresholds"]
    if not isinstance(spec, dict):
        raise GateError(f"{path}: expected a mapping of metric name or pattern to threshold")
    for name, value in spec.items():
        _parse_threshold(value, 1.0, f"{path}: {name}")
    return {str(k): v for k, v in spec.items()}


def threshold_for(thresholds: dict, bench: str, metric: str, baseline_value: float) -> float:
    names = (metric, f"{bench}/{metric}")
    chosen = next((thresholds[n] for n in reversed(names) if n in thresholds), None)
    if chosen is None:
        chosen = next((v for pattern, v in thresholds.items()
                       if any(fnmatch.fnmatchcase(n, pattern) for n in names)), 0.0)
    return _parse_threshold(chosen, baseline_value, metric)


def _parse_threshold(value, baseline_value: float, what: str) -> float:
    try:
        if isinstance(value, str) and value.strip().endswith("%"):
            number = float(value.strip()[:-1]) / 100 * abs(float(baseline_value))
        else:
            number = float(value)
    except (TypeError, ValueError) as err:
        raise GateError(f"{what}: threshold {value!r} is neither a number nor a percentage") from err
    if not number >= 0:
        raise GateError(f"{what}: threshold must be >= 0, got {value!r}")
    return number


# ---------------------------------------------------------------- statistics

def check_comparable(base: Run, cand: Run) -> list[str]:
    """Reasons the two numbers are not comparable (empty when they are)."""
    problems = []
    for name in SAME_FIELDS:
        if name not in base.data and name not in cand.data:
            continue
        a, b = base.data.get(name), cand.data.get(name)
        if a != b:
            problems.append(f"{_key_text(base.key)}: {name} differs — baseline {a!r} ({base.path}) vs "
                            f"candidate {b!r} ({cand.path})")
    return problems


def compare_per_image(base: pd.DataFrame, cand: pd.DataFrame, *, n_resamples: int, level: float, seed: int,
                      what: str = "") -> dict:
    """Paired bootstrap over the prompts both runs scored: diff = mean(candidate − baseline) per image."""
    joined = base[["sample_id", "prompt_id", "score"]].merge(
        cand[["sample_id", "prompt_id", "score"]], on="sample_id", suffixes=("_b", "_c"))
    clash = joined[joined["prompt_id_b"] != joined["prompt_id_c"]]
    if len(clash):
        row = clash.iloc[0]
        raise GateError(f"{what}: sample {row['sample_id']!r} belongs to prompt {row['prompt_id_b']!r} in the "
                        f"baseline but {row['prompt_id_c']!r} in the candidate: not the same prompt set")
    ok = joined[joined["score_b"].notna() & joined["score_c"].notna()]
    if ok.empty:
        raise GateError(f"{what}: no overlapping scored images (baseline {len(base)} rows, candidate "
                        f"{len(cand)} rows, {len(joined)} shared sample_ids): nothing to pair")
    result = paired_bootstrap(ok["score_b"].to_numpy(float), ok["score_c"].to_numpy(float),
                              groups=ok["prompt_id_b"].to_numpy(), n_resamples=n_resamples, level=level, seed=seed)
    return {"diff": result.diff, "ci_low": result.low, "ci_high": result.high, "p_value": result.p_value,
            "n": result.n, "n_prompts": int(ok["prompt_id_b"].nunique()),
            "baseline_mean": float(ok["score_b"].mean()), "candidate_mean": float(ok["score_c"].mean()),
            "n_unpaired": int(len(base) + len(cand) - 2 * len(ok)),
            "n_baseline_prompts": int(base["prompt_id"].nunique())}


def compare_set_level(base: dict, cand: dict, *, level: float, what: str = "") -> dict:
    """Normal approximation from the two runs' recorded bootstrap CIs (runs treated as independent)."""
    from scipy.stats import norm

    ses = []
    for who, d in (("baseline", base), ("candidate", cand)):
        if d.get("ci_low") is None or d.get("ci_high") is None:
            raise GateError(f"{what}: the {who}'s set-level number has no CI (ci_low/ci_high), so its "
                            f"uncertainty is unknown; rescore it with evals.score, which records one")
        z = norm.ppf(0.5 + float(d.get("level") or 0.95) / 2)
        ses.append(max(0.0, (float(d["ci_high"]) - float(d["ci_low"])) / (2 * z)))
    diff = float(cand["value"]) - float(base["value"])
    se = math.hypot(*ses)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        low = high = diff
    else:
        p = float(2 * norm.sf(abs(diff) / se))
        half = float(norm.ppf(0.5 + level / 2)) * se
        low, high = diff - half, diff + half
    return {"diff": diff, "ci_low": low, "ci_high": high, "p_value": p,
            "n": int(min(base.get("n") or 0, cand.get("n") or 0))}


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given; NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if len(idx) == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def resamples_for(m: int, alpha: float) -> int:
    """Bootstrap resamples R at which Holm over m comparisons can still reject: the smallest bootstrap p,
    1/(R+1), times m lies a tenth below α."""
    return math.ceil(10 * m / alpha - 1e-9) - 1


def decide(comparisons: list[Comparison], alpha: float) -> None:
    """Holm-adjust all p-values together and set each comparison's verdict and status."""
    for c, p_adj in zip(comparisons, holm([c.p_value for c in comparisons])):
        c.p_holm = float(p_adj)
        worse = c.worse_by
        if worse > c.threshold and c.p_holm < alpha:
            c.verdict, c.status = "❌", "regression"
        elif worse > 0 and c.p_value < alpha:
            c.verdict = "⚠️"
            c.status = ("worse, within threshold" if worse <= c.threshold
                        else "worse, not significant after Holm")
        elif -worse > c.threshold and c.p_holm < alpha:
            c.verdict, c.status = "✅", "improved"
        else:
            c.verdict, c.status = "✅", "no significant change"


# ---------------------------------------------------------------- the gate

def run_gate(baseline, candidates, *, thresholds: dict | None = None, alpha: float = 0.05,
             n_resamples: int = 2000, seed: int = 0, only=(), strict: bool = False) -> dict:
    """Compare every candidate with the baseline; returns the report dict (`exit_code`, `comparisons`, …).

    Raises GateError when nothing can be compared (missing files, no overlap); a protocol mismatch is
    returned as exit code 2 with the reasons in `refused`, so the summary can say how the runs differ.
    """
    if not 0 < alpha < 1:
        raise GateError(f"--alpha must lie in (0, 1), got {alpha}")
    thresholds = thresholds or {}
    all_base_runs = load_runs(baseline)
    _check_threshold_names(thresholds, all_base_runs)
    base_runs = _select(all_base_runs, only)
    comparisons, refused, unmatched = [], [], []
    baseline_model = next(iter(base_runs.values())).model
    pairs = []
    for source in candidates:
        cand_runs = _select(load_runs(source), only)
        cand_model = next(iter(cand_runs.values())).model
        for key in sorted(set(base_runs) - set(cand_runs), key=str):
            unmatched.append(f"{cand_model}: no number for {_key_text(key)} (baseline {base_runs[key].path})")
        for key in sorted(set(cand_runs) - set(base_runs), key=str):
            unmatched.append(f"{cand_model}: {_key_text(key)} has no baseline number ({cand_runs[key].path})")
        for key in sorted(set(base_runs) & set(cand_runs), key=str):
            base, cand = base_runs[key], cand_runs[key]
            refused += check_comparable(base, cand)
            pairs.append((cand_model, base, cand))
    if strict and unmatched:
        refused += [f"--strict: {u}" for u in unmatched if "no number for" in u]
    report = {"baseline": baseline_model, "candidates": [str(c) for c in candidates], "alpha": alpha,
              "correction": "holm", "n_resamples": n_resamples, "seed": seed, "unmatched": unmatched}
    if refused:
        return {**report, "exit_code": REFUSED, "refused": refused, "comparisons": [],
                "headline": f"🚫 REFUSED — the runs are not comparable: {refused[0]}"
                            + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else "")}
    if not pairs:
        raise GateError(f"no metric of the baseline ({baseline}) matches the candidate(s) "
                        f"({', '.join(map(str, candidates))}) on {', '.join(KEY_FIELDS)}:\n  " + "\n  ".join(unmatched))
    level = 1 - alpha
    needed = resamples_for(len(pairs), alpha)
    if n_resamples < needed and any(not base.set_level for _, base, _ in pairs):
        report.update(n_resamples=needed, n_resamples_asked=n_resamples)
        n_resamples = needed
    for cand_model, base, cand in pairs:
        comparisons.append(_compare(cand_model, base, cand, thresholds, level, n_resamples, seed))
    decide(comparisons, alpha)
    regressions = [c for c in comparisons if c.status == "regression"]
    report.update(exit_code=REGRESSION if regressions else PASS, refused=[],
                  comparisons=[c.to_dict() for c in comparisons], headline=_headline(comparisons, unmatched))
    return report


def _compare(cand_model, base: Run, cand: Run, thresholds, level, n_resamples, seed) -> Comparison:
    b, c = base.data, cand.data
    what = f"{_key_text(base.key)} ({base.path} vs {cand.path})"
    notes = []
    for run, who in ((base, "baseline"), (cand, "candidate")):
        if run.data.get("value") is not None:
            continue
        if base.set_level:
            raise GateError(f"{run.path}: no value (n={run.data.get('n')}, n_failed={run.data.get('n_failed')}): "
                            f"nothing to compare")
        # a category-weighted headline can be undefined (a category without scores); the images still pair
        notes.append(f"{who} headline undefined" + (f": {run.data['note']}" if run.data.get("note") else ""))
    if base.set_level:
        stats = compare_set_level(b, c, level=level, what=what)
        method = "normal approx. from both runs' bootstrap-over-images CIs"
    else:
        stats = compare_per_image(read_scores(base), read_scores(cand), n_resamples=n_resamples, level=level,
                                  seed=seed, what=what)
        method = f"paired bootstrap over {stats['n_prompts']} shared prompts"
        if stats["n_prompts"] < stats.pop("n_baseline_prompts"):
            notes.append(f"only {stats['n_prompts']} prompts shared")
        unpaired = stats.pop("n_unpaired")
        if unpaired:
            notes.append(f"{unpaired} image rows unpaired or failed, left out")
    for run, who in ((base, "baseline"), (cand, "candidate")):
        if run.data.get("n_failed"):
            notes.append(f"{who}: {run.data['n_failed']} failed image(s)")
    return Comparison(candidate=cand_model, baseline=base.model, bench=b["bench"], metric=b["metric"],
                      sampler=b["sampler"], steps=int(b["steps"]), cfg=float(b["cfg"]), protocol=b["protocol"],
                      method=method, higher_is_better=base.higher_is_better, baseline_value=_float(b["value"]),
                      candidate_value=_float(c["value"]),
                      threshold=threshold_for(thresholds, b["bench"], b["metric"],
                                              stats["baseline_mean"] if b["value"] is None else float(b["value"])),
                      baseline_n_failed=b.get("n_failed"), candidate_n_failed=c.get("n_failed"),
                      notes=notes, **stats)


def _float(x) -> float:
    return float("nan") if x is None else float(x)


def _check_threshold_names(thresholds: dict, runs: dict) -> None:
    """A threshold whose name matches no metric (a typo) left that metric at threshold 0 without a word."""
    names = {n for k in runs for n in (k[1], f"{k[0]}/{k[1]}")}
    unused = [t for t in thresholds if not any(fnmatch.fnmatchcase(n, t) for n in names)]
    if unused:
        raise GateError(f"thresholds {unused} match none of the baseline's metrics "
                        f"{sorted({k[1] for k in runs})} (bench/metric also works); fix the name")


def _select(runs: dict, only) -> dict:
    if not only:
        return runs
    kept = {k: r for k, r in runs.items()
            if any(fnmatch.fnmatchcase(n, pat) for pat in only for n in (k[1], f"{k[0]}/{k[1]}"))}
    if not kept:
        raise GateError(f"--only {' '.join(only)}: matches none of {sorted({k[1] for k in runs})}")
    return kept


def _headline(comparisons, unmatched) -> str:
    bad = [c for c in comparisons if c.status == "regression"]
    warn = [c for c in comparisons if c.verdict == "⚠️"]
    better = [c for c in comparisons if c.status == "improved"]
    extra = []
    if better:
        extra.append(f"{len(better)} improved")
    if warn:
        extra.append(f"{len(warn)} ⚠️")
    if unmatched:
        extra.append(f"{len(unmatched)} not compared")
    tail = f" ({', '.join(extra)})" if extra else ""
    if bad:
        worst = min(bad, key=lambda c: c.p_holm)
        return (f"❌ REGRESSION — {len(bad)} of {len(comparisons)} comparisons regressed{tail}; e.g. "
                f"{worst.candidate} {worst.metric} on {worst.bench}: {_num(worst.diff)} "
                f"[{_num(worst.ci_low)}, {_num(worst.ci_high)}], Holm p: {_p(worst.p_holm)}")
    return f"✅ PASS — no significant regression in {len(comparisons)} comparisons{tail}"


# ---------------------------------------------------------------- output

def markdown(report: dict) -> str:
    lines = [f"## Regression gate: {report['headline'].split(' — ')[0]}", "", f"**{report['headline']}**", ""]
    if report.get("refused"):
        if report.get("error"):
            return "\n".join(lines) + "\n"
        lines += ["The gate compares numbers only on the same protocol, scorer, weights and reference set:", ""]
        lines += [f"- {r}" for r in report["refused"]]
        return "\n".join(lines) + "\n"
    level = round(100 * (1 - report["alpha"]))
    lines += [f"Baseline: `{report['baseline']}`.", "",
              f"| candidate | bench | metric | setting | baseline | candidate | diff [{level}% CI] | p (Holm) "
              f"| threshold | verdict |",
              "|---|---|---|---|---:|---:|---|---:|---:|---|"]
    for c in report["comparisons"]:
        arrow = "↑" if c["higher_is_better"] else "↓"
        note = f"; {'; '.join(c['notes'])}" if c["notes"] else ""
        lines.append(f"| {c['candidate']} | {c['bench']} | {c['metric']} {arrow} | {c['sampler']}-{c['steps']} "
                     f"cfg{c['cfg']:g} | {_num(c['baseline_value'])} | {_num(c['candidate_value'])} | "
                     f"{_num(c['diff'], sign=True)} [{_num(c['ci_low'])}, {_num(c['ci_high'])}] | "
                     f"{_p(c['p_holm'])} ({_p(c['p_value'])}) | {_num(c['threshold'])} | "
                     f"{c['verdict']} {c['status']}{note} |")
    if report["unmatched"]:
        lines += ["", "Not compared:", ""] + [f"- {u}" for u in report["unmatched"]]
    n = len(report["comparisons"])
    lines += ["", f"<sub>diff = candidate − baseline (↑/↓: higher/lower is better). Per-image metrics: paired "
                  f"bootstrap over shared prompts ({_resamples_text(report)}, seed {report['seed']}), "
                  f"diff of per-image means over the shared images; set-level metrics (FID): normal "
                  f"approximation from both runs' bootstrap CIs. p: two-sided, Holm-adjusted across all {n} "
                  f"comparisons (raw p in brackets). ❌ = worse by more than the threshold with Holm p < "
                  f"{report['alpha']:g}; ⚠️ = worse with raw p < {report['alpha']:g} but not a regression."
                  f"</sub>"]
    return "\n".join(lines) + "\n"


def _resamples_text(report: dict) -> str:
    asked = report.get("n_resamples_asked")
    if asked is None:
        return f"{report['n_resamples']} resamples"
    return (f"{report['n_resamples']} resamples, raised from {asked} so that the smallest Holm p, "
            f"{len(report['comparisons'])}/(R+1), can fall below α")


def _num(x, sign=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    text = f"{x:+.4g}" if sign else f"{x:.4g}"
    return text.replace("-", "−")


def _p(p) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


def _key_text(key) -> str:
    bench, metric, sampler, steps, cfg = key
    return f"{metric} on {bench} ({sampler}-{steps}, cfg {cfg:g})"


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def parser():
    p = argparse.ArgumentParser(prog="python -m reports.regress", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, type=Path, help="the baseline's metric JSON or results folder")
    p.add_argument("--candidate", required=True, action="append", type=Path,
                   help="a candidate's metric JSON or results folder (repeat for several)")
    p.add_argument("--thresholds", type=Path, help="YAML/JSON: metric name or glob → minimum relevant change")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level (Holm); default 0.05")
    p.add_argument("--n-resamples", type=positive_int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", action="append", default=[], help="gate only metrics matching this glob (repeatable)")
    p.add_argument("--strict", action="store_true", help="refuse (exit 2) when a candidate lacks a baseline metric")
    p.add_argument("--out", type=Path, help="also write the Markdown summary here")
    p.add_argument("--json", type=Path, help="write the numbers as JSON here")
    return p


def _error_report(message: str) -> dict:
    return {"exit_code": REFUSED, "refused": [message], "comparisons": [], "error": message,
            "headline": f"🚫 ERROR — {message}"}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        report = _gate_or_error(args)
        text = markdown(report)
        sys.stdout.write(text)
        for path, content in ((args.out, text), (args.json, json.dumps(report, indent=1, ensure_ascii=False,
                                                                            default=str) + "\n")):
            if path:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
    except Exception as err:  # noqa: BLE001 - e.g. --out not writable: exit 2, never 1
        traceback.print_exc()
        print(f"regress: the gate's result could not be written ({type(err).__name__}: {err})", file=sys.stderr)
        return REFUSED
    return report["exit_code"]


def _gate_or_error(args) -> dict:
    try:
        thresholds = load_thresholds(args.thresholds)
        return run_gate(args.baseline, args.candidate, thresholds=thresholds, alpha=args.alpha,
                        n_resamples=args.n_resamples, seed=args.seed, only=args.only, strict=args.strict)
    except GateError as err:
        print(f"regress: {err}", file=sys.stderr)
        return _error_report(str(err))
    except Exception as err:  # noqa: BLE001 - a crash must not exit 1, which CI reads as "regression"
        traceback.print_exc()
        return _error_report(f"the gate crashed ({type(err).__name__}: {err}); the traceback is on stderr")


if __name__ == "__main__":
    sys.exit(main())
