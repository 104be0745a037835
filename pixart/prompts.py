"""Prompt sets: read txt/csv/jsonl prompt files, expand to samples with stable ids and per-sample seeds.

`python -m pixart.prompts --source FILE --out results/prompts/BENCH.parquet [--images-per-prompt K]
 [--seed-rule per_image|per_sample] [--seed-base B] [--height H --width W]`

Seed rules (DESIGN §5): `per_image` gives image k of every prompt the seed base + k (T2I-CompBench: 42 + k);
`per_sample` gives sample i (prompt-major order) the seed base + i. A sample's id is
`{prompt_id}_{k:02d}` with prompt_id = `p{line:06d}`, so ids do not move when other settings change.
"""
import argparse
import csv
import io
import json
from pathlib import Path

import pandas as pd

from pixart.cli import clean_errors, positive_int
from pixart.inputfiles import read_parquet_table

SEED_RULES = ("per_image", "per_sample")


class PromptFileError(ValueError):
    pass


DEFAULT_COLUMN = "text"
PROMPT_SUFFIXES = (".txt", "", ".csv", ".tsv", ".jsonl")


def read_prompt_file(path: Path, column: str = DEFAULT_COLUMN) -> list[dict]:
    """Rows with at least `prompt`; extra csv/jsonl fields are kept as metadata."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # spreadsheets save CSV with a byte-order mark
    except FileNotFoundError:
        raise PromptFileError(f"prompt file {path} does not exist") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise PromptFileError(f"{path}: not UTF-8 (line {line}, byte {err.start}); re-encode the file as UTF-8") from None
    # lines end at "\n" only: str.splitlines also splits at \x0b, \x1c-\x1e, \x85, \u2028 …, which would cut a
    # prompt in two and shift every later prompt id and seed
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    suffix = path.suffix.lower()
    if suffix not in PROMPT_SUFFIXES:
        raise PromptFileError(f"{path}: unknown prompt file type {path.suffix!r}; use one of "
                              f"{', '.join(s or '(none)' for s in PROMPT_SUFFIXES)} (.txt: one prompt per line; "
                              f".jsonl: one JSON object per line)")
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(lines, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise PromptFileError(f"{path}:{i}: invalid JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    raise PromptFileError(f"{path}:{i}: a JSON object with a prompt field is expected, "
                                          f"not {type(record).__name__}")
                rows.append(_take_prompt(record, path, i, column))
    elif suffix in (".csv", ".tsv"):
        # a StringIO with newline="" keeps quoted multi-line fields whole, as the csv module requires
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        header = reader.fieldnames or []
        if header and not any(n in header for n in _column_names(column)):  # the header, not line 2, lacks it
            raise PromptFileError(f"{path}: the header has no {' / '.join(repr(n) for n in _column_names(column))} "
                                  f"column (columns: {', '.join(header)}); name the prompt column with "
                                  f"`column:` (benchmarks) or --column")
        rows = []
        for row in reader:
            if None in row:
                raise PromptFileError(f"{path}:{reader.line_num}: {len(row[None])} more fields than the header's "
                                      f"{len(reader.fieldnames)}; quote fields that contain the delimiter")
            rows.append(_take_prompt(row, path, reader.line_num, column))
    else:
        rows = [{"prompt": line.strip()} for line in lines if line.strip()]
    if not rows:
        raise PromptFileError(f"{path}: no prompts (the file is empty)")
    return rows


def _column_names(column: str) -> tuple:
    """The default column falls back to the usual names; a column the user named must be there."""
    return tuple(dict.fromkeys((column, "prompt", "text", "caption"))) if column == DEFAULT_COLUMN else (column,)


def _take_prompt(row: dict, path: Path, line: int, column: str) -> dict:
    names = _column_names(column)
    key = next((k for k in names if k in row), None)
    if key is None or row[key] is None or not str(row[key]).strip():  # None: JSON null or a short CSV row
        raise PromptFileError(f"{path}:{line}: no prompt (expected a non-empty "
                              f"{' / '.join(repr(n) for n in names)} field)")
    meta = {k: v for k, v in row.items() if k != key}
    return {"prompt": str(row[key]).strip(), "metadata": json.dumps(meta, sort_keys=True, default=str)}


def expand_samples(rows: list[dict], images_per_prompt: int = 1, seed_rule: str = "per_sample",
                   seed_base: int = 0, height: int | None = None, width: int | None = None) -> pd.DataFrame:
    if seed_rule not in SEED_RULES:
        raise PromptFileError(f"unknown seed rule {seed_rule!r}; known: {SEED_RULES}")
    if images_per_prompt < 1:
        raise PromptFileError("images_per_prompt must be ≥ 1")
    records = []
    for line, row in enumerate(rows):
        for k in range(images_per_prompt):
            index = line * images_per_prompt + k
            records.append({
                "sample_id": f"p{line:06d}_{k:02d}", "prompt_id": f"p{line:06d}", "image_index": k,
                "prompt": row["prompt"], "seed": seed_base + (k if seed_rule == "per_image" else index),
                "height": height, "width": width, "metadata": row.get("metadata", "{}"),
            })
    frame = pd.DataFrame.from_records(records)
    return frame.astype({"height": "Int64", "width": "Int64"})


SAMPLE_COLUMNS = ("sample_id", "prompt_id", "image_index", "prompt", "seed", "height", "width")


def read_prompt_set(path: Path) -> pd.DataFrame:
    """A prompt-set parquet (this module's or evals.benchmarks' output), checked before a model is loaded: readable,
    with its columns, at least one sample, unique sample ids and a whole-number seed for each."""
    fix = "write it with `python -m pixart.prompts` or `python -m evals.benchmarks`"
    frame = read_parquet_table(path, SAMPLE_COLUMNS, PromptFileError, "prompt set", fix)
    if frame.empty:
        raise PromptFileError(f"prompt set {path} lists no samples: nothing to generate; {fix}")
    repeated = frame["sample_id"][frame["sample_id"].duplicated()].unique()
    if len(repeated):
        raise PromptFileError(f"prompt set {path}: sample ids {list(repeated[:5])} appear more than once (each names "
                              f"one image file); {fix}")
    seeds = pd.to_numeric(frame["seed"], errors="coerce")
    bad = frame["sample_id"][seeds.isna() | (seeds != seeds.round())]
    if len(bad):
        raise PromptFileError(f"prompt set {path}: samples {list(bad[:5])} have no whole-number seed; {fix}")
    return frame


@clean_errors("pixart.prompts")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--column", default=DEFAULT_COLUMN, help="the prompt field of a .csv/.tsv/.jsonl file "
                        "(the default also accepts prompt, caption)")
    parser.add_argument("--images-per-prompt", type=int, default=1)
    parser.add_argument("--seed-rule", choices=SEED_RULES, default="per_sample")
    parser.add_argument("--seed-base", type=int, default=0)
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--limit", type=positive_int, help="keep the first N prompts (smoke runs)")
    args = parser.parse_args(argv)
    rows = read_prompt_file(args.source, args.column)[: args.limit]
    frame = expand_samples(rows, args.images_per_prompt, args.seed_rule, args.seed_base, args.height, args.width)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(args.out, index=False)
    print(f"prompts: {len(rows)} prompts → {len(frame)} samples → {args.out}")


if __name__ == "__main__":
    main()
