"""Checks that metrics move the way they must: the claims a training team gates on, measured and stated.

python -m reports.checks --table results/table.parquet --checks results/checks/settings.json --out results/report

Each check (the `checks:` config section, resolved by the DAG into a JSON of name → spec) yields one row: the
claim, what was measured, and whether it holds. Kinds:
- `checkpoints`: the last checkpoint of a series beats the first on every listed bench/metric (every one the
  series was scored on when none is listed), with non-overlapping confidence intervals, in the metric's own
  direction (`higher_is_better` of the results table: FID lower, scores higher).
- `cfg`: a model's metric rises with every step of the listed cfg values (the low range, where guidance
  still helps; past it CLIP score saturates and FID worsens, Fig. 20).
- `steps_to_loss`: the first listed training run reaches a training loss in fewer steps than each other run.
  The loss is a running mean of the logged losses (log.jsonl) over `window` steps; the target is the highest
  final running mean among the runs (a loss every run reaches) unless `target` is given.
The first two compare numbers at one sampling setting: `sampler`, `steps` and (checkpoints) `cfg` in the
spec pick it; a metric scored at several settings the spec does not tell apart is not evaluated, and the row
lists the settings. A check that cannot be evaluated (a cell not scored, a run not logged, an ambiguous
setting) is a row that says what is missing, never a pass. A spec with an unknown kind or key (a misspelt
`sampler` would compare at another setting), or a missing or wrongly typed value, is refused. Writes
{out}/tables/checks.{md,tex,csv} and {out}/checks.json; prints one line per check and a summary. Exit status 0
(a failed claim is a finding to report, not a crash), 2 with one `error:` line on unreadable or malformed inputs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from pixart.atomic import write_text_atomic
from pixart.cli import clean_errors
from pixart.inputfiles import read_json_object
from reports.inputs import read_results_table
from reports.tabular import Cell, Column, Table, write_table


SETTING = ("sampler", "steps", "cfg")
TABLE_COLUMNS = ("model", "bench", "metric", "cfg", "value", "ci_low", "ci_high")  # what the checks read


class CheckInputError(ValueError):
    """An input the checks need is missing or malformed; the message names it."""


def _ci(row) -> str:
    if pd.isna(row["ci_low"]) or pd.isna(row["ci_high"]):
        return f"{row['value']:.4g} (no CI)"
    return f"{row['value']:.4g} [{row['ci_low']:.4g}, {row['ci_high']:.4g}]"


def _step(model: str) -> int:
    return int(model.rsplit("@", 1)[1])


def _at_setting(rows: pd.DataFrame, spec: dict, keys=SETTING) -> pd.DataFrame:
    """The rows at the spec's sampler/steps/cfg (the ones it names)."""
    for key in keys:
        wanted = spec.get(key)
        if wanted is None or key not in rows:
            continue
        column = rows[key].astype(str) if key == "sampler" else rows[key].astype(float)
        rows = rows[column == (str(wanted) if key == "sampler" else float(wanted))]
    return rows


def _settings(rows: pd.DataFrame) -> list[str]:
    """The distinct sampling settings of the rows, as text ("dpm-solver steps 14 cfg 4.5")."""
    def text(key, value):
        if key == "sampler":
            return str(value)
        try:
            return f"{key} {float(value):g}"
        except (TypeError, ValueError):
            return f"{key} {value}"
    return list(dict.fromkeys(" ".join(text(k, r[k]) for k in SETTING if k in r) for r in rows.to_dict("records")))


def _nothing_at_setting(scored: pd.DataFrame, at_setting: pd.DataFrame, spec: dict, keys=SETTING) -> str | None:
    """When the spec names a setting that none of the scored rows has (`at_setting`: those of `_at_setting`):
    the text saying so, with the settings there are."""
    named = {k: spec[k] for k in keys if spec.get(k) is not None}
    if not named or scored.empty or not at_setting.empty:
        return None
    return (f"nothing scored at {', '.join(f'{k} {v}' for k, v in named.items())} (scored: "
            f"{'; '.join(_settings(scored))}; sampler is the name alone, e.g. dpm-solver, with steps apart)")


def check_checkpoints(frame: pd.DataFrame, spec: dict) -> dict:
    series = spec["series"]
    scored = frame[frame["model"].str.startswith(f"{series}@") & frame["model"].str.rsplit("@").str[-1].str.isdigit()]
    rows = _at_setting(scored, spec)
    wanted = spec.get("metrics") or sorted({f"{b}/{m}" for b, m in zip(rows["bench"], rows["metric"])})
    claim = (f"series {series}: the last checkpoint beats the first on "
             f"{', '.join(wanted) or 'every metric it was scored on'}, CIs apart")
    elsewhere = _nothing_at_setting(scored, rows, spec)
    if elsewhere:
        return {"claim": claim, "measured": elsewhere, "holds": None}
    if rows.empty:
        return {"claim": claim, "measured": f"no checkpoint of series {series} has been scored", "holds": None}
    steps = sorted({_step(m) for m in rows["model"]})
    if len(steps) < 2:
        return {"claim": claim, "measured": f"only step {steps[0]} was scored: nothing to compare", "holds": None}
    first, last = f"{series}@{steps[0]}", f"{series}@{steps[-1]}"
    measured, verdicts = [], []
    for key in wanted:
        bench, _, metric = key.partition("/")
        hits = {model: rows[(rows["model"] == model) & (rows["bench"] == bench) & (rows["metric"] == metric)]
                for model in (first, last)}
        pair = {model: hit.iloc[0] if len(hit) == 1 else None for model, hit in hits.items()}
        settings = _settings(pd.concat(hits.values()))
        if len(settings) > 1:  # several at one step, or the first and the last at different ones
            measured.append(f"{key}: scored at several settings ({', '.join(settings)}); name the one to "
                            f"compare with sampler/steps/cfg in the check")
            verdicts.append(None)
            continue
        if pair[first] is None or pair[last] is None:
            measured.append(f"{key}: not scored for {' and '.join(m for m in pair if pair[m] is None)}")
            verdicts.append(None)
            continue
        a, b = pair[first], pair[last]
        if any(pd.isna(r[k]) for r in (a, b) for k in ("ci_low", "ci_high")):
            measured.append(f"{key}: no CI for step {steps[0] if pd.isna(a['ci_low']) else steps[-1]} (one prompt?)")
            verdicts.append(None)
            continue
        higher = bool(b["higher_is_better"]) if pd.notna(b.get("higher_is_better")) else True
        apart = b["ci_low"] > a["ci_high"] if higher else b["ci_high"] < a["ci_low"]
        verdicts.append(bool(apart))
        measured.append(f"{key} ({'higher' if higher else 'lower'} is better): step {steps[0]} {_ci(a)} → "
                        f"step {steps[-1]} {_ci(b)}")
    holds = None if None in verdicts else all(verdicts)
    return {"claim": claim, "measured": "; ".join(measured), "holds": holds}


def check_cfg(frame: pd.DataFrame, spec: dict) -> dict:
    model, bench, metric, cfgs = spec["model"], spec["bench"], spec["metric"], sorted(map(float, spec["cfg"]))
    claim = f"{model} {bench}/{metric} rises with cfg over {', '.join(f'{c:g}' for c in cfgs)}"
    scored = frame[(frame["model"] == model) & (frame["bench"] == bench) & (frame["metric"] == metric)]
    rows = _at_setting(scored, spec, keys=("sampler", "steps"))
    elsewhere = _nothing_at_setting(scored, rows, spec, keys=("sampler", "steps"))
    if elsewhere:
        return {"claim": claim, "measured": elsewhere, "holds": None}
    rows = rows[rows["cfg"].astype(float).isin(cfgs)]
    repeated = rows[rows["cfg"].astype(float).duplicated(keep=False)]
    if len(repeated):
        return {"claim": claim, "measured": f"scored at several settings per cfg ({', '.join(_settings(repeated))}); "
                                            f"name the one to compare with sampler/steps in the check", "holds": None}
    by_cfg = {float(c): r for c, r in zip(rows["cfg"], rows.to_dict("records"))}
    missing = [c for c in cfgs if c not in by_cfg]
    if missing:
        return {"claim": claim, "measured": f"not scored at cfg {', '.join(f'{c:g}' for c in missing)}", "holds": None}
    values = [by_cfg[c]["value"] for c in cfgs]
    measured = "; ".join(f"cfg {c:g}: {_ci(by_cfg[c])}" for c in cfgs)
    return {"claim": claim, "measured": measured, "holds": all(b > a for a, b in zip(values, values[1:]))}


def read_losses(path: str | Path) -> pd.Series:
    """Logged training losses by step from a run's log.jsonl (a resumed run may log a step twice: last wins)."""
    path = Path(path)
    if not path.is_file():
        raise CheckInputError(f"{path}: no training log (the run has not trained; log.jsonl is written by "
                              f"pixart.train)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckInputError(f"{path}: the training log cannot be read ({err})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CheckInputError(f"{path}, line {number}: not a JSON record ({err.msg}); a training log is one "
                                  f"JSON object per line") from None
        if not isinstance(record, dict) or not {"step", "loss"} <= set(record):
            raise CheckInputError(f"{path}, line {number}: a log record needs step and loss, got {line[:80]!r}")
        step, loss = record["step"], record["loss"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0 or not _NUMBER[0](loss):
            raise CheckInputError(f"{path}, line {number}: step must be a whole number and loss a number, got "
                                  f"{line[:80]!r}")
        records.append(record)
    if not records:
        raise CheckInputError(f"{path}: the training log is empty")
    return pd.DataFrame(records).drop_duplicates("step", keep="last").set_index("step")["loss"].sort_index()


def steps_to(losses: pd.Series, target: float, window: int) -> int | None:
    """First step at which the running mean over `window` steps is at or below `target` (None: never)."""
    return _first_at_or_below(running_mean(losses, window), target)


def _first_at_or_below(smooth: pd.Series, target: float) -> int | None:
    hit = smooth[smooth <= target]
    return int(hit.index[0]) if len(hit) else None


def running_mean(losses: pd.Series, window: int) -> pd.Series:
    spacing = int(pd.Series(losses.index).diff().median()) if len(losses) > 1 else 1
    return losses.rolling(max(1, round(window / max(spacing, 1))), min_periods=1).mean()


def check_steps_to_loss(spec: dict) -> dict:
    runs, window = spec["runs"], int(spec.get("window", 50))
    names = list(runs)
    claim = f"{names[0]} reaches the training loss in fewer steps than {', '.join(names[1:])}"
    smooth = {name: running_mean(read_losses(path), window) for name, path in runs.items()}
    target = spec.get("target")
    if target is None:
        target = max(float(s.iloc[-1]) for s in smooth.values())
    reached = {name: _first_at_or_below(s, float(target)) for name, s in smooth.items()}
    measured = f"loss {float(target):.4f} (running mean over {window} steps) reached at " + ", ".join(
        f"{name}: {'never (' + str(int(smooth[name].index[-1])) + ' steps)' if s is None else f'step {s}'}"
        for name, s in reached.items())
    first = reached[names[0]]
    holds = first is not None and all(s is None or first < s for name, s in reached.items() if name != names[0])
    return {"claim": claim, "measured": measured, "holds": holds}


# kind → (required keys, optional keys), each with its type check and the words that name it in an error
_TEXT = (lambda v: isinstance(v, str) and v != "", "a non-empty string")
_WHOLE = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a whole number ≥ 1")
_NUMBER = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")
_CFGS = (lambda v: isinstance(v, list) and len(v) >= 2 and all(_NUMBER[0](c) for c in v), "a list of ≥ 2 numbers")
_METRICS = (lambda v: isinstance(v, list) and all(isinstance(m, str) and m.count("/") == 1 for m in v),
            "a list of 'bench/metric' strings")
_RUNS = (lambda v: isinstance(v, dict) and len(v) >= 2 and all(_TEXT[0](path) for path in v.values()),
         "an object of ≥ 2 run names → log.jsonl paths")
SPEC_KEYS = {
    "checkpoints": ({"series": _TEXT}, {"metrics": _METRICS, "sampler": _TEXT, "steps": _WHOLE, "cfg": _NUMBER}),
    "cfg": ({"model": _TEXT, "bench": _TEXT, "metric": _TEXT, "cfg": _CFGS}, {"sampler": _TEXT, "steps": _WHOLE}),
    "steps_to_loss": ({"runs": _RUNS}, {"window": _WHOLE, "target": _NUMBER}),
}


def validate(checks, source: str = "checks") -> None:
    """Refuse a checks mapping the checks cannot read as meant: an unknown kind or key (a misspelt `sampler`
    selector would silently compare at another setting), a missing or wrongly typed value. `source` names the
    file in the message."""
    if not isinstance(checks, dict):
        raise CheckInputError(f"{source}: expected an object of check name → spec, got a {type(checks).__name__}")
    for name, spec in checks.items():
        where = f"{source}: check {name!r}"
        if not isinstance(spec, dict):
            raise CheckInputError(f"{where}: expected an object (kind and its keys), got {spec!r}")
        kind = spec.get("kind")
        if kind not in SPEC_KEYS:
            raise CheckInputError(f"{where}: kind {kind!r} is not one of {', '.join(SPEC_KEYS)}")
        required, optional = SPEC_KEYS[kind]
        unknown = sorted(set(spec) - {"kind", *required, *optional})
        if unknown:
            raise CheckInputError(f"{where}: unknown key(s) {unknown} for kind {kind}; the keys are "
                                  f"{', '.join([*required, *optional])}")
        missing = [key for key in required if key not in spec]
        if missing:
            raise CheckInputError(f"{where}: kind {kind} needs {', '.join(missing)}")
        for key, (accepts, words) in {**required, **optional}.items():
            if key in spec and not accepts(spec[key]):
                raise CheckInputError(f"{where}: {key} must be {words}, got {spec[key]!r}")


def read_checks(path: str | Path) -> dict:
    """A checks JSON (name → spec), validated; a missing or malformed file is named."""
    checks = read_json_object(path, CheckInputError, "it is a JSON object of check name → spec")
    validate(checks, str(path))
    return checks


def run_checks(frame: pd.DataFrame, checks: dict) -> dict:
    """name → {kind, claim, measured, holds (True/False/None = could not be evaluated)}."""
    validate(checks)  # its callers may pass specs not read by read_checks; the kinds below rely on it
    if len(frame) == 0:
        frame = pd.DataFrame(columns=["model", "bench", "metric", "cfg", "value", "ci_low", "ci_high",
                                      "higher_is_better"])
    out = {}
    for name, spec in checks.items():
        kind = spec.get("kind")
        if kind == "checkpoints":
            result = check_checkpoints(frame, spec)
        elif kind == "cfg":
            result = check_cfg(frame, spec)
        else:
            try:
                result = check_steps_to_loss(spec)
            except CheckInputError as err:
                result = {"claim": f"{list(spec['runs'])[0]} reaches the training loss sooner", "measured": str(err),
                          "holds": None}
        out[name] = {"kind": kind, **result}
    return out


def verdict(holds) -> str:
    return {True: "yes", False: "NO", None: "not evaluated"}[holds]


def tally(results: dict) -> str:
    """'3 of 4 hold (NO: name)': how many hold, and which did not or could not be evaluated."""
    held = sum(r["holds"] is True for r in results.values())
    others = {verdict(value): [name for name, r in results.items() if r["holds"] is value] for value in (False, None)}
    named = "; ".join(f"{label}: {', '.join(names)}" for label, names in others.items() if names)
    return f"{held} of {len(results)} hold" + (f" ({named})" if named else "")


def checks_table(results: dict) -> Table:
    table = Table("checks", "Do the metrics move the way they must?", "Check", list(results),
                  [Column("claim", "Claim", "info"), Column("measured", "Measured", "info"),
                   Column("holds", "Holds", "info")])
    for name, r in results.items():
        table.cells[(name, "claim")] = Cell(text=r["claim"])
        table.cells[(name, "measured")] = Cell(text=r["measured"])
        table.cells[(name, "holds")] = Cell(text=verdict(r["holds"]))
    return table


def write_checks(frame: pd.DataFrame, checks: dict, out: str | Path) -> tuple[dict, list[Path]]:
    """Results, and the table files {out}/tables/checks.*; the results also go to {out}/checks.json."""
    out = Path(out)
    results = run_checks(frame, checks)
    write_text_atomic(out / "checks.json", json.dumps(results, indent=1))
    return results, write_table(checks_table(results), out / "tables")


@clean_errors("reports.checks")
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, help="results table (parquet)")
    p.add_argument("--checks", required=True, help="JSON: check name → spec (kind checkpoints|cfg|steps_to_loss)")
    p.add_argument("--out", required=True, help="report folder: tables/checks.* and checks.json")
    args = p.parse_args(argv)
    frame = read_results_table(args.table, required=TABLE_COLUMNS, warn=False)
    results, _ = write_checks(frame, read_checks(args.checks), args.out)
    for name, r in results.items():
        print(f"check {name}: {verdict(r['holds'])} — {r['claim']}: {r['measured']}")
    print(f"checks: {tally(results)} → {Path(args.out) / 'tables/checks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
