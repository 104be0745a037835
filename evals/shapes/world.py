"""The shapes world: procedural scenes of coloured shapes, their captions, splits, frozen parses and writers.

A scene holds 1-3 non-overlapping objects (shape, colour, size, texture, box) on a plain light background,
and for two-object spatial scenes one relation. Everything derives from a seed: scene i of a split is drawn
from `random.Random(f"shapes:{seed}:{split}:{i}")` (string seeds are hashed with sha512, so runs and
machines agree), so any prefix of a stream is reproducible on its own.

Captions are the T2I-CompBench templates ("a red circle and a blue square", "a red circle on the left of a
blue square") and describe everything drawn: colour and shape always; size and texture whenever they differ
from the unspoken defaults `medium` and `plain`. Word order: article, size, colour, texture, shape
("a large red striped circle").

Geometry lives in [0, 1] image units (x right, y down); `pixel_box` rounds it to pixels at render time.
Spatial relations hold for T2I-CompBench's 2D rule on box centres (`evals.metrics.compbench.
spatial_2d_position_score`) with a margin: "on the left of" has the second centre to the right by more than
the vertical offset plus RELATION_MARGIN; "next to" puts the objects side by side (small gap, centres level).
Rendering is aliased (PIL without antialiasing), so a rendered image holds only palette, ink and background
colours; the oracle still tolerates blended edges (the detector frame is a bilinear resize).

Splits (like T2I-CompBench's "unseen" lists): a scene's composition key (its noun phrases, ordered by the
relation, so "X on the right of Y" = "Y on the left of X") is hashed with the seed; TEST_PERCENT % of the
keys are test-only, the rest train-only. Single objects are not compositional and occur in both splits.
Hence no test prompt of a compositional category is ever a train caption; the same pair of noun phrases may
still occur in train under another template or relation (a composition key includes it), so the held-out
prompts test new compositions of seen bindings rather than unseen bindings.

Class label (class-conditional pretraining, stage 1): shape x colour of the largest object (by size class,
the first of equals), `SHAPES.index(shape) * len(COLOURS) + colour index`, NUM_CLASSES = 24.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

from evals.metrics import compbench as cb
from pixart.atomic import write_text_atomic

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
           "purple": (140, 60, 180), "orange": (240, 140, 30)}
BACKGROUND = (240, 240, 240)
INK = (30, 30, 30)  # stripes and dots: dark, outside the palette, so a textured object stays one component
SIZES = {"small": 0.24, "medium": 0.32, "large": 0.42}  # box side in image units
TEXTURES = ("plain", "striped", "dotted")
DEFAULT_SIZE, DEFAULT_TEXTURE = "medium", "plain"  # never spoken in a caption
RELATIONS = ("on the left of", "on the right of", "on the top of", "on the bottom of", "next to")
# The 3-in-1 complex rule only finds the object pair around "on the left/right" and "next to" (its
# "on top of" has no geometry branch upstream), so complex scenes use the horizontal relations.
COMPLEX_RELATIONS = ("on the left of", "on the right of", "next to")

CATEGORIES = ("single", "color", "shape", "texture", "spatial", "complex", "multi")
PROMPT_CATEGORIES = ("color", "shape", "texture", "spatial", "complex")  # the T2I-CompBench-style prompt sets
MIXTURE = {"single": 0.2, "color": 0.14, "shape": 0.14, "texture": 0.14, "spatial": 0.14, "complex": 0.12,
           "multi": 0.12}  # category weights of the draws; the test stream redraws compositional scenes until
                           # they land in the test split, so about half of it is single objects
NUM_CLASSES = len(SHAPES) * len(COLOURS)  # class-conditional label: shape x colour of the largest object

BORDER = 0.03  # free margin at the image edge
GAP = 0.08  # least free space between two boxes (>= 2 px at 32 px after rounding)
RELATION_MARGIN = 0.1  # |along| - |across| of the centre offset, beyond what the 2D rule needs
NEXT_TO_MAX_GAP = 0.14
NEXT_TO_MAX_OFFSET = 0.06  # centres level within this
TEST_PERCENT = 20  # share of compositions held out for the test split
PLACEMENT_TRIES = 200
EXHAUSTED_AFTER = 5000  # draws without a new test caption: the category has no more
DEFAULT_SIZE_PX = 64
MIN_SIZE_PX = 20  # below 19 px a small cross (4 px) cannot be told from a circle (tests/test_shapes_oracle.py)
PARSE_SUFFIX = f".v{cb.PARSE_VERSION}.jsonl"
NEW_OBJECTS = cb.PARSE_DIR.parent / "t2i_compbench" / "new_objects.txt"


# --------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------


def article(word: str) -> str:
    """The indefinite article before `word` in this world's vocabulary (no silent h or "uni…" words)."""
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    texture: str
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 in image units

    def words(self) -> list[tuple[str, str]]:
        """(word, POS) of the noun phrase, article first."""
        adjectives = [w for w in (self.size if self.size != DEFAULT_SIZE else None, self.colour,
                                  self.texture if self.texture != DEFAULT_TEXTURE else None) if w]
        return [(article(adjectives[0]), "DET"), *((w, "ADJ") for w in adjectives), (self.shape, "NOUN")]

    def phrase(self) -> str:
        return " ".join(w for w, _ in self.words())

    @property
    def centre(self) -> tuple[float, float]:
        return (self.bbox[0] + self.bbox[2]) / 2, (self.bbox[1] + self.bbox[3]) / 2


@dataclass(frozen=True)
class Scene:
    category: str
    objects: tuple[SceneObject, ...]
    relation: str | None = None  # objects[0] <relation> objects[1]

    @property
    def caption(self) -> str:
        tokens, _ = caption_tokens(self)
        return cb.span_text(tokens, 0, len(tokens))

    @property
    def label(self) -> int:
        """shape x colour of the largest object (the first of equals): the class of class-conditional
        pretraining, in [0, NUM_CLASSES)."""
        largest = max(self.objects, key=lambda o: SIZES[o.size])
        return SHAPES.index(largest.shape) * len(COLOURS) + list(COLOURS).index(largest.colour)

    def to_json(self) -> dict:
        return {"category": self.category, "relation": self.relation,
                "objects": [{"shape": o.shape, "colour": o.colour, "size": o.size, "texture": o.texture,
                             "bbox": list(o.bbox)} for o in self.objects]}

    @classmethod
    def from_json(cls, record: dict | str) -> Scene:
        record = json.loads(record) if isinstance(record, str) else record
        try:
            objects = tuple(SceneObject(o["shape"], o["colour"], o["size"], o["texture"], tuple(o["bbox"]))
                            for o in record["objects"])
            scene = cls(record["category"], objects, record.get("relation"))
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a shapes scene record ({err!r}): {str(record)[:200]}") from None
        scene.validate()
        return scene

    def validate(self) -> None:
        for o in self.objects:
            for value, known in ((o.shape, SHAPES), (o.colour, COLOURS), (o.size, SIZES), (o.texture, TEXTURES)):
                if value not in known:
                    raise ValueError(f"scene object {o}: {value!r} is not one of {list(known)}")
            box = o.bbox
            if (len(box) != 4 or not all(isinstance(v, (int, float)) for v in box)
                    or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1)):
                raise ValueError(f"scene object {o.phrase()}: bbox {list(box)} is not [x0, y0, x1, y1] with "
                                 f"0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (image units)")
        if self.category not in CATEGORIES:
            raise ValueError(f"scene category {self.category!r} is not one of {CATEGORIES}")
        if not self.objects:
            raise ValueError("a scene needs at least one object")
        if self.relation is not None and (self.relation not in RELATIONS or len(self.objects) != 2):
            raise ValueError(f"relation {self.relation!r} needs two objects and one of {RELATIONS}")
        if (self.relation is None) == (self.category in ("spatial", "complex")):
            raise ValueError(f"scene category {self.category!r} {'needs' if self.relation is None else 'has no'} "
                             f"relation (spatial and complex scenes have one, the others none); got {self.relation!r}")


def caption_tokens(scene: Scene) -> tuple[list[cb.Token], list[str]]:
    """The caption as spaCy-style tokens (text, POS, trailing space) and its noun chunks, as spaCy's
    en_core_web_sm parses these templates ("the left" of "on the left of" is a chunk, "next" an ADV)."""
    words: list[tuple[str, str]] = []
    chunks: list[str] = []

    def add_phrase(obj: SceneObject) -> None:
        words.extend(obj.words())
        chunks.append(obj.phrase())

    objects = scene.objects
    add_phrase(objects[0])
    if scene.relation is not None:
        if scene.relation == "next to":
            words.extend([("next", "ADV"), ("to", "ADP")])
        else:
            side = scene.relation.split()[2]
            words.extend([("on", "ADP"), ("the", "DET"), (side, "NOUN"), ("of", "ADP")])
            chunks.append(f"the {side}")
        add_phrase(objects[1])
    else:
        for i, obj in enumerate(objects[1:], 1):
            if i < len(objects) - 1:
                words.append((",", "PUNCT"))
            else:
                words.append(("and", "CCONJ"))
            add_phrase(obj)
    tokens = []
    for i, (text, pos) in enumerate(words):
        last = i == len(words) - 1
        tokens.append(cb.Token(text, pos, "" if last or words[i + 1][0] == "," else " "))
    return tokens, chunks


# --------------------------------------------------------------------------------------------------
# Drawing scenes
# --------------------------------------------------------------------------------------------------


def _draw_attributes(rng: random.Random, category: str) -> list[dict]:
    """Attributes of the objects of one scene of `category` (before placement)."""
    n = {"single": 1, "multi": 3}.get(category, 2)
    shapes = rng.sample(SHAPES, n)
    colours = rng.sample(sorted(COLOURS), n)
    if category == "single":
        sizes, textures = [rng.choice(list(SIZES))], [rng.choice(TEXTURES)]
    elif category == "shape":  # size binding: one small, one large
        sizes, textures = rng.sample(["small", "large"], 2), [DEFAULT_TEXTURE] * 2
    elif category == "texture":  # texture binding: one striped, one dotted
        sizes, textures = [DEFAULT_SIZE] * 2, rng.sample(["striped", "dotted"], 2)
    elif category in ("complex", "multi"):
        sizes, textures = [rng.choice(list(SIZES)) for _ in range(n)], [rng.choice(TEXTURES) for _ in range(n)]
    else:  # color, spatial
        sizes, textures = [DEFAULT_SIZE] * n, [DEFAULT_TEXTURE] * n
    return [{"shape": s, "colour": c, "size": z, "texture": t} for s, c, z, t in zip(shapes, colours, sizes, textures)]


def _separated(a: Sequence[float], b: Sequence[float], gap: float = GAP) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _box(x0: float, y0: float, side: float) -> tuple[float, float, float, float]:
    return tuple(round(v, 4) for v in (x0, y0, x0 + side, y0 + side))


def place_free(rng: random.Random, sides: list[float]) -> list[tuple] | None:
    """Boxes anywhere, pairwise GAP apart; None when the draw does not fit."""
    boxes: list[tuple] = []
    for side in sides:
        for _ in range(PLACEMENT_TRIES):
            box = _box(rng.uniform(BORDER, 1 - BORDER - side), rng.uniform(BORDER, 1 - BORDER - side), side)
            if all(_separated(box, other) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def _place_pair(rng: random.Random, side1: float, side2: float, relation: str) -> list[tuple] | None:
    """Boxes of objects 1 and 2 such that `1 <relation> 2` holds with margin. Built along the relation's
    axis (x for left/right/next to, y for top/bottom) as "first, then second", then mapped back."""
    first_is_1 = relation in ("on the left of", "on the top of") or (relation == "next to" and rng.random() < 0.5)
    a, b = (side1, side2) if first_is_1 else (side2, side1)
    room = 1 - 2 * BORDER - a - b
    if room < GAP:
        return None
    gap = rng.uniform(GAP, min(room, NEXT_TO_MAX_GAP) if relation == "next to" else room)
    start = rng.uniform(BORDER, BORDER + room - gap)
    along_a, along_b = start, start + a + gap
    span = (along_b + b / 2) - (along_a + a / 2)
    max_offset = NEXT_TO_MAX_OFFSET if relation == "next to" else span - RELATION_MARGIN
    for _ in range(PLACEMENT_TRIES):
        across_a = rng.uniform(BORDER, 1 - BORDER - a)
        across_b = rng.uniform(BORDER, 1 - BORDER - b)
        if abs((across_b + b / 2) - (across_a + a / 2)) < max_offset:
            break
    else:
        return None
    boxes = [(along_a, across_a, a), (along_b, across_b, b)]
    if relation in ("on the top of", "on the bottom of"):
        boxes = [(y, x, s) for x, y, s in boxes]
    boxes = [_box(*b) for b in boxes]
    return boxes if first_is_1 else boxes[::-1]


def draw_scene(rng: random.Random, category: str) -> Scene:
    """One scene of `category`: attributes, a relation where the category has one, placement."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; known: {CATEGORIES}")
    while True:  # a draw that does not fit (e.g. three large objects) is redrawn
        attributes = _draw_attributes(rng, category)
        sides = [SIZES[a["size"]] for a in attributes]
        relation = None
        if category == "spatial":
            relation = rng.choice(RELATIONS)
        elif category == "complex":
            relation = rng.choice(COMPLEX_RELATIONS)
        boxes = _place_pair(rng, *sides, relation) if relation else place_free(rng, sides)
        if boxes is not None:
            objects = tuple(SceneObject(bbox=box, **a) for a, box in zip(attributes, boxes))
            return Scene(category, objects, relation)


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


def composition_key(scene: Scene) -> str | None:
    """What a caption composes, independent of word order: the noun phrases (without articles) ordered by the
    relation ("X on the right of Y" = "Y on the left of X"; unordered for "and" and "next to"). None for a
    single object (not compositional: shared by both splits)."""
    phrases = [" ".join(w for w, pos in o.words() if pos != "DET") for o in scene.objects]
    if len(phrases) == 1:
        return None
    relation = scene.relation
    if relation in ("on the right of", "on the bottom of"):
        phrases, relation = phrases[::-1], relation.replace("right", "left").replace("bottom", "top")
    elif relation in (None, "next to"):
        phrases = sorted(phrases)
    return f" <{relation or 'and'}> ".join(phrases)


def split_of(scene: Scene, seed: int) -> str | None:
    """'train' or 'test' for a compositional scene (a seeded hash of its composition key: TEST_PERCENT % of
    compositions are test-only), None for a single object (both splits)."""
    key = composition_key(scene)
    if key is None:
        return None
    digest = hashlib.sha256(f"shapes-split:{seed}:{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < TEST_PERCENT else "train"


def _in_split(scene: Scene, split: str, seed: int) -> bool:
    return split_of(scene, seed) in (None, split)


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")


def scene_at(seed: int, split: str, index: int) -> Scene:
    """Scene `index` of a split's stream: category drawn from MIXTURE, composition in the split."""
    _check_split(split)
    rng = random.Random(f"shapes:{seed}:{split}:{index}")
    names, weights = list(MIXTURE), list(MIXTURE.values())
    while True:
        scene = draw_scene(rng, rng.choices(names, weights)[0])
        if _in_split(scene, split, seed):
            return scene


def scenes(seed: int, split: str, n: int) -> list[Scene]:
    return [scene_at(seed, split, i) for i in range(n)]


def prompt_scenes(seed: int, category: str, n: int) -> list[Scene]:
    """`n` test scenes of one category with distinct captions (a deterministic stream per category)."""
    rng = random.Random(f"shapes:{seed}:prompts:{category}")
    found: dict[str, Scene] = {}
    misses = 0
    while misses < EXHAUSTED_AFTER:
        scene = draw_scene(rng, category)
        if split_of(scene, seed) != "test" or scene.caption in found:
            misses += 1
            continue
        found[scene.caption], misses = scene, 0
        if len(found) == n:
            return list(found.values())
    raise ValueError(f"category {category!r} has only {len(found)} distinct test captions for seed {seed}; "
                     f"ask for at most that many prompts per category (--n)")


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def pattern_unit(size: int) -> int:
    """Stripe/dot thickness in pixels: 1 at 32 px, 2 at 64 px, 4 at 128 px."""
    return max(1, round(size / 32))


def pixel_box(obj: SceneObject, size: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the drawn pixels at `size`, x1/y1 exclusive (the detector box convention)."""
    side = max(3, round((obj.bbox[2] - obj.bbox[0]) * size))
    x0 = min(max(0, round(obj.bbox[0] * size)), size - side)
    y0 = min(max(0, round(obj.bbox[1] * size)), size - side)
    return x0, y0, x0 + side, y0 + side


def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """Boolean (height, width) mask of `shape` filling its box; the oracle matches against the same masks."""
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    right, bottom = width - 1, height - 1
    if shape == "square":
        draw.rectangle((0, 0, right, bottom), fill=255)
    elif shape == "circle":
        draw.ellipse((0, 0, right, bottom), fill=255)
    elif shape == "triangle":
        draw.polygon([(right / 2, 0), (0, bottom), (right, bottom)], fill=255)
    elif shape == "cross":
        # arms 35 % in from each side; clamped so a box 1-2 px wide (a sliver the oracle may meet) still draws
        x_arm, y_arm = min(round(width * 0.35), right // 2), min(round(height * 0.35), bottom // 2)
        draw.rectangle((0, y_arm, right, bottom - y_arm), fill=255)
        draw.rectangle((x_arm, 0, right - x_arm, bottom), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return np.asarray(image) > 0


def texture_mask(texture: str, width: int, height: int, unit: int) -> np.ndarray:
    """Ink pixels of a texture in a box: horizontal stripes, or a grid of unit squares, period 3 units,
    with a band through the box's centre row (and column), which lies inside every shape: anchored at a
    corner, the bands could miss both arms of a small cross and draw it plain."""
    def bands(n: int) -> np.ndarray:
        phase = (np.arange(n) - n // 2 + unit // 2) % (3 * unit)
        return phase < unit

    rows, cols = bands(height), bands(width)
    if texture == "plain":
        return np.zeros((height, width), bool)
    if texture == "striped":
        return np.repeat(rows[:, None], width, axis=1)
    if texture == "dotted":
        return rows[:, None] & cols[None, :]
    raise ValueError(f"unknown texture {texture!r}; known: {TEXTURES}")


def render(scene: Scene, size: int = DEFAULT_SIZE_PX) -> Image.Image:
    """The scene as an RGB image of size x size, aliased: only palette, ink and background colours."""
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = BACKGROUND
    unit = pattern_unit(size)
    for obj in scene.objects:
        x0, y0, x1, y1 = pixel_box(obj, size)
        mask = shape_mask(obj.shape, x1 - x0, y1 - y0)
        ink = mask & texture_mask(obj.texture, x1 - x0, y1 - y0, unit)
        region = canvas[y0:y1, x0:x1]
        region[mask] = COLOURS[obj.colour]
        region[ink] = INK
    return Image.fromarray(canvas, "RGB")


# --------------------------------------------------------------------------------------------------
# Frozen parses (the records tools/freeze_compbench_parse.py writes, built from the templates)
# --------------------------------------------------------------------------------------------------


def parse_record(scene: Scene, table: cb.NounTable | None = None) -> dict:
    """The frozen-parse record of a scene's caption; every extraction is evals.metrics.compbench's own."""
    table = table or cb.NounTable.from_file(NEW_OBJECTS)
    tokens, chunks = caption_tokens(scene)
    return cb.parse_record(scene.caption, tokens, chunks, table)


def parse_path(prompt_file: Path) -> Path:
    """Where the scorers look for a prompt file's frozen parse (`val_file: <absolute prompt file path>`)."""
    return cb.parse_file_path(str(Path(prompt_file).resolve()))


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def jsonl(records: Iterator[dict] | list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_dataset(out: Path, n: int, split: str, seed: int, size: int = DEFAULT_SIZE_PX) -> Path:
    """Images 00000.png … of the first `n` scenes of `split` and captions.jsonl, one line per image:
    {"file", "caption", "label" (shape x colour of the largest object), "scene"}. Returns captions.jsonl."""
    _check_split(split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):  # an earlier, larger n: readers glob *.png
        if stale.stem.isdigit() and int(stale.stem) >= n:
            stale.unlink()
    lines = []
    for i, scene in enumerate(scenes(seed, split, n)):
        name = f"{i:05d}.png"
        render(scene, size).save(out / name)
        lines.append({"file": name, "caption": scene.caption, "label": scene.label, "scene": scene.to_json()})
    path = out / "captions.jsonl"
    write_text_atomic(path, jsonl(lines))
    return path


def write_prompt_sets(out: Path, seed: int, n_per_category: int, n_fid: int = 200) -> dict[str, Path]:
    """Per category of PROMPT_CATEGORIES `<category>.txt` (T2I-CompBench line format: one prompt per line)
    with `n_per_category` distinct held-out captions, `fid.txt` with the captions of the first `n_fid` test
    scenes (their images: `write_dataset(ref, n_fid, "test", seed, size)`), the frozen parse
    `<name>.v1.jsonl` beside each, and scenes.jsonl (name, caption, scene per prompt line)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sets = {c: prompt_scenes(seed, c, n_per_category) for c in PROMPT_CATEGORIES}
    sets["fid"] = scenes(seed, "test", n_fid)
    table = cb.NounTable.from_file(NEW_OBJECTS)
    written = {}
    for name, members in sets.items():
        path = out / f"{name}.txt"
        write_text_atomic(path, "".join(s.caption + "\n" for s in members))
        distinct = {s.caption: s for s in members}.values()
        write_text_atomic(parse_path(path), jsonl(parse_record(s, table) for s in distinct))
        written[name] = path
    write_text_atomic(out / "scenes.jsonl", jsonl({"set": name, "caption": s.caption, "scene": s.to_json()}
                                                    for name, members in sets.items() for s in members))
    return written


def read_captions(folder: Path) -> list[dict]:
    """captions.jsonl of a written dataset, scenes as Scene objects."""
    path = Path(folder) / "captions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write the folder with `python -m evals.shapes train|reference`")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({**row, "scene": Scene.from_json(row["scene"])})
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: {err!r}; rewrite the folder with `python -m evals.shapes "
                             f"train|reference`") from None
    return rows
