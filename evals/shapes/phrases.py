"""Where a compositional score near 0 comes from, per asked object phrase of a shapes-world sample cell.

For every object phrase of a prompt ("a small red striped circle": a run of world words ending in a shape), the
exact scene parser says whether the image holds an object of each named attribute on its own (the colour, the
shape, …) and one object with all of them (what the binding rule asks). Beside each rate: the same images
scored against the prompts rotated by one (each image against the next distinct prompt of the cell), i.e. what
an image that ignores its prompt gets. A model that draws the asked colours but not the asked shapes, or both but on different objects,
shows it here while its binding score reads 0.

    python -m evals.shapes.phrases CELL [CELL ...]   (a sample cell: manifest.parquet and its images)
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

import pandas as pd

from evals.score import open_images
from evals.shapes import oracle

ATTRIBUTES = ("colour", "shape", "texture", "size")
ALL = "all"  # one object with every attribute the phrase names


def object_phrases(prompt: str) -> list[str]:
    """The object phrases of a prompt: maximal runs of world words that end in a shape."""
    phrases, run = [], []
    for word in prompt.lower().replace(",", " ").split():
        if word not in oracle.VOCABULARY:
            run = []
            continue
        run.append(word)
        if oracle.VOCABULARY[word][0] == "shape":
            phrases.append(" ".join(run))
            run = []
    return phrases


def phrase_hits(objects: Sequence[oracle.ParsedObject], phrase: str) -> dict[str, bool]:
    """For each attribute the phrase names: does some object have it? And ALL: does one object have them all?"""
    named = oracle.question_attributes(phrase)
    hits = {a: any(o.attribute(a) in values for o in objects) for a, values in named.items()}
    return {**hits, ALL: oracle.answer(objects, phrase) == 1.0}


def presence_rates(parses: Sequence[Sequence[oracle.ParsedObject]], prompts: Sequence[str]) -> dict[str, float]:
    """Share of phrases with each hit (over the phrases that name that attribute), and `phrases`, their count."""
    hits, named = Counter(), Counter()
    for objects, prompt in zip(parses, prompts, strict=True):
        for phrase in object_phrases(prompt):
            for key, hit in phrase_hits(objects, phrase).items():
                named[key] += 1
                hits[key] += hit
    rates = {key: hits[key] / named[key] for key in (*ATTRIBUTES, ALL) if named[key]}
    return {"phrases": named[ALL], **rates}


def read_cell(cell: Path) -> tuple[list[str], list[list[oracle.ParsedObject]]]:
    """The prompts and parsed images of a sample cell."""
    manifest = cell / "manifest.parquet"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: not a sample cell (no manifest.parquet); pass a folder "
                                f"results/samples/<model>/<bench>/<sampler>/<cfg>")
    table = pd.read_parquet(manifest, columns=["prompt", "file"])
    images, errors = open_images(cell, table["file"])
    unreadable = [error for error in errors if error]
    if unreadable:
        raise ValueError(f"{cell}: {len(unreadable)} unreadable image(s), e.g. {unreadable[0]}; regenerate the cell")
    return list(table["prompt"]), [oracle.parse_scene(image) for image in images]


def cell_report(cell: Path) -> dict:
    """Rates for the cell's own prompts and for the prompts rotated by one (the baseline; None for a cell of one
    prompt, which would be rotated onto itself)."""
    prompts, parses = read_cell(cell)
    distinct = list(dict.fromkeys(prompts))  # rotate over prompts, not images: a prompt's images are adjacent
    following = dict(zip(distinct, distinct[1:] + distinct[:1]))
    rotated = [following[p] for p in prompts]
    return {"cell": str(cell), "images": len(prompts), "objects": sum(map(len, parses)),
            "named_objects": sum(o.shape is not None for objects in parses for o in objects),
            "asked": presence_rates(parses, prompts),
            "baseline": presence_rates(parses, rotated) if len(distinct) > 1 else None}


def format_report(report: dict) -> str:
    asked, baseline = report["asked"], report["baseline"]
    rates = ", ".join(f"{key} {asked[key]:.2f} ({'n/a' if baseline is None else f'{baseline[key]:.2f}'})"
                      for key in (*ATTRIBUTES, ALL) if key in asked)
    return (f"{report['cell']}: {asked['phrases']} phrases in {report['images']} images; present: {rates} "
            f"(rotated prompts in brackets); {report['objects']} objects parsed, {report['named_objects']} "
            f"with a world shape")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evals.shapes.phrases", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cells", nargs="+", type=Path, help="sample cells (folders with manifest.parquet)")
    args = parser.parse_args(argv)
    try:
        for cell in args.cells:
            print(format_report(cell_report(cell)))
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"python -m evals.shapes.phrases: {err}")


if __name__ == "__main__":
    main()
