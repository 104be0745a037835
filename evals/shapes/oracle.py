"""The exact scene parser of the shapes world (the "oracle"), behind the T2I-CompBench backend interfaces.

`parse_scene(image)` recovers the objects of an image of the shapes world:

1. Pixels: each pixel takes the nearest of the reference colours (background, ink, palette). Foreground =
   not nearest to the background, i.e. the midpoint rule, so the bilinear blends of the detector frame
   (`compbench.to_detector_frame`) split halfway and a silhouette keeps its size.
2. Objects: 4-connected components of the foreground (scipy.ndimage.label); stripes and dots are ink, which
   is foreground, so a textured object stays one component. Components under MIN_AREA_FRACTION of the
   image are noise and dropped.
3. Per object: shape = the world shape whose mask drawn in the component's box (`world.shape_mask`, the
   renderer's own masks) has the highest IoU with the silhouette; None under MIN_SHAPE_IOU, and None for
   anything the world never draws: a box that is not square within MAX_ASPECT_GAP (every world shape fills
   a square box), or a side outside SIDE_RANGE of the image side (half the smallest to 1.3 x the largest
   size), so a streak, a speck or a frame-filling smear is no object of the world. Colour = the majority
   palette colour among its pixels within COLOUR_TOLERANCE of a palette colour (blends excluded), if it
   covers at least MIN_COLOUR_SHARE of the silhouette's pixels that are not ink (else None: a grey object
   with a few red pixels is not red; blended edges count against it, so in the detector frame of a 20-32 px
   image a thin object can lose its colour: the rules read colour from native images only);
   texture = plain when under PLAIN_INK_MAX of its pixels are ink, striped when some row at least half the
   box wide is at least STRIPE_ROW_MIN ink, else dotted; size = box side / image side against the midpoints
   of world.SIZES.

Backends (one object, `ShapesOracle`, name "shapes_oracle", a `fingerprint` over everything that decides
an answer):
- detector (`evals.metrics.compbench.Detector`): `detect(image, labels)` -> one Detection per object whose
  shape is among `labels`, score 1.0, box (x0, y0, x1, y1) in the image's pixels (x1/y1 exclusive edges),
  largest box first.
- VQA (`evals.metrics.blip_vqa.BlipVqa`): a question is a noun phrase + "?"; its words name attributes
  (shape, colour, size, texture; other words such as articles are ignored). P(yes) = 1.0 when one parsed
  object has every named attribute, else MISS_PROBABILITY = 0.0 (the product rule then gives 0 for the
  image). A phrase naming no attribute ("the top?") asks whether there is any object.
- GenEval (`ShapesGenevalOracle`, same name and fingerprint; `evals.metrics.geneval`'s Detector and
  ColorClassifier) for the world's GenEval prompts (`evals.shapes.geneval`): every parsed object with a world
  shape is a detection of that class, score 1.0, its box (no mask); its colour is the parsed palette colour
  of the object whose box overlaps the detection's most (NO_PALETTE_COLOUR when it has none; a detection
  that overlaps no parsed object is refused, since it cannot have come from this parser).

Input: a PIL image (any mode; converted to RGB) or an H x W x 3 (or 4) uint8 array, at least 8 px a side.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from evals.metrics import compbench as cb
from evals.metrics import geneval as ge
from evals.shapes import world
from evals.versions import BACKEND_VERSIONS

ORACLE_VERSION = BACKEND_VERSIONS["shapes_oracle"]  # its history is there
REFERENCE_NAMES = ("background", "ink", *world.COLOURS)
BACKGROUND_INDEX, INK_INDEX, FIRST_PALETTE_INDEX = 0, 1, 2
REFERENCE_RGB = np.array([world.BACKGROUND, world.INK, *world.COLOURS.values()], np.float32)
COLOUR_TOLERANCE = 60.0  # RGB distance; palette colours are >= 70 apart, edge blends are farther
MIN_AREA_FRACTION = 0.004
MIN_SHAPE_IOU = 0.5
MAX_ASPECT_GAP = (2, 0.15)  # |width - height| <= max(2 px, 15 % of the longer side): square within rounding
SIDE_RANGE = (0.5 * min(world.SIZES.values()), 1.3 * max(world.SIZES.values()))  # x image side
MIN_COLOUR_SHARE = 0.5
MIN_IMAGE_SIDE = 8
PLAIN_INK_MAX = 0.04
STRIPE_ROW_MIN = 0.75
MISS_PROBABILITY = 0.0
NO_PALETTE_COLOUR = "black"  # GenEval's name for an object of ink or blends only; no prompt asks for it
_SIZE_ORDER = sorted(world.SIZES, key=world.SIZES.get)
SIZE_THRESHOLDS = tuple(math.sqrt(world.SIZES[a] * world.SIZES[b]) for a, b in zip(_SIZE_ORDER, _SIZE_ORDER[1:]))

VOCABULARY = {**{s: ("shape", s) for s in world.SHAPES}, **{c: ("colour", c) for c in world.COLOURS},
              **{z: ("size", z) for z in world.SIZES}, **{t: ("texture", t) for t in world.TEXTURES}}


@dataclass(frozen=True)
class ParsedObject:
    shape: str | None  # None: no world shape fits (IoU < MIN_SHAPE_IOU), or a box the world never draws
    colour: str | None  # None: no palette colour covers MIN_COLOUR_SHARE of the object
    size: str
    texture: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 pixels, x1/y1 exclusive
    area: int
    shape_iou: float

    def attribute(self, name: str) -> str | None:
        return getattr(self, name)


def _as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"the shapes oracle reads RGB images: a PIL image or an H x W x 3 (or 4) uint8 array; got "
                         f"{image.dtype} of shape {image.shape} (convert float images with "
                         f"(x * 255).round().astype(np.uint8), greyscale with PIL's .convert('RGB'))")
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise ValueError(f"the shapes oracle needs images of at least {MIN_IMAGE_SIDE} px a side; got "
                         f"{image.shape[1]} x {image.shape[0]}")
    return image[..., :3]


def nearest_reference(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index into REFERENCE_NAMES, distance to it) per pixel of an H x W x 3 uint8 array."""
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    # distances per distinct colour: a rendered or resized image has a few thousand, not 230k
    colours, inverse = np.unique(packed.ravel(), return_inverse=True)
    values = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1).astype(np.float32)
    distances = np.linalg.norm(values[:, None, :] - REFERENCE_RGB[None], axis=-1)
    nearest = distances.argmin(axis=1)
    distance = distances[np.arange(len(colours)), nearest]
    return nearest[inverse].reshape(rgb.shape[:2]), distance[inverse].reshape(rgb.shape[:2])


def drawable_box(width: int, height: int, image_side: int) -> bool:
    """Could the world have drawn an object in a box of this size? Square within rounding, side in SIDE_RANGE."""
    pixels, share = MAX_ASPECT_GAP
    side = max(width, height)
    return (abs(width - height) <= max(pixels, share * side)
            and SIDE_RANGE[0] * image_side <= side <= SIDE_RANGE[1] * image_side)


def classify_shape(silhouette: np.ndarray) -> tuple[str | None, float]:
    """(best world shape by IoU with the mask drawn in the same box, that IoU)."""
    height, width = silhouette.shape
    best, best_iou = None, 0.0
    for shape in world.SHAPES:
        template = world.shape_mask(shape, width, height)
        iou = float((template & silhouette).sum() / (template | silhouette).sum())
        if iou > best_iou:
            best, best_iou = shape, iou
    return (best if best_iou >= MIN_SHAPE_IOU else None), best_iou


def classify_texture(silhouette: np.ndarray, ink: np.ndarray) -> str:
    if ink.sum() < PLAIN_INK_MAX * silhouette.sum():
        return "plain"
    widths = silhouette.sum(axis=1)
    wide = widths >= max(3, silhouette.shape[1] / 2)
    row_ink = ink.sum(axis=1)[wide] / widths[wide]
    return "striped" if row_ink.size and row_ink.max() >= STRIPE_ROW_MIN else "dotted"


def classify_size(side: int, image_side: int) -> str:
    extent = side / image_side
    return _SIZE_ORDER[sum(extent >= t for t in SIZE_THRESHOLDS)]


def parse_scene(image: Image.Image | np.ndarray) -> list[ParsedObject]:
    """The objects of a shapes-world image, largest box first (then top to bottom, left to right)."""
    rgb = _as_rgb_array(image)
    nearest, distance = nearest_reference(rgb)
    confident = distance < COLOUR_TOLERANCE
    labels, _ = ndimage.label(nearest != BACKGROUND_INDEX)
    image_side = min(rgb.shape[:2])
    min_area = MIN_AREA_FRACTION * rgb.shape[0] * rgb.shape[1]
    objects = []
    for index, window in enumerate(ndimage.find_objects(labels), 1):
        silhouette = labels[window] == index
        area = int(silhouette.sum())
        if area < min_area:
            continue
        rows, cols = window
        box = (cols.start, rows.start, cols.stop, rows.stop)
        shape, iou = classify_shape(silhouette)
        if not drawable_box(box[2] - box[0], box[3] - box[1], image_side):
            shape = None
        kinds = nearest[window][silhouette & confident[window]]
        palette_votes = np.bincount(kinds[kinds >= FIRST_PALETTE_INDEX], minlength=len(REFERENCE_NAMES))
        ink = silhouette & confident[window] & (nearest[window] == INK_INDEX)
        colour_pixels = area - int(ink.sum())
        colour = (REFERENCE_NAMES[int(palette_votes.argmax())]
                  if palette_votes.any() and palette_votes.max() >= MIN_COLOUR_SHARE * colour_pixels else None)
        size = classify_size(max(box[2] - box[0], box[3] - box[1]), image_side)
        objects.append(ParsedObject(shape, colour, size, classify_texture(silhouette, ink), box, area, iou))
    return sorted(objects, key=lambda o: (-(o.box[2] - o.box[0]) * (o.box[3] - o.box[1]), o.box[1], o.box[0]))


def question_attributes(question: str) -> dict[str, set[str]]:
    """Attribute -> values a VQA question names, e.g. "a large red circle?" -> size large, colour red,
    shape circle (normalised as BLIP does; unknown words ignored)."""
    named: dict[str, set[str]] = {}
    for word in cb.normalize_question(question).rstrip("?").split():
        if word in VOCABULARY:
            attribute, value = VOCABULARY[word]
            named.setdefault(attribute, set()).add(value)
    return named


def answer(objects: Sequence[ParsedObject], question: str) -> float:
    """P(yes): 1.0 if some object has every attribute the question names, else MISS_PROBABILITY."""
    named = question_attributes(question)
    hit = any(all({o.attribute(a)} == values for a, values in named.items()) for o in objects)
    return 1.0 if hit else MISS_PROBABILITY


def _fingerprint() -> str:
    spec = {"version": ORACLE_VERSION, "shapes": world.SHAPES, "colours": world.COLOURS,
            "background": world.BACKGROUND, "ink": world.INK, "sizes": world.SIZES,
            "tolerance": COLOUR_TOLERANCE, "min_area": MIN_AREA_FRACTION, "min_iou": MIN_SHAPE_IOU,
            "aspect": MAX_ASPECT_GAP, "sides": SIDE_RANGE, "colour_share": MIN_COLOUR_SHARE,
            "plain_ink_max": PLAIN_INK_MAX, "stripe_row_min": STRIPE_ROW_MIN, "miss": MISS_PROBABILITY}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class ShapesOracle:
    """Detector and VQA backend of the shapes world (see the module docstring)."""

    name = "shapes_oracle"
    fingerprint = _fingerprint()

    def detect(self, image: Image.Image, labels: list[str]) -> list[cb.Detection]:
        wanted = set(labels)
        return [cb.Detection(o.shape, 1.0, tuple(float(v) for v in o.box))
                for o in parse_scene(image) if o.shape in wanted]

    def question_probabilities(self, images: Sequence[Image.Image], questions: Sequence[Sequence[str]],
                               np_num: int = cb.NP_NUM_CURRENT) -> list[list[float]]:
        """Per image, P(yes) of its first `np_num` questions (BlipVqa's contract)."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} question lists")
        out = []
        for image, asked in zip(images, questions):
            objects = parse_scene(image)
            out.append([answer(objects, q) for q in list(asked)[:np_num]])
        return out

    def image_scores(self, images: Sequence[Image.Image], questions: Sequence[Sequence[str]],
                     np_num: int = cb.NP_NUM_CURRENT) -> list[float]:
        """T2I-CompBench BLIP-VQA score per image (compbench.blip_vqa_image_score)."""
        return [cb.blip_vqa_image_score(p, np_num) for p in self.question_probabilities(images, questions, np_num)]


class ShapesGenevalOracle:
    """GenEval's detector and colour classifier of the shapes world (see the module docstring)."""

    name = ShapesOracle.name
    fingerprint = ShapesOracle.fingerprint

    def detect(self, image: Image.Image) -> list[ge.MaskedDetection]:
        return [ge.MaskedDetection(o.shape, 1.0, tuple(float(v) for v in o.box))
                for o in parse_scene(image) if o.shape is not None]

    def classify(self, image: Image.Image, objects: Sequence[cb.Detection], classname: str) -> list[str]:
        """The parsed colour of each detection: that of the parsed object whose box overlaps it most."""
        parsed = parse_scene(image)
        colours = []
        for d in objects:
            overlaps = [(_box_iou(d.box_xyxy, o.box), o) for o in parsed]
            best_iou, best = max(overlaps, key=lambda pair: pair[0], default=(0.0, None))
            if best is None or best_iou <= 0:
                raise ValueError(f"shapes_oracle colour classifier: detection {d.label} at {d.box_xyxy} overlaps no "
                                 f"object of the image; pair this classifier with detector: shapes_oracle")
            colours.append(best.colour or NO_PALETTE_COLOUR)
        return colours


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
