"""GenEval's six tasks on the shapes world: GenEval's prompt templates and metadata with the world's shapes as
classes, one drawn scene behind every prompt (its render is the ideal image).

Templates and metadata are GenEval's (evaluation_metadata.jsonl):
  single_object  "a photo of a circle"                          include [{circle, 1}]
  two_object     "a photo of a circle and a square"             include [{circle, 1}, {square, 1}]
  counting       "a photo of three circles"                     include [{circle, 3}], exclude [{circle, 4}]
  colors         "a photo of a red circle"                      include [{circle, 1, red}]
  position       "a photo of a circle right of a square"        include [{square, 1}, {circle, 1, right of 0}]
  color_attr     "a photo of a red circle and a blue square"    include [{circle, 1, red}, {square, 1, blue}]
The world's six colours are all in GenEval's palette. Scenes come from the world's own drawing (single, two-object
and spatial scenes; counting: 2-4 small objects of one shape, any colours), one deterministic stream per tag,
`random.Random(f"shapes-geneval:{seed}:{tag}")`; none of them enters the train mixture, so the trained weights do
not depend on this module. color_attr keeps only test-split compositions, as the world's T2I-CompBench prompt
sets do (two_object and position prompts name no colour, and every shape pair occurs in training). A position scene is kept only when GenEval's own rule
(`evals.metrics.geneval.relative_position`) gives exactly the named relation on its boxes.

Prompts per tag are distinct; a tag with fewer distinct prompts than asked for (single_object has 4) gets all of
them, in stream order.
"""
from __future__ import annotations

import random
from pathlib import Path

from evals.metrics import geneval as ge
from evals.shapes import world
from pixart.atomic import write_text_atomic

NUMBERS = {2: "two", 3: "three", 4: "four"}
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
RELATIONS = {"on the left of": "left of", "on the right of": "right of", "on the top of": "above",
             "on the bottom of": "below"}  # world relation -> GenEval's; "next to" has none
COUNTING_SIZE = "small"  # four small boxes fit with the world's gaps
EXHAUSTED_AFTER = 5000  # draws without a new prompt: the tag has no more


def _phrase(obj: world.SceneObject, with_colour: bool = False) -> str:
    words = f"{obj.colour} {obj.shape}" if with_colour else obj.shape
    return f"{world.article(words)} {words}"


def _draw_counting(rng: random.Random) -> world.Scene:
    while True:
        n, shape = rng.choice(sorted(NUMBERS)), rng.choice(world.SHAPES)
        boxes = world.place_free(rng, [world.SIZES[COUNTING_SIZE]] * n)
        if boxes is not None:
            objects = tuple(world.SceneObject(shape, rng.choice(sorted(world.COLOURS)), COUNTING_SIZE,
                                              world.DEFAULT_TEXTURE, box) for box in boxes)
            return world.Scene("multi", objects)


def _draw(rng: random.Random, tag: str) -> world.Scene:
    if tag == "counting":
        return _draw_counting(rng)
    category = {"single_object": "single", "colors": "single", "position": "spatial"}.get(tag, "color")
    return world.draw_scene(rng, category)


def _holds_at_every_size(first: world.SceneObject, second: world.SceneObject, relation: str) -> bool:
    """GenEval's rule names exactly `relation` on the drawn pixel boxes at 32-256 px (rounding moves boxes)."""
    return all(ge.relative_position(world.pixel_box(first, size), world.pixel_box(second, size)) == {relation}
               for size in (32, 64, 128, 256))


def prompt_record(tag: str, scene: world.Scene, seed: int) -> dict | None:
    """GenEval's line {"tag", "include"[, "exclude"], "prompt"} for a scene drawn for `tag`; None when the scene
    cannot be one of the tag's prompts (a train-split composition, "next to", a relation GenEval reads otherwise)."""
    objs = scene.objects
    if tag == "single_object":
        return {"tag": tag, "include": [{"class": objs[0].shape, "count": 1}], "prompt": f"a photo of {_phrase(objs[0])}"}
    if tag == "colors":
        return {"tag": tag, "include": [{"class": objs[0].shape, "count": 1, "color": objs[0].colour}],
                "prompt": f"a photo of {_phrase(objs[0], True)}"}
    if tag == "counting":
        n, shape = len(objs), objs[0].shape
        return {"tag": tag, "include": [{"class": shape, "count": n}], "exclude": [{"class": shape, "count": n + 1}],
                "prompt": f"a photo of {NUMBERS[n]} {PLURALS[shape]}"}
    first, second = objs
    if tag == "two_object":
        return {"tag": tag, "include": [{"class": o.shape, "count": 1} for o in objs],
                "prompt": f"a photo of {_phrase(first)} and {_phrase(second)}"}
    if tag == "color_attr":
        if world.split_of(scene, seed) != "test":
            return None
        return {"tag": tag, "include": [{"class": o.shape, "count": 1, "color": o.colour} for o in objs],
                "prompt": f"a photo of {_phrase(first, True)} and {_phrase(second, True)}"}
    relation = RELATIONS.get(scene.relation)
    if relation is None or not _holds_at_every_size(first, second, relation):
        return None
    return {"tag": tag, "include": [{"class": second.shape, "count": 1},
                                    {"class": first.shape, "count": 1, "position": [relation, 0]}],
            "prompt": f"a photo of {_phrase(first)} {relation} {_phrase(second)}"}


def prompt_set(seed: int, tag: str, n: int) -> list[tuple[dict, world.Scene]]:
    """Up to `n` distinct prompts of `tag` with their scenes (all of them when the tag has fewer)."""
    if tag not in ge.TAGS:
        raise ValueError(f"unknown GenEval tag {tag!r}; known: {ge.TAGS}")
    rng = random.Random(f"shapes-geneval:{seed}:{tag}")
    found: dict[str, tuple[dict, world.Scene]] = {}
    misses = 0
    while len(found) < n and misses < EXHAUSTED_AFTER:
        scene = _draw(rng, tag)
        record = prompt_record(tag, scene, seed)
        if record is None or record["prompt"] in found:
            misses += 1
            continue
        found[record["prompt"]], misses = (record, scene), 0
    return list(found.values())


def write_prompts(out: Path, seed: int, n_per_tag: int) -> tuple[Path, Path]:
    """geneval.jsonl (GenEval's evaluation_metadata format, tags in GenEval's order) and geneval_scenes.jsonl
    (prompt, scene: the ideal image of each line). Returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = [pair for tag in ge.TAGS for pair in prompt_set(seed, tag, n_per_tag)]
    prompts, scenes = out / "geneval.jsonl", out / "geneval_scenes.jsonl"
    write_text_atomic(prompts, world.jsonl(record for record, _ in pairs))
    write_text_atomic(scenes, world.jsonl({"prompt": r["prompt"], "scene": s.to_json()} for r, s in pairs))
    return prompts, scenes
