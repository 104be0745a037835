"""GenEval scoring rules, exactly as the original evaluation code computes them.

Original code: `djghosh13/geneval` @ af4902f24d3c — evaluation/evaluate_images.py (detection filtering,
include/exclude clauses, relative position, colour crops) and evaluation/summary_scores.py (task scores,
Overall). Colour zero-shot classification there goes through clip_benchmark 1.4.0
(`zero_shot_classifier` / `run_classification`); that part lives in `geneval_backends.ClipColorClassifier`.

Pure functions: no model. The models sit behind two small protocols (`Detector`, `ColorClassifier`); the
Mask2Former and CLIP implementations are in `evals.metrics.geneval_backends`, and tests or an "oracle"
backend can pass their own objects.

What the original does, and these functions reproduce (reference/benchmarks.md §5):
- Detections: per COCO class, sort by confidence (descending), keep score > 0.3 (> 0.9 when the prompt's tag
  is "counting"), at most 16 per class; NMS only if `max_overlap` < 1 (default 1.0: no NMS).
- Each include clause {class, count[, color][, position]} takes the `count` most confident detections of the
  class: fewer than `count` -> fail; with `color`, every one of them must be classified as that colour
  (CLIP on the box crop, non-mask pixels grey #999); with `position` [relation, group], every one of them
  must stand in `relation` to every object of the referenced earlier clause, which itself must have
  matched. Each exclude clause {class, count} fails the image when the class has >= `count` kept
  detections. An image is correct iff no clause failed.
- Relative position of A to B: offset = centre(A) - centre(B); per axis the magnitude shrinks by
  0.1 x (size of A + size of B) (not below 0), the sign is kept; this revised offset is divided by the
  length of the raw offset; x < -0.5 -> "left of", x > 0.5 -> "right of", y < -0.5 -> "above",
  y > 0.5 -> "below" (strict). When both revised components are below 1e-3 in magnitude: no relation.
  Computed in float32, as upstream does on mmdet's float32 box arrays.
- Task score = fraction of correct images of the tag; Overall = mean of the task scores.

Tie order: upstream sorts each class with `np.argsort(scores)[::-1]` (unstable sort); here equal scores keep
the reverse of their input order, which is what that expression gives for a stable sort. Real detector
scores practically never tie.

This module imports only the standard library and numpy (PIL lazily, for the colour crop).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Protocol, Sequence

import numpy as np

from evals.metrics.compbench import Detection

if TYPE_CHECKING:
    from PIL import Image

DATA_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "geneval"

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS = ("left of", "right of", "above", "below")


def color_templates(classname: str) -> tuple[str, str, str]:
    """The three zero-shot templates of the original, with `{c}` left for the colour."""
    return (f"a photo of a {{c}} {classname}", f"a photo of a {{c}}-colored {classname}", "a photo of a {c} object")


@dataclass(frozen=True)
class Options:
    """The original's `--options` (same names and defaults)."""

    threshold: float = 0.3  # keep detections with score > threshold ...
    counting_threshold: float = 0.9  # ... or > counting_threshold for the "counting" tag
    max_objects: int = 16  # per class, after the threshold
    max_overlap: float = 1.0  # greedy NMS IoU; 1.0 switches NMS off (the default)
    position_threshold: float = 0.1  # fraction of the summed box sizes removed from the centre offset
    bgcolor: str = "#999"  # fill of non-mask pixels in colour crops ("original" keeps the image)
    crop: bool = True  # crop the colour input to the box

    @classmethod
    def from_settings(cls, settings: Mapping) -> Options:
        known = {f: settings[f] for f in cls.__dataclass_fields__ if f in settings}
        types = {"threshold": float, "counting_threshold": float, "max_objects": int, "max_overlap": float,
                 "position_threshold": float, "bgcolor": str, "crop": _as_bool}
        return cls(**{k: types[k](v) for k, v in known.items()})


def _as_bool(value) -> bool:
    if isinstance(value, str):  # the original takes crop=1 / crop=0 on its command line
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@dataclass(frozen=True)
class MaskedDetection(Detection):
    """A detection with its instance mask (bool H x W of the scored image; None for box-only detectors).
    `label` is a GenEval class name (object_names.txt), boxes are pixels of the scored image."""

    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


class Detector(Protocol):
    """Closed-vocabulary detector over the 80 GenEval/COCO classes: all its detections of `image` (the
    rules threshold, sort and cap them). Optional attributes `name` and `fingerprint` are recorded."""

    def detect(self, image: Image.Image) -> list[Detection]: ...


class ColorClassifier(Protocol):
    """One colour of COLORS per object (the crop of `image` at the object's box and mask; see
    `color_crop`); `classname` selects the text templates."""

    def classify(self, image: Image.Image, objects: Sequence[Detection], classname: str) -> list[str]: ...


# --------------------------------------------------------------------------------------------------
# Object names and prompt metadata
# --------------------------------------------------------------------------------------------------


def load_object_names(path: str | Path | None = None) -> list[str]:
    """The 80 class names in the detector's class-index order (object_names.txt)."""
    path = Path(path) if path is not None else DATA_DIR / "object_names.txt"
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != 80:
        raise ValueError(f"{path}: expected 80 class names, found {len(names)}")
    return names


def parse_metadata(metadata: str | Mapping) -> dict:
    """A prompt's GenEval metadata (tag, include, optional exclude) from a dict or its JSON text."""
    meta = json.loads(metadata) if isinstance(metadata, str) else dict(metadata)
    if "tag" not in meta or "include" not in meta:
        raise ValueError(f"GenEval metadata needs 'tag' and 'include', got keys {sorted(meta)}")
    for clause in meta["include"]:
        if "class" not in clause or "count" not in clause:
            raise ValueError(f"include clause {clause!r} needs 'class' and 'count'")
        if "color" in clause and clause["color"] not in COLORS:
            raise ValueError(f"include clause {clause!r}: colour must be one of {COLORS}")
        if "position" in clause and clause["position"][0] not in RELATIONS:
            raise ValueError(f"include clause {clause!r}: relation must be one of {RELATIONS}")
    return meta


# --------------------------------------------------------------------------------------------------
# Detection filtering — evaluate_image()
# --------------------------------------------------------------------------------------------------


def box_iou_plus1(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """Upstream `compute_iou`: pixel-inclusive (+1) areas, 0 when the union is 0. Used only by the
    optional NMS."""
    def area(b):
        return max(b[2] - b[0] + 1, 0) * max(b[3] - b[1] + 1, 0)

    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0


def confidence_threshold(tag: str, options: Options = Options()) -> float:
    return options.counting_threshold if tag == "counting" else options.threshold


def filter_detections(detections: Iterable[Detection], tag: str, options: Options = Options()
                      ) -> dict[str, list[Detection]]:
    """Class name -> kept detections, most confident first: score > threshold (> counting threshold for
    the counting tag), at most `max_objects` per class, then greedy NMS when `max_overlap` < 1. Classes
    without a kept detection are absent."""
    threshold = confidence_threshold(tag, options)
    by_class: dict[str, list[Detection]] = {}
    for det in detections:
        by_class.setdefault(det.label, []).append(det)
    kept: dict[str, list[Detection]] = {}
    for label, dets in by_class.items():
        # np.argsort(scores)[::-1]: descending; equal scores in reverse input order (stable sort reversed)
        order = [dets[i] for i in reversed(np.argsort([d.score for d in dets], kind="stable"))]
        order = [d for d in order if d.score > threshold][: options.max_objects]
        chosen: list[Detection] = []
        while order:
            best = order.pop(0)
            chosen.append(best)
            if options.max_overlap != 1:
                order = [d for d in order if box_iou_plus1(best.box_xyxy, d.box_xyxy) < options.max_overlap]
        if chosen:
            kept[label] = chosen
    return kept


# --------------------------------------------------------------------------------------------------
# Relative position — relative_position()
# --------------------------------------------------------------------------------------------------


def relative_position(box_a: Sequence[float], box_b: Sequence[float],
                      position_threshold: float = 0.1) -> set[str]:
    """Relations of A to B ({"left of", "right of", "above", "below"}, possibly two or none); boxes xyxy
    in image pixels, y downwards."""
    boxes = np.asarray([list(box_a)[:4], list(box_b)[:4]], dtype=np.float32).reshape(2, 2, 2)
    centre_a, centre_b = boxes.mean(axis=1)
    size_a, size_b = np.abs(boxes[:, 1] - boxes[:, 0])
    offset = centre_a - centre_b
    shrunk = np.maximum(np.abs(offset) - np.float32(position_threshold) * (size_a + size_b), np.float32(0))
    revised = shrunk * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


# --------------------------------------------------------------------------------------------------
# Colour crop — ImageCrops
# --------------------------------------------------------------------------------------------------


def color_crop(image: Image.Image, box: Sequence[float], mask: np.ndarray | None = None,
               bgcolor: str = "#999", crop: bool = True) -> Image.Image:
    """The colour classifier's input: the RGB image with non-mask pixels replaced by `bgcolor` (grey #999;
    "original" keeps them), cropped to the box (PIL rounds the box to integers). Without a mask the
    whole image is cropped."""
    from PIL import Image as PILImage

    image = image.convert("RGB")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (image.height, image.width):
            raise ValueError(f"mask shape {mask.shape} does not match the image (h, w) = {(image.height, image.width)}")
        blank = image.copy() if bgcolor == "original" else PILImage.new("RGB", image.size, color=bgcolor)
        image = PILImage.composite(image, blank, PILImage.fromarray(mask.astype(bool).astype(np.uint8) * 255, "L"))
    if crop:
        image = image.crop(tuple(float(v) for v in list(box)[:4]))
    return image


# --------------------------------------------------------------------------------------------------
# Clauses — evaluate()
# --------------------------------------------------------------------------------------------------


@dataclass
class ImageResult:
    correct: bool
    reason: str  # the failed clauses, one per line (empty when correct)
    detected: dict[str, list[Detection]]  # the kept detections per class


def evaluate_clauses(detected: Mapping[str, Sequence[Detection]], metadata: Mapping,
                     image: Image.Image | None = None, color_classifier: ColorClassifier | None = None,
                     position_threshold: float = 0.1) -> tuple[bool, str]:
    """(correct, reason) for one image from its filtered detections (`filter_detections`). Include clauses
    are ANDed, exclude clauses ORed; colour and position look only at the `count` most confident objects
    of the class. As upstream, every clause is checked (reasons collected) even after a failure; a colour
    clause is only classified when enough objects were found, and a position clause only when the colour
    (if any) matched."""
    correct = True
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for clause in metadata.get("include", []):
        name, count = clause["class"], clause["count"]
        found = list(detected.get(name, []))[:count]
        matched = True
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in clause:
                if color_classifier is None or image is None:
                    raise ValueError(f"clause {dict(clause)!r} needs a colour classifier and the image")
                colors = list(color_classifier.classify(image, found, name))
                hits = colors.count(clause["color"])
                if hits < count:
                    correct = matched = False
                    seen = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                    reasons.append(f"expected {clause['color']} {name}>={count}, found {hits} {clause['color']}; "
                                   f"and {seen}")
            if "position" in clause and matched:
                relation, target = clause["position"]
                if target >= len(groups):
                    raise ValueError(f"clause {dict(clause)!r} refers to include clause {target}, which does not "
                                     "precede it (upstream IndexError)")
                if groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for obj in found:
                        for other in groups[target]:
                            relations = relative_position(obj.box_xyxy, other.box_xyxy, position_threshold)
                            if relation not in relations:
                                correct = matched = False
                                reasons.append(f"expected {name} {relation} target, found "
                                               f"{' and '.join(sorted(relations))} target")
                                break
                        if not matched:
                            break
        groups.append(found if matched else None)
    for clause in metadata.get("exclude", []):
        name, count = clause["class"], clause["count"]
        n = len(detected.get(name, []))
        if n >= count:
            correct = False
            reasons.append(f"expected {name}<{count}, found {n}")
    return correct, "\n".join(reasons)


def evaluate_image(detections: Iterable[Detection], metadata: str | Mapping, image: Image.Image | None = None,
                   color_classifier: ColorClassifier | None = None, options: Options = Options()) -> ImageResult:
    """Filter the raw detections of one image by the prompt's tag, then check its clauses."""
    meta = parse_metadata(metadata)
    detected = filter_detections(detections, meta["tag"], options)
    correct, reason = evaluate_clauses(detected, meta, image, color_classifier, options.position_threshold)
    return ImageResult(correct, reason, detected)


# --------------------------------------------------------------------------------------------------
# Aggregation — summary_scores.py
# --------------------------------------------------------------------------------------------------


def task_scores(tags: Sequence[str], correct: Sequence[float]) -> dict[str, float]:
    """Tag -> fraction of correct images, tags in order of first appearance (pandas groupby sort=False).
    `correct` holds booleans or 1/0; NaN entries (images that failed to score) are left out."""
    if len(tags) != len(correct):
        raise ValueError(f"{len(tags)} tags but {len(correct)} results")
    sums: dict[str, list[float]] = {}
    for tag, value in zip(tags, correct):
        value = float(value)
        if np.isnan(value):
            sums.setdefault(tag, [])
            continue
        sums.setdefault(tag, []).append(value)
    return {tag: float(np.mean(values)) for tag, values in sums.items() if values}


def overall_score(scores: Mapping[str, float]) -> float | None:
    """Mean of the task scores (None when there is none)."""
    return float(np.mean(list(scores.values()))) if scores else None
