"""Checkpoint series: the checkpoints of one training run, evaluated in step order and gated against a baseline.

A series is a folder, a glob or a list of training checkpoints (original-layout `.pth`/`.pt`, `.safetensors`
in either layout, diffusers folders), each named with its step: `epoch_1_step_2000.pth`, `step_2000/`,
`ckpt-2000.safetensors` (the number after "step", else the last number of the name). The DAG
(workflows/rules/series.smk) evaluates every readable checkpoint as the model `<series>@<step>`; this module
does the rest:

python -m reports.series check --series NAME --checkpoints SPEC [SPEC …] [--weights state_dict_ema] --out status.csv
python -m reports.series gate --baseline results/metrics/A --candidate results/metrics/B --settings settings.json \
    --out gate.md --json gate.json
python -m reports.series summary --series NAME --status status.csv --settings settings.json --out summary.md \
    [GATE.json …]

`discover` runs twice with the same answer: when the DAG is built (which checkpoints become models) and in the
`series_check` job (the status table that the summary and the report show). A missing or unreadable checkpoint
is named there and left out; the others are evaluated and gated as usual. Reading a checkpoint here means its
keys only (safetensors header, memory-mapped torch zip), so building the DAG stays fast for multi-GB files.

`gate` runs `reports.regress` and always succeeds: its exit code (0 pass, 1 regressed, 2 not comparable) is
recorded in the JSON. `summary` fails only with `fail_on_regression` (CI), after writing its table to stdout.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from pixart.cli import clean_errors
from pixart.inputfiles import read_json_object

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
STATUS_COLUMNS = ("series", "step", "model", "path", "status", "reason")
VERDICTS = {0: "pass", 1: "REGRESSED", 2: "not comparable"}
STEP_AFTER_WORD = re.compile(r"step[_-]?(\d+)", re.IGNORECASE)
LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class Checkpoint:
    path: str
    step: int | None
    model: str | None     # "<series>@<step>" when it is evaluated
    status: str           # ok | missing | unreadable | skipped
    reason: str = ""


# ------------------------------------------------------------------------------------------------ discovery
def parse_step(name: str) -> int | None:
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in CHECKPOINT_SUFFIXES else name
    match = STEP_AFTER_WORD.search(stem) or LAST_NUMBER.search(stem)
    return int(match[1]) if match else None


def is_checkpoint_folder(path: Path) -> bool:
    """A diffusers pipeline or transformer folder (one checkpoint), as opposed to a folder of checkpoints."""
    return any((path / name).exists() for name in ("model_index.json", "config.json", "transformer"))


def candidate_paths(spec) -> list[Path]:
    """Paths a spec names: a folder's checkpoint files and subfolders, a glob's matches, or a path as given
    (which may be missing: it is then reported as such)."""
    paths = []
    for entry in [spec] if isinstance(spec, str) else list(spec):
        path = Path(entry)
        if glob.has_magic(entry):
            paths += [Path(p) for p in sorted(glob.glob(entry))]
        elif path.is_dir() and not is_checkpoint_folder(path):
            paths += sorted(p for p in path.iterdir() if p.is_dir() or p.suffix in CHECKPOINT_SUFFIXES)
        else:
            paths.append(path)
    return paths


def checkpoint_keys(path: Path, weights: str = "state_dict") -> list[str]:
    """The tensor names of a checkpoint, reading as little as possible. `weights` picks what
    pixart.checkpoints.load_transformer will load (a folder's transformer_ema/ for state_dict_ema; a file with one
    set of weights only for state_dict), so a checkpoint that cannot be loaded that way is named here."""
    from pixart.checkpoints import WEIGHT_SUBFOLDERS, CheckpointError, check_one_set_of_weights

    if path.is_dir():
        if weights not in WEIGHT_SUBFOLDERS:
            raise CheckpointError(f"{path}: `weights: {weights}` is not one of {sorted(WEIGHT_SUBFOLDERS)}")
        sub = WEIGHT_SUBFOLDERS[weights]
        if weights == "state_dict_ema" and not (path / sub).is_dir():
            raise CheckpointError(f"{path}: no {sub}/ subfolder for `weights: state_dict_ema`; "
                                  f"use `weights: state_dict`")
        root = path / sub if (path / sub).is_dir() else path
        files = sorted(root.glob("diffusion_pytorch_model*.safetensors")) or sorted(root.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{path}: no transformer weights ({sub}/diffusion_pytorch_model*.safetensors)")
        return [k for f in files for k in _safetensors_keys(f)]
    if path.suffix == ".safetensors":
        check_one_set_of_weights(path, weights, "a safetensors file")
        return _safetensors_keys(path)
    return list(_pth_state(path, weights))


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def _pth_state(path: Path, weights: str) -> dict:
    """The state dict of a `.pth`, memory-mapped (torch zip format), else loaded as pixart.checkpoints does."""
    import torch

    from pixart.checkpoints import read_pth, select_weights

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return read_pth(path, weights)  # legacy (non-zip) serialisation cannot be memory-mapped
    # the loader's own rule (a bare state dict only for `weights: state_dict`), so the status table agrees with it
    return select_weights(path, blob, weights)


def probe(path: Path, weights: str = "state_dict") -> tuple[str, str]:
    """(status, reason): ok when the checkpoint's keys can be read and are a PixArt transformer's."""
    from pixart.keymap import looks_original

    if not path.exists():
        return "missing", "no such file or folder"
    try:
        looks_original(checkpoint_keys(path, weights))
    except Exception as err:  # noqa: BLE001 - any failure to read means: not evaluable, named in the summary
        first = (str(err).strip().splitlines() or [""])[0].split(". ")[0]  # torch appends paragraphs of advice
        return "unreadable", f"{type(err).__name__}: {first[:200]}"
    return "ok", ""


def discover(series: str, spec, weights: str = "state_dict") -> list[Checkpoint]:
    """Every checkpoint a series names, in step order, each with its status; only `ok` ones get a model."""
    found, steps = [], {}
    for path in candidate_paths(spec):
        step = parse_step(path.name)
        if step is None:
            found.append(Checkpoint(str(path), None, None, "skipped",
                                    f"no step number in the name {path.name!r} (name it like step_2000.pth)"))
            continue
        status, reason = probe(path, weights)
        if status == "ok" and step in steps:
            status, reason = "skipped", f"step {step} is already {steps[step]}"
        elif status == "ok":
            steps[step] = str(path)
        found.append(Checkpoint(str(path), step, f"{series}@{step}" if status == "ok" else None, status, reason))
    return sorted(found, key=lambda c: (c.step is None, c.step or 0, c.path))


# ------------------------------------------------------------------------------------------------ files
def write_status(series: str, checkpoints: list[Checkpoint], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, STATUS_COLUMNS)
        writer.writeheader()
        for c in checkpoints:
            writer.writerow({"series": series, **{k: ("" if v is None else v) for k, v in asdict(c).items()}})


class SeriesFileError(ValueError):
    """A series file (status table) that cannot be read as one; the message names the file."""


def read_status(path: Path) -> list[dict]:
    """The status table `check` writes; a file without its columns or with a step that is not a whole number is
    refused, naming the file."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in STATUS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SeriesFileError(f"{path}: lacks the columns {missing} of a series status table")
        rows = list(reader)
    for line, row in enumerate(rows, start=2):
        try:
            row["step"] = int(row["step"]) if row["step"] else None
        except ValueError:
            raise SeriesFileError(f"{path}, line {line}: step {row['step']!r} is not a whole number") from None
    return rows


def read_gates(paths) -> dict:
    """Gate reports (reports.regress JSON + candidate) by candidate model; a file that is not one is refused,
    naming it."""
    gates = {}
    for path in paths:
        report = read_json_object(path, SeriesFileError, "it is a gate report of `reports.series gate`")
        if not isinstance(report.get("candidate_model"), str):
            raise SeriesFileError(f"{path}: no candidate_model: not a gate report of `reports.series gate`")
        gates[report["candidate_model"]] = report
    return gates


# ------------------------------------------------------------------------------------------------ commands
def cmd_check(args) -> int:
    checkpoints = discover(args.series, args.checkpoints, args.weights)
    write_status(args.series, checkpoints, args.out)
    for c in checkpoints:
        print(f"series {args.series}: {c.status:10s} {c.path}" + (f" ({c.reason})" if c.reason else ""))
    return 0


def cmd_gate(args) -> int:
    from reports import regress

    settings = json.loads(args.settings.read_text())
    code = regress.main(["--baseline", str(args.baseline), "--candidate", str(args.candidate),
                         "--thresholds", str(args.settings), "--alpha", str(settings["alpha"]),
                         "--n-resamples", str(settings["n_resamples"]), "--out", str(args.out),
                         "--json", str(args.json)])
    report = json.loads(args.json.read_text())
    report.update(candidate_model=args.candidate.name, baseline_model=args.baseline.name,
                  verdict=VERDICTS.get(code, f"exit {code}"))
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str) + "\n")
    print(f"gate: {args.candidate.name} vs {args.baseline.name}: exit {code} ({report['verdict']}), recorded "
          f"in {args.json}")
    return 0


def failures(status: list[dict], gates: dict) -> list[str]:
    """What makes a CI run of the series fail: unreadable/missing checkpoints, regressions, refusals."""
    out = [f"{r['path']}: {r['status']} ({r['reason']})" for r in status if r["status"] in ("missing", "unreadable")]
    out += [f"{model}: {g['verdict']}" for model, g in sorted(gates.items()) if g.get("exit_code")]
    return out


def cmd_summary(args) -> int:
    from reports import tables, tabular

    settings = json.loads(args.settings.read_text())
    status, gates = read_status(args.status), read_gates(args.gates)
    table = tables.series_table(args.series, status, gates, settings)
    text = tabular.to_markdown(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    sys.stdout.write(text)
    bad = failures(status, gates)
    if settings.get("fail_on_regression") and bad:
        print(f"series {args.series}: failing (fail_on_regression): " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reports.series", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="status table of a series' checkpoints")
    check.add_argument("--series", required=True)
    check.add_argument("--checkpoints", nargs="+", required=True, help="folder, glob or paths")
    check.add_argument("--weights", default="state_dict", help="entry of an original .pth (state_dict_ema)")
    check.add_argument("--out", type=Path, required=True)
    check.set_defaults(run=cmd_check)
    gate = sub.add_parser("gate", help="reports.regress of one checkpoint against the baseline, exit code recorded")
    gate.add_argument("--baseline", type=Path, required=True, help="results/metrics/BASELINE_MODEL")
    gate.add_argument("--candidate", type=Path, required=True, help="results/metrics/CANDIDATE_MODEL")
    gate.add_argument("--settings", type=Path, required=True, help="series settings JSON (alpha, thresholds …)")
    gate.add_argument("--out", type=Path, required=True, help="Markdown summary of this candidate")
    gate.add_argument("--json", type=Path, required=True)
    gate.set_defaults(run=cmd_gate)
    summary = sub.add_parser("summary", help="the series' table: status, gate verdict and metrics per step")
    summary.add_argument("--series", required=True)
    summary.add_argument("--status", type=Path, required=True)
    summary.add_argument("--settings", type=Path, required=True)
    summary.add_argument("--out", type=Path, required=True)
    summary.add_argument("gates", nargs="*", type=Path, help="gate JSONs")
    summary.set_defaults(run=cmd_summary)
    return p


@clean_errors("reports.series")
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
