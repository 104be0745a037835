"""T2I-CompBench(++) scoring rules, exactly as the original scripts compute them (quirks included).

Pure functions: no model, no spaCy. The models sit behind two small protocols (`Detector`,
`DepthEstimator`); spaCy parses are frozen per prompt in `evals/benchmarks/data/t2i_compbench_parse/`
(written by `tools/freeze_compbench_parse.py`) and read with `load_prompt_parses`.

Original code: `Karine-Huang/T2I-CompBench` @ 1b7094991a57 —
  BLIPvqa_eval/BLIP_vqa.py + BLIP/data/utils.py (questions, product rule),
  UniDet_eval/2D_spatial_eval.py (2D geometry, complex-mode objects),
  UniDet_eval/3D_spatial_eval.py (3D rule with depth), UniDet_eval/numeracy_eval.py (numeracy),
  3_in_1_eval/3_in_1.py (complex combination), CLIPScore_eval/CLIP_similarity.py (ADJ removal).

Detector frame: UniDet saw each image after torchvision `Resize(479, max_size=480)` and its boxes live in
that resized frame; the 150-pixel distance threshold of the 2D rule and the depth crops of the 3D rule are
in that frame. Callers therefore run a detector on `to_detector_frame(image)`, and every box handed to
these rules is in that frame's pixel coordinates (x to the right, y downwards).

This module imports only the standard library and numpy (PIL lazily), so the freeze tool can import it
from a separate spaCy venv.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, TypeVar

import numpy as np

from evals.files import sha256_file

if TYPE_CHECKING:
    from PIL import Image

PARSE_VERSION = 1
PARSE_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "t2i_compbench_parse"

# --------------------------------------------------------------------------------------------------
# Detector interface and frame
# --------------------------------------------------------------------------------------------------

DETECTOR_FRAME_SHORT = 479
DETECTOR_FRAME_MAX = 480


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box_xyxy: tuple[float, float, float, float]  # pixels of the image given to the detector


class Detector(Protocol):
    """Open- or closed-vocabulary detector. `labels` are the object names the rule will look for (a
    closed-vocabulary detector may ignore them). Boxes are in the pixel frame of `image`; the result is
    in the detector's output order (score descending), which the rules rely on ("first detection of a
    label")."""

    def detect(self, image: Image.Image, labels: list[str]) -> list[Detection]: ...


class DepthEstimator(Protocol):
    """Relative inverse depth (larger = closer) in [0, 1] of the original (unresized) `image`, returned as
    an H x W array aligned with `to_detector_frame(image)` (see evals.metrics.depth)."""

    def depth_in_detector_frame(self, image: Image.Image) -> np.ndarray: ...


def detector_frame_size(width: int, height: int) -> tuple[int, int]:
    """(w, h) after torchvision `Resize(479, max_size=480)`: short side 479 unless the long side would pass
    480, then long side 480 (integer truncation as torchvision does)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = DETECTOR_FRAME_SHORT, int(DETECTOR_FRAME_SHORT * long / short)
    if new_long > DETECTOR_FRAME_MAX:
        new_short, new_long = int(DETECTOR_FRAME_MAX * new_short / new_long), DETECTOR_FRAME_MAX
    return (new_short, new_long) if width <= height else (new_long, new_short)


def to_detector_frame(image: Image.Image) -> Image.Image:
    """The image UniDet saw: RGB, bilinear resize (PIL's, i.e. torchvision's PIL path) to the frame."""
    from PIL import Image as PILImage

    image = image.convert("RGB")
    return image.resize(detector_frame_size(*image.size), PILImage.BILINEAR)


# --------------------------------------------------------------------------------------------------
# BLIP-VQA (Color / Shape / Texture; attribute term of Complex) — BLIPvqa_eval/BLIP_vqa.py
# --------------------------------------------------------------------------------------------------

BLIP_DROPPED_CHUNKS = ("top", "the side", "the left", "the right")  # filter added upstream 2024-01-28
NP_NUM_CURRENT = 8  # default since upstream 59523aa (2023-12-02); paper setting (issue #9)
NP_NUM_LEGACY = 2  # default before that ("Set A" tables)
_QUESTION_STRIP = re.compile(r"[.!\"()*#:;~]")
_MAX_QUESTION_WORDS = 50


def blip_questions(noun_chunks: Sequence[str], dropped: Sequence[str] = BLIP_DROPPED_CHUNKS) -> list[str]:
    """One question per noun chunk: chunk text + "?", chunks exactly in `dropped` skipped. Pass
    `dropped=()` for the behaviour before the 2024-01-28 filter."""
    return [f"{chunk}?" for chunk in noun_chunks if chunk not in dropped]


def normalize_question(question: str) -> str:
    """BLIP's `pre_question`: lower-case, delete .!"()*#:;~ (the "?" stays), strip trailing spaces,
    keep at most 50 words."""
    question = _QUESTION_STRIP.sub("", question.lower()).rstrip(" ")
    words = question.split(" ")
    return " ".join(words[:_MAX_QUESTION_WORDS]) if len(words) > _MAX_QUESTION_WORDS else question


def format4(value: float) -> float:
    """The original stores every probability and score as the string '{:.4f}'."""
    return float(f"{value:.4f}")


def blip_vqa_image_score(question_probs: Sequence[float], np_num: int = NP_NUM_CURRENT) -> float:
    """Product over noun-phrase slots 0..np_num-1 of P(yes)/(P(yes)+P(no)); slot i uses question i when the
    prompt has one, else 1. Each p is rounded to 4 decimals (stored as text), the product is taken in
    float32 (a CUDA float tensor upstream) and the result rounded to 4 decimals again."""
    if np_num < 1:
        raise ValueError(f"np_num must be >= 1, got {np_num}")
    product = np.float32(1.0)
    for slot in range(np_num):
        p = format4(question_probs[slot]) if slot < len(question_probs) else 1.0
        product = np.float32(product * np.float32(p))
    return format4(float(product))


# --------------------------------------------------------------------------------------------------
# Object extraction from a frozen parse (tokens with POS and trailing whitespace)
# --------------------------------------------------------------------------------------------------

PERSON_WORDS = ("girl", "boy", "man", "woman")


@dataclass(frozen=True)
class Token:
    text: str
    pos: str
    ws: str  # trailing whitespace, needed to rebuild span text exactly like spaCy's Span.text


def span_text(tokens: Sequence[Token], start: int, stop: int) -> str:
    """spaCy `doc[start:stop].text` (slice clipped at the end, no trailing whitespace)."""
    span = tokens[start:stop]
    return "".join(t.text + t.ws for t in span[:-1]) + (span[-1].text if span else "")


def first_last_nouns(tokens: Sequence[Token]) -> tuple[str | None, str | None]:
    """2D/3D simple mode: first and last token tagged NOUN (None, None when there is none — the original
    raises IndexError there; no val prompt of the spatial categories lacks a noun)."""
    nouns = [t.text for t in tokens if t.pos == "NOUN"]
    return (nouns[0], nouns[-1]) if nouns else (None, None)


COMPLEX_PREPOSITIONS = ("on top of", "on bottom of", "on the left", "on the right", "next to", "on side of", "near")


def complex_objects(tokens: Sequence[Token]) -> list[str]:
    """2D_spatial_eval.py complex mode: for every token where a preposition starts (windows of 3, 2, 1
    tokens, clipped at the end), the nearest NOUN/PROPN before it and the first NOUN after it (if no NOUN
    follows until the end: the first PROPN followed by a non-PROPN). The rule uses the list only when it
    has exactly 2 entries."""
    objects: list[str] = []
    n = len(tokens)
    for i in range(n):
        width = next((k for k in (3, 2, 1) if span_text(tokens, i, i + k) in COMPLEX_PREPOSITIONS), None)
        if width is None:
            continue
        for j in range(i - 1, -1, -1):
            if tokens[j].pos in ("NOUN", "PROPN"):
                objects.append(tokens[j].text)
                break
        reached_end = False
        for j in range(i + width, n):
            if tokens[j].pos == "NOUN":
                objects.append(tokens[j].text)
                break
            if j == n - 1:
                reached_end = True
        if reached_end:
            for j in range(i + width, n):
                if j + 1 < n and tokens[j].pos == "PROPN" and tokens[j + 1].pos != "PROPN":
                    objects.append(tokens[j].text)
                    break
    return objects


def complex_object_pair(tokens: Sequence[Token]) -> tuple[str | None, str | None]:
    objects = complex_objects(tokens)
    return (objects[0], objects[1]) if len(objects) == 2 else (None, None)


def text_without_adjectives(tokens: Sequence[Token]) -> str:
    """CLIP_similarity.py complex mode: the token texts that are not ADJ, joined by single spaces."""
    return " ".join(t.text for t in tokens if t.pos != "ADJ")


def person_alias(noun: str | None) -> str | None:
    return "person" if noun in PERSON_WORDS else noun


# --------------------------------------------------------------------------------------------------
# Box geometry shared by the 2D and 3D rules
# --------------------------------------------------------------------------------------------------


def _centre_offsets_and_iou(box1: Sequence[float], box2: Sequence[float]) -> tuple[float, float, float]:
    """dx, dy = centre(box2) - centre(box1) (pixels), and IoU without the +1 convention. A zero union
    (two degenerate boxes) gives IoU 0 here; upstream divides by zero."""
    x0a, y0a, x1a, y1a = box1
    x0b, y0b, x1b, y1b = box2
    dx = (x0b + x1b) / 2 - (x0a + x1a) / 2
    dy = (y0b + y1b) / 2 - (y0a + y1a) / 2
    inter = max(0, min(x1a, x1b) - max(x0a, x0b)) * max(0, min(y1a, y1b) - max(y0a, y0b))
    union = (x1a - x0a) * (y1a - y0a) + (x1b - x0b) * (y1b - y0b) - inter
    return dx, dy, (inter / union if union > 0 else 0.0)


# --------------------------------------------------------------------------------------------------
# 2D spatial — UniDet_eval/2D_spatial_eval.py
# --------------------------------------------------------------------------------------------------

SPATIAL_2D_RELATIONS = (
    "on side of", "next to", "near", "on the left of", "on the right of", "on the bottom of", "on the top of",
    "on top of",  # listed upstream but without a geometry branch: always scores 0 (quirk kept)
)
IOU_THRESHOLD_2D = 0.1
DISTANCE_THRESHOLD_2D = 150  # pixels of the detector frame
PASS_THRESHOLD_2D = 0.5


def find_relation(prompt: str, relations: Sequence[str]) -> str | None:
    """First relation word of the list (list order, not prompt order) that is a substring of the prompt."""
    return next((word for word in relations if word in prompt), None)


def spatial_2d_position_score(relation: str | None, box1: Sequence[float], box2: Sequence[float]) -> float:
    """`determine_position`: soft score in [0, 1] that obj1 (box1) stands in `relation` to obj2 (box2)."""
    dx, dy, iou = _centre_offsets_and_iou(box1, box2)
    if relation in ("next to", "on side of", "near"):
        if abs(dx) < DISTANCE_THRESHOLD_2D or abs(dy) < DISTANCE_THRESHOLD_2D:
            return 1.0
        return DISTANCE_THRESHOLD_2D / max(abs(dx), abs(dy))
    # obj1 left of obj2 <=> obj2's centre is to the right (dx > 0); "top of" <=> obj2 lower (dy > 0).
    along, across, sign = {
        "on the left of": (dx, dy, 1), "on the right of": (dx, dy, -1),
        "on the top of": (dy, dx, 1), "on the bottom of": (dy, dx, -1),
    }.get(relation, (0.0, 0.0, 0))
    if sign == 0 or sign * along <= 0 or not abs(along) > abs(across):
        return 0.0
    return 1.0 if iou < IOU_THRESHOLD_2D else IOU_THRESHOLD_2D / iou


def _first_index(labels: list[str], name: str | None) -> int | None:
    return labels.index(name) if name is not None and name in labels else None


def spatial_2d_image_score(
    obj1: str | None, obj2: str | None, relation: str | None, detections: Sequence[Detection]
) -> float:
    """Per image: both objects found (exact label, first detection of that label) ->
    0.25*c1 + 0.25*c2 + 0.5*pos; one found -> 0.25*c; none -> 0; then any score < 0.5 becomes 0.
    `obj1`/`obj2` are the prompt nouns (first/last NOUN, or the complex-mode pair); the
    girl/boy/man/woman -> person alias is applied here."""
    obj1, obj2 = person_alias(obj1), person_alias(obj2)
    labels = [d.label for d in detections]
    i1, i2 = _first_index(labels, obj1), _first_index(labels, obj2)
    if i1 is not None and i2 is not None:
        d1, d2 = detections[i1], detections[i2]
        score = 0.25 * d1.score + 0.25 * d2.score + spatial_2d_position_score(relation, d1.box_xyxy, d2.box_xyxy) / 2
    elif i1 is not None or i2 is not None:
        score = 0.25 * detections[i1 if i1 is not None else i2].score
    else:
        score = 0.0
    return 0.0 if score < PASS_THRESHOLD_2D else score


# --------------------------------------------------------------------------------------------------
# 3D spatial (T2I-CompBench++) — UniDet_eval/3D_spatial_eval.py
# --------------------------------------------------------------------------------------------------

SPATIAL_3D_RELATIONS = ("in front of", "behind", "hidden")
IOU_THRESHOLD_3D = 0.5


def _mean_depth_transposed(depth: np.ndarray, box: Sequence[float]) -> float:
    """Upstream crops `depth[x_min:x_max, y_min:y_max]` of an H x W map, i.e. rows by x and columns by y
    (transposed; kept). An empty crop has mean NaN, which then fails every comparison (score 0)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = depth[x0:x1, y0:y1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(crop.mean()) if crop.size else float("nan")


def spatial_3d_position_score(
    relation: str | None, box1: Sequence[float], box2: Sequence[float], depth: np.ndarray
) -> float:
    """`determine_position` 3D branches. d = mean depth(A) - mean depth(B) (inverse depth: > 0 means A is
    closer). "in front of" needs d > 0, "behind"/"hidden" d < 0; IoU > 0.5 -> 1, 0 < IoU < 0.5 ->
    IoU/0.5, otherwise (IoU 0 or exactly 0.5) -> 0."""
    if relation not in SPATIAL_3D_RELATIONS:
        return 0.0  # the 2D branches never fire: only 3D words are searched in these prompts
    _, _, iou = _centre_offsets_and_iou(box1, box2)
    diff = _mean_depth_transposed(depth, box1) - _mean_depth_transposed(depth, box2)
    holds = diff > 0 if relation == "in front of" else diff < 0
    if not holds:
        return 0.0
    if iou > IOU_THRESHOLD_3D:
        return 1.0
    if 0 < iou < IOU_THRESHOLD_3D:
        return iou / IOU_THRESHOLD_3D
    return 0.0


def spatial_3d_image_score(
    obj1: str | None, obj2: str | None, relation: str | None, detections: Sequence[Detection], depth: np.ndarray
) -> float:
    """Per image, substring label matching: both found -> 0.25*c1 + 0.25*c2 + 0.5*pos; one -> 0.25*c;
    none -> 0; **no** < 0.5 cut-off. Position choice quirk kept: scanning detections in order, each
    label containing obj1 (obj2) overwrites its index until both indices are set."""
    obj1, obj2 = person_alias(obj1), person_alias(obj2)
    labels = [d.label for d in detections]
    found1 = obj1 is not None and any(obj1 in label for label in labels)
    found2 = obj2 is not None and any(obj2 in label for label in labels)
    if found1 and found2:
        i1 = i2 = None
        for i, label in enumerate(labels):
            if obj1 in label:
                i1 = i
            if obj2 in label:
                i2 = i
            if i1 is not None and i2 is not None:
                break
        d1, d2 = detections[i1], detections[i2]
        position = spatial_3d_position_score(relation, d1.box_xyxy, d2.box_xyxy, depth)
        return 0.25 * d1.score + 0.25 * d2.score + position / 2
    if found1 or found2:
        name = obj1 if found1 else obj2
        return 0.25 * next(d.score for d in detections if name in d.label)
    return 0.0


# --------------------------------------------------------------------------------------------------
# Numeracy (T2I-CompBench++) — UniDet_eval/numeracy_eval.py
# --------------------------------------------------------------------------------------------------

NUMBER_WORDS = ("a", "an", "one", "two", "three", "four", "five", "six", "seven", "eight")
_SINGULAR_ARTICLES = ("a", "an", "one")
_NUMBER_VALUES = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
NUMERACY_ALIASES = {"boy": "person", "girl": "person", "man": "person", "woman": "person",
                    "ship": "boat", "telivision": "tv", "goldfish": "fish", "painting": "picture"}


class NumeracyParseError(ValueError):
    """The prompt makes the original numeracy evaluator crash (it would stop the whole run)."""


@dataclass(frozen=True)
class NounTable:
    """new_objects.txt: one "singular - plural" pair per line, both lower-cased."""

    singular: tuple[str, ...]
    plural: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str, source: str = "new_objects.txt") -> NounTable:
        singular, plural = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if " - " not in line:
                raise ValueError(f"{source}:{number}: expected 'singular - plural', got {line!r}")
            parts = line.split(" - ")
            singular.append(parts[0].strip().lower())
            plural.append(parts[1].strip().lower())
        return cls(tuple(singular), tuple(plural))

    @classmethod
    def from_file(cls, path: str | Path) -> NounTable:
        return cls.from_text(Path(path).read_text(encoding="utf-8"), str(path))


def numeracy_targets(tokens: Sequence[str], table: NounTable) -> tuple[list[str], list[int]]:
    """(objects, counts) as numeracy_eval.py builds them from the token texts (case-sensitive). A number
    word followed by a two-word noun of the table wins over a one-word noun; a plural after a/an/one or a
    singular after a/an/one counts 1. Quirk kept: when the number word is "a"/"an" before a plural, the
    object is added but no count (word2number fails and is skipped), so the two lists can misalign."""
    objects: list[str] = []
    counts: list[int] = []
    s, p = table.singular, table.plural
    n = len(tokens)
    for i, word in enumerate(tokens):
        if word not in NUMBER_WORDS:
            continue
        two = f"{tokens[i + 1]} {tokens[i + 2]}" if i < n - 2 else None
        if two is not None and (two in s or two in p):
            if two in p and word not in _SINGULAR_ARTICLES:
                objects.append(s[p.index(two)])
                counts.append(_NUMBER_VALUES[word])
            else:
                counts.append(1)
                objects.append(two)
            continue
        if i + 1 >= n:
            raise NumeracyParseError(f"number word {word!r} ends the prompt {' '.join(tokens)!r} (upstream IndexError)")
        nxt = tokens[i + 1]
        if nxt not in s and nxt not in p:
            continue
        if nxt in s and word in _SINGULAR_ARTICLES:
            counts.append(1)
            objects.append(nxt)
            continue
        if nxt not in p:
            raise NumeracyParseError(
                f"{word!r} before the singular {nxt!r} in {' '.join(tokens)!r} (upstream ValueError in plural lookup)"
            )
        objects.append(s[p.index(nxt)])
        if word in _NUMBER_VALUES:
            counts.append(_NUMBER_VALUES[word])
    return objects, counts


def _covers_same_object(box1: Sequence[float], box2: Sequence[float]) -> bool:
    """numeracy_eval.py `calculate_iou` (pixel-inclusive +1 areas): IoU > 0.9 or > 90 % of either box
    inside the other."""
    x0a, y0a, x1a, y1a = box1
    x0b, y0b, x1b, y1b = box2
    inter = max(0, min(x1a, x1b) - max(x0a, x0b) + 1) * max(0, min(y1a, y1b) - max(y0a, y0b) + 1)
    area1 = (x1a - x0a + 1) * (y1a - y0a + 1)
    area2 = (x1b - x0b + 1) * (y1b - y0b + 1)
    return inter / (area1 + area2 - inter) > 0.9 or inter / area1 > 0.9 or inter / area2 > 0.9


def merge_duplicate_detections(detections: Sequence[Detection]) -> list[Detection]:
    """Keep a detection unless an already kept one has the same label and covers the same object."""
    kept: list[Detection] = []
    for det in detections:
        if not any(k.label == det.label and _covers_same_object(det.box_xyxy, k.box_xyxy) for k in kept):
            kept.append(det)
    return kept


def numeracy_query_labels(objects: Sequence[str]) -> list[str]:
    """Names the rule will look for (after the upstream aliases) — the queries for an open-vocabulary
    detector."""
    return list(dict.fromkeys(NUMERACY_ALIASES.get(o, o) for o in objects))


def numeracy_image_score(objects: Sequence[str], counts: Sequence[int], detections: Sequence[Detection]) -> float:
    """Per image, n = len(objects): for each object +0.5/n if detected, +0.5/n more if the number of its
    (merged) detections equals the requested count. Label matching quirk kept: when the name is not a
    label, every label containing it is renamed to it (the renaming persists for later objects)."""
    if not objects:
        raise ValueError("numeracy prompt without a countable object (upstream ZeroDivisionError)")
    labels = [d.label for d in merge_duplicate_detections(detections)]
    weight = 1.0 / len(objects)
    score = 0.0
    for i, name in enumerate(objects):
        name = NUMERACY_ALIASES.get(name, name)
        if name not in labels:
            labels = [name if name in label else label for label in labels]
        if name in labels:
            score += 0.5 * weight
            if i >= len(counts):
                raise NumeracyParseError(f"no count parsed for object {i} ({name!r}) (upstream IndexError)")
            if labels.count(name) == counts[i]:
                score += 0.5 * weight
    return score


# --------------------------------------------------------------------------------------------------
# Complex (3-in-1) — 3_in_1_eval/3_in_1.py
# --------------------------------------------------------------------------------------------------


def complex_group_key(line: str) -> str:
    """Membership key: text before the first ".", lower-cased (upstream strips only '\\n')."""
    return line.strip("\n").split(".")[0].lower()


def complex_group(prompt: str, spatial_lines: Sequence[str], action_lines: Sequence[str]) -> str:
    """'spatial', 'action' or 'spatialaction' (neither list), tested in that order."""
    key = complex_group_key(prompt)
    if key in {complex_group_key(line) for line in spatial_lines}:
        return "spatial"
    if key in {complex_group_key(line) for line in action_lines}:
        return "action"
    return "spatialaction"


def three_in_one(group: str, attribute: float, spatial: float, action: float) -> float:
    """(A+S)/2 for 'spatial', (A+C)/2 for 'action', (A+S+C)/3 otherwise."""
    if group == "spatial":
        return (spatial + attribute) * 0.5
    if group == "action":
        return (action + attribute) * 0.5
    if group == "spatialaction":
        return (attribute + spatial + action) / 3
    raise ValueError(f"unknown complex group {group!r}; expected spatial, action or spatialaction")


# --------------------------------------------------------------------------------------------------
# Frozen parses
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptParse:
    """spaCy parse of one prompt plus what each rule extracts from it (see tools/freeze_compbench_parse.py)."""

    prompt: str
    tokens: tuple[Token, ...]
    noun_chunks: tuple[str, ...]
    blip_questions: tuple[str, ...]
    objects_2d: tuple[str | None, str | None]
    objects_complex: tuple[str, ...]
    text_without_adj: str
    numeracy_objects: tuple[str, ...] | None  # None: the prompt crashes the upstream numeracy parser
    numeracy_counts: tuple[int, ...] | None

    @classmethod
    def from_record(cls, record: dict) -> PromptParse:
        nums = record["numeracy"]
        return cls(
            prompt=record["prompt"],
            tokens=tuple(Token(*t) for t in record["tokens"]),
            noun_chunks=tuple(record["noun_chunks"]),
            blip_questions=tuple(record["blip_questions"]),
            objects_2d=tuple(record["objects_2d"]),
            objects_complex=tuple(record["objects_complex"]),
            text_without_adj=record["text_without_adj"],
            numeracy_objects=None if nums is None else tuple(nums["objects"]),
            numeracy_counts=None if nums is None else tuple(nums["counts"]),
        )


def parse_record(prompt: str, tokens: Sequence[Token], noun_chunks: Sequence[str], table: NounTable) -> dict:
    """The frozen-parse record (one JSONL line, read back by `PromptParse.from_record`) of a prompt's tokens and
    noun chunks: what every rule extracts from them, computed by this module's own functions."""
    record = {
        "prompt": prompt,
        "tokens": [[t.text, t.pos, t.ws] for t in tokens],
        "noun_chunks": list(noun_chunks),
        "blip_questions": blip_questions(noun_chunks),
        "objects_2d": list(first_last_nouns(tokens)),
        "objects_complex": complex_objects(tokens),
        "text_without_adj": text_without_adjectives(tokens),
    }
    try:
        objects, counts = numeracy_targets([t.text for t in tokens], table)
        record["numeracy"] = {"objects": objects, "counts": counts}
    except NumeracyParseError as err:
        record["numeracy"] = None
        record["numeracy_error"] = str(err)
    return record


def parse_file_path(val_file: str, parse_dir: Path = PARSE_DIR) -> Path:
    """Frozen parse of a val file given by its path relative to the benchmark folder, e.g.
    'spatial_val.txt' or 'legacy_7710d05/color_val.txt'."""
    return Path(parse_dir) / Path(val_file).with_suffix(f".v{PARSE_VERSION}.jsonl")


def _check_frozen_hash(path: Path, parse_dir: Path) -> None:
    """A parse listed in the parse folder's manifest.json (written by the freeze tool) must have the recorded
    sha256: an edited parse asks other questions under the same name."""
    manifest = parse_dir / "manifest.json"
    if not manifest.is_file():
        return
    key = Path(os.path.relpath(path, parse_dir)).as_posix()  # "../shapes/…" for parses kept elsewhere: not listed
    recorded = json.loads(manifest.read_text()).get("outputs", {}).get(key, {}).get("sha256")
    if recorded and sha256_file(path) != recorded:
        raise ValueError(f"{path} differs from the sha256 recorded in {manifest}: restore it (git checkout) or "
                         f"regenerate both with `python tools/freeze_compbench_parse.py` (see SOURCE.md there)")


def load_prompt_parses(val_file: str, parse_dir: Path = PARSE_DIR) -> dict[str, PromptParse]:
    """Prompt text -> PromptParse for one val file."""
    path = parse_file_path(val_file, parse_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"no frozen parse {path} for {val_file!r}; regenerate with "
            f"`python tools/freeze_compbench_parse.py` in a spaCy venv (see {Path(parse_dir) / 'SOURCE.md'})"
        )
    _check_frozen_hash(path, Path(parse_dir))
    parses = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            parse = PromptParse.from_record(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: bad record ({err!r}); regenerate the file") from None
        parses[parse.prompt] = parse
    return parses


def lookup_parse(parses: dict[str, PromptParse], prompt: str, val_file: str) -> PromptParse:
    try:
        return parses[prompt]
    except KeyError:
        raise KeyError(
            f"prompt {prompt!r} is not in the frozen parse of {val_file!r}; the prompt must be the exact line "
            f"text (before any TAB, stripped). New prompt files need `tools/freeze_compbench_parse.py`."
        ) from None


# --------------------------------------------------------------------------------------------------
# Weight lookup shared by the model backends (blip_vqa, detectors, depth)
# --------------------------------------------------------------------------------------------------

T = TypeVar("T")


class MissingWeightsError(FileNotFoundError):
    pass


def load_pretrained(loader: Callable[..., T], name_or_path: str, what: str) -> T:
    """`loader(source, **kw)` (a `from_pretrained`) on a local folder if `name_or_path` is one, else on the
    Hugging Face id — cache only when HF_HUB_OFFLINE is set. Shared by the model backends."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return loader(str(path))
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return loader(name_or_path, local_files_only=offline) if offline else loader(name_or_path)
    except OSError as err:
        raise MissingWeightsError(
            f"{what}: weights {name_or_path!r} are neither a local folder nor in the Hugging Face cache"
            f"{' (HF_HUB_OFFLINE=1, no download)' if offline else ''}. Fix: on a machine with internet run "
            f"`huggingface-cli download {name_or_path}` and copy the cache (HF_HOME) here, or save the model "
            f"with save_pretrained into a folder and pass that folder. ({err.__class__.__name__}: {err})"
        ) from None
