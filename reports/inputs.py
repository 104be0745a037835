"""Reading and checking the report's input files before anything is written: the results table, the published
values, checkpoint-series folders and training stats. A file that cannot be used raises ReportInputError naming
it and the fix (the CLIs turn it into one `error:` line); reports/tables.py and reports/figures.py then only see
checked data."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from pixart.inputfiles import read_json_object, read_parquet_table
from reports import series, tables

# the sections of paper_values.yaml the builders read
PAPER_SECTIONS = ("table2_coco_fid30k", "table3_t2i_compbench", "wise", "geneval", "ablation")
# columns older tables lack: without them a limited run is labelled as the whole benchmark, a CI as absent
LABELLING_COLUMNS = ("ci_low", "ci_high", "prompt_limit", "n_prompts")


class ReportInputError(ValueError):
    """A report input that is missing or malformed; the message names the file and the fix."""


@dataclass
class SeriesFolder:
    """One results/series/NAME folder, read: its status rows, settings and gate reports by candidate model."""
    name: str
    status: list[dict]
    settings: dict
    gates: dict


def read_results_table(path: str | Path, required=tables.REQUIRED, warn=True) -> pd.DataFrame:
    """The results table of evals.table. A missing, unreadable or column-less file is refused (it gave an empty
    report and exit 0); one without the columns that label its numbers is read, with a warning naming them."""
    path = Path(path)
    frame = read_parquet_table(path, required, ReportInputError, "results table",
                               "it is what `python -m evals.table` writes: (re)build it with that")
    unlabelled = [c for c in LABELLING_COLUMNS if c not in frame]
    if warn and unlabelled:
        print(f"report: warning: {path} lacks {unlabelled} (written by an older evals.table?): a run cut to its "
              f"first N prompts is labelled as the whole benchmark and CIs show as absent; rebuild the table with "
              f"`python -m evals.table`", file=sys.stderr)
    return frame


def read_paper_values(path: str | Path | None) -> dict:
    """The published values (default reports/paper_values.yaml). An empty file is an error, never a silent
    fall-back to the default."""
    path = Path(path) if path is not None else tables.PAPER_VALUES
    fix = (f"give --paper-values a YAML file laid out like {tables.PAPER_VALUES.name} (sections "
           f"{', '.join(PAPER_SECTIONS)})")
    try:
        paper = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ReportInputError(f"paper values {path}: cannot be read ({err.strerror or err}); {fix}") from None
    except yaml.YAMLError as err:
        raise ReportInputError(f"paper values {path}: not valid YAML ({' '.join(str(err).split())}); {fix}") from None
    if not isinstance(paper, dict):
        got = "an empty file" if paper is None else f"a {type(paper).__name__}"
        raise ReportInputError(f"paper values {path}: got {got}; {fix}")
    bad = [s for s in PAPER_SECTIONS if not isinstance(paper.get(s), dict)]
    if bad:
        raise ReportInputError(f"paper values {path}: the section(s) {bad} are missing or not mappings; {fix}")
    return paper


def read_series(folder: str | Path) -> SeriesFolder:
    """A checkpoint series folder: checkpoints.csv (reports.series check), settings.json and gate/*.json."""
    folder = Path(folder)
    fix = "give --series a results/series/NAME folder written by the DAG's series rules"
    if not folder.is_dir():
        raise ReportInputError(f"--series {folder}: not a folder; {fix}")
    status_path, settings_path = folder / "checkpoints.csv", folder / "settings.json"
    settings = read_json_object(settings_path, ReportInputError, fix)
    try:
        status = series.read_status(status_path)
        gates = series.read_gates(sorted((folder / "gate").glob("*.json")))
    except series.SeriesFileError as err:
        raise ReportInputError(f"{err}; {fix}") from None
    except (OSError, ValueError) as err:  # the status table missing, a folder, not UTF-8 text
        raise ReportInputError(f"{status_path}: cannot be read ({err}); {fix}") from None
    return SeriesFolder(folder.name, status, settings, gates)


def read_train_stats(paths: dict) -> tuple[dict, dict]:
    """Training stats by model and where each came from. An absent file is None (training has not run: the
    ablation shows n/a and names the path); a present one must be a JSON object."""
    stats, sources = {}, {}
    for model, path in paths.items():
        path = Path(path)
        present = path.exists()
        stats[model] = (read_json_object(path, ReportInputError, "it is the stats.json pixart.train writes")
                        if present else None)
        sources[model] = str(path) if present else f"{path} not found"
    return stats, sources
