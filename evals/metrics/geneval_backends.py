"""GenEval model backends (Mask2Former instance segmentation, CLIP colour classifier) and the scoring glue.

- `Mask2FormerDetector` — transformers `Mask2FormerForUniversalSegmentation`, default weights
  `facebook/mask2former-swin-small-coco-instance`. **Named deviation**: the original uses the mmdetection 2.x
  checkpoint `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth` (mmdet's own
  training run); the transformers weights are the port of the Detectron2 Mask2Former Swin-S COCO instance
  model (same architecture and recipe, a different training run), so individual detections and scores
  differ. Pre- and post-processing follow the mmdet test pipeline, not transformers' image processor:
  resize keeping the aspect ratio to fit 1333 x 800 (`mmcv.imrescale`: scale = min(1333 / long, 800 / short),
  size rounded half up), bilinear, RGB normalised with ImageNet mean/std (0-255 scale), zero padding to a
  multiple of 32 at the bottom/right; mask logits upsampled to the padded size, cropped to the resized image,
  upsampled to the original size (bilinear, align_corners=False), then mmdet's `instance_postprocess`:
  softmax over classes without the no-object column, top 100 (query, class) pairs, mask = logit > 0,
  score = class probability x mean sigmoid inside the mask, box = tight box of the mask (+1 on x2/y2).
  Minor deviation: the resize is torch's bilinear rounded to uint8 rather than OpenCV's fixed-point one
  (differences of at most one grey level).
- `ClipColorClassifier` — open_clip ViT-L/14 with OpenAI weights from a local file (model name
  `ViT-L-14-quickgelu`: the OpenAI weights need QuickGELU, which open_clip turns on only for its own 'openai'
  tag). Zero-shot over the 10 colours with the original's 3 templates (clip_benchmark 1.4.0's
  `zero_shot_classifier`: per colour, mean of the L2-normalised template embeddings, renormalised; logits
  100 x cos), on `geneval.color_crop` (box crop, non-mask pixels grey #999). On CUDA the encoders run under
  fp16 autocast as upstream (`amp`); on CPU in fp32 (a numerical deviation only).
- `geneval_kind(settings, manifest, cell)` — the `evals.score` scorer kind.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from evals.metrics import geneval as ge
from evals.metrics.compbench import Detection, MissingWeightsError, load_pretrained
from evals.metrics.compbench_scorers import check_not_all_failed

log = logging.getLogger(__name__)

DEFAULT_DETECTOR = "facebook/mask2former-swin-small-coco-instance"
ORIGINAL_DETECTOR = "mmdet 2.x mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth"
DEFAULT_CLIP_MODEL = "ViT-L-14-quickgelu"
CLIP_HUB_FILE = "open_clip_pytorch_model.bin from the hub repo timm/vit_large_patch14_clip_224.openai"
SCORER_NAME = "geneval_mask2former_clip"

# mmdet test pipeline of mask2former_*_lsj_8x2_50e_coco
MMDET_SCALE = (1333, 800)  # (long edge, short edge)
MMDET_SIZE_DIVISOR = 32
MMDET_MEAN = (123.675, 116.28, 103.53)
MMDET_STD = (58.395, 57.12, 57.375)
MMDET_MAX_PER_IMAGE = 100

# transformers' COCO names that differ from GenEval's object_names.txt at the same index
_COCO_ALIASES = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch", "pottedplant": "potted plant",
                 "diningtable": "dining table", "tvmonitor": "tv", "mouse": "computer mouse",
                 "remote": "tv remote", "keyboard": "computer keyboard", "hair dryer": "hair drier"}


def load_image(path: Path) -> Image.Image:
    """As upstream: EXIF orientation applied, RGB (an alpha channel is dropped, not composited)."""
    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


# --------------------------------------------------------------------------------------------------
# Mask2Former (mmdet test pipeline and instance post-processing)
# --------------------------------------------------------------------------------------------------


def mmdet_rescale_size(width: int, height: int, scale: tuple[int, int] = MMDET_SCALE) -> tuple[int, int]:
    """(w, h) of `mmcv.imrescale(img, (1333, 800))`: the largest size that fits 1333 on the long and 800 on
    the short edge, keeping the aspect ratio, each side rounded half up."""
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def mmdet_preprocess(image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
    """(1, 3, Hp, Wp) float32 input and the resized (h, w) before padding."""
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)[None].float()
    new_w, new_h = mmdet_rescale_size(image.width, image.height)
    if (new_w, new_h) != (image.width, image.height):
        rgb = F.interpolate(rgb, size=(new_h, new_w), mode="bilinear", align_corners=False)
        rgb = rgb.round().clamp(0, 255)  # OpenCV returns uint8
    mean = torch.tensor(MMDET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(MMDET_STD).view(1, 3, 1, 1)
    rgb = (rgb - mean) / std
    pad_h = math.ceil(new_h / MMDET_SIZE_DIVISOR) * MMDET_SIZE_DIVISOR - new_h
    pad_w = math.ceil(new_w / MMDET_SIZE_DIVISOR) * MMDET_SIZE_DIVISOR - new_w
    return F.pad(rgb, (0, pad_w, 0, pad_h), value=0.0), (new_h, new_w)


def masks_to_boxes_plus1(masks: torch.Tensor) -> torch.Tensor:
    """mmdet `mask2bbox`: (x_min, y_min, x_max + 1, y_max + 1) of each bool (N, H, W) mask, float32; zeros for
    an empty mask."""
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # (N, W), (N, H)
    width, height = cols.shape[1], rows.shape[1]
    x0, y0 = cols.float().argmax(dim=1), rows.float().argmax(dim=1)  # first True
    x1 = width - cols.flip(1).float().argmax(dim=1)  # last True + 1
    y1 = height - rows.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes * (cols.any(dim=1) & rows.any(dim=1))[:, None].float()


def instance_postprocess(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                         max_per_image: int = MMDET_MAX_PER_IMAGE, resize=None):
    """mmdet `MaskFormerFusionHead.instance_postprocess` for one image: class_logits (Q, C+1), mask_logits
    (Q, h, w) -> (scores, labels, boxes, bool masks), in top-k order. `resize` maps mask logits of some
    queries to the output size (mmdet resizes every query first; resizing only the selected ones gives the
    same numbers with less memory); None: `mask_logits` are already at the output size."""
    num_classes = class_logits.shape[-1] - 1
    scores = F.softmax(class_logits.float(), dim=-1)[:, :-1]
    k = min(max_per_image, scores.numel())
    top_scores, top = scores.flatten().topk(k, sorted=False)
    labels = top % num_classes
    queries, inverse = torch.unique(top // num_classes, return_inverse=True)
    masks = mask_logits[queries].float()
    masks = (masks if resize is None else resize(masks))[inverse]
    binary = masks > 0
    mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    return top_scores * mask_scores, labels, masks_to_boxes_plus1(binary), binary


class Mask2FormerDetector:
    """Mask2Former instance segmentation returning `geneval.MaskedDetection`s in the 80-class space of
    object_names.txt (class index i -> name i), boxes and masks in the pixels of the given image."""

    name = "mask2former_swin_small_coco_instance"

    def __init__(self, model, object_names: Sequence[str] | None = None, device: str | torch.device = "cpu",
                 fingerprint: str | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.object_names = list(object_names) if object_names is not None else ge.load_object_names()
        self.fingerprint = fingerprint
        self._check_labels()

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_DETECTOR, **kwargs) -> Mask2FormerDetector:
        from transformers import Mask2FormerForUniversalSegmentation

        from pixart.checkpoints import fingerprint_state

        model = load_pretrained(Mask2FormerForUniversalSegmentation.from_pretrained, name_or_path,
                                "GenEval Mask2Former detector")
        return cls(model, fingerprint=kwargs.pop("fingerprint", None) or fingerprint_state(model.state_dict()),
                   **kwargs)

    def _check_labels(self):
        n = self.model.config.num_labels
        if n != len(self.object_names):
            raise ValueError(f"detector has {n} classes, GenEval needs the {len(self.object_names)} COCO classes of "
                             "object_names.txt (a COCO *instance* Mask2Former)")
        names = [str(self.model.config.id2label.get(i, "")) for i in range(n)]
        if all(name.startswith("LABEL_") for name in names):
            return  # generic labels (random/test configs): index order is assumed
        differ = [(i, a, b) for i, (a, b) in enumerate(zip(names, self.object_names))
                  if _COCO_ALIASES.get(a.lower().replace("-", " ").strip(), a.lower().replace("-", " ").strip()) != b]
        if differ:
            log.warning("Mask2Former label names differ from object_names.txt at %d indices (first: %s); "
                        "classes are mapped by index", len(differ), differ[:3])

    @torch.no_grad()
    def detect(self, image: Image.Image) -> list[ge.MaskedDetection]:
        image = image.convert("RGB")
        pixels, (new_h, new_w) = mmdet_preprocess(image)
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=pixels.to(self.device, dtype))
        padded = pixels.shape[-2:]

        def resize(masks: torch.Tensor) -> torch.Tensor:  # (n, h/4, w/4) -> (n, H, W) as mmdet
            masks = F.interpolate(masks[None], size=padded, mode="bilinear", align_corners=False)
            masks = masks[:, :, :new_h, :new_w]
            return F.interpolate(masks, size=(image.height, image.width), mode="bilinear", align_corners=False)[0]

        scores, labels, boxes, binary = instance_postprocess(out.class_queries_logits[0].float(),
                                                             out.masks_queries_logits[0], resize=resize)
        order = torch.argsort(scores.cpu(), descending=True, stable=True).tolist()
        scores, labels, boxes, binary = scores.cpu(), labels.cpu(), boxes.cpu(), binary.cpu().numpy()
        return [ge.MaskedDetection(self.object_names[int(labels[i])], float(scores[i]),
                                   tuple(float(v) for v in boxes[i]), binary[i]) for i in order]


# --------------------------------------------------------------------------------------------------
# CLIP colour classifier
# --------------------------------------------------------------------------------------------------


class ClipColorClassifier:
    """Zero-shot colour of each object crop with an open_clip model (clip_benchmark 1.4.0 arithmetic)."""

    def __init__(self, model, preprocess, tokenizer, device: str | torch.device = "cpu", amp: bool | None = None,
                 bgcolor: str = "#999", crop: bool = True, batch_size: int = 16, name: str = "clip_vitl14_openai",
                 fingerprint: str | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess, self.tokenizer = preprocess, tokenizer
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp)
        self.bgcolor, self.crop, self.batch_size = bgcolor, crop, batch_size
        self.name, self.fingerprint = name, fingerprint
        self._classifiers: dict[str, torch.Tensor] = {}

    @classmethod
    def from_file(cls, weights: str | Path | None, model_name: str = DEFAULT_CLIP_MODEL, *,
                  config_dir: str | Path | None = None, device: str | torch.device = "cpu",
                  **kwargs) -> ClipColorClassifier:
        import open_clip

        from evals.files import sha256_file

        if config_dir:
            open_clip.add_model_config(str(config_dir))
        if weights is None or not Path(weights).expanduser().is_file():
            raise MissingWeightsError(
                f"GenEval colour classifier: CLIP weights file {str(weights)!r} not found. Put the OpenAI ViT-L/14 "
                f"weights there ({CLIP_HUB_FILE}; loaded as open_clip {model_name!r}) and set `clip_weights` to "
                "that file; named tags such as 'openai' need the internet and are not used")
        weights = Path(weights).expanduser()
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(weights),
                                                                     device=torch.device(device))
        name = "clip_vitl14_openai" if model_name == DEFAULT_CLIP_MODEL else f"clip_{model_name}"
        return cls(model, preprocess, open_clip.get_tokenizer(model_name), device=device, name=name,
                   fingerprint=sha256_file(weights)[:16], **kwargs)

    def _autocast(self):
        return torch.autocast("cuda", enabled=self.amp and self.device.type == "cuda")

    @torch.no_grad()
    def classifier(self, classname: str) -> torch.Tensor:
        """(D, 10) zero-shot weights for objects of `classname` (cached per class, as upstream)."""
        if classname not in self._classifiers:
            with self._autocast():
                columns = []
                for color in ge.COLORS:
                    texts = [t.format(c=color) for t in ge.color_templates(classname)]
                    emb = self.model.encode_text(self.tokenizer(texts).to(self.device))
                    emb = F.normalize(emb, dim=-1).mean(dim=0)
                    emb /= emb.norm()
                    columns.append(emb)
                self._classifiers[classname] = torch.stack(columns, dim=1).to(self.device)
        return self._classifiers[classname]

    @torch.no_grad()
    def logits(self, image: Image.Image, objects: Sequence[Detection], classname: str) -> torch.Tensor:
        weights = self.classifier(classname)
        crops = [ge.color_crop(image, obj.box_xyxy, getattr(obj, "mask", None), self.bgcolor, self.crop)
                 for obj in objects]
        out = []
        for start in range(0, len(crops), self.batch_size):
            pixels = torch.stack([self.preprocess(c) for c in crops[start:start + self.batch_size]]).to(self.device)
            with self._autocast():
                feats = F.normalize(self.model.encode_image(pixels), dim=-1)
                out.append((100.0 * feats @ weights).float().cpu())
        return torch.cat(out) if out else torch.zeros((0, len(ge.COLORS)))

    def classify(self, image: Image.Image, objects: Sequence[Detection], classname: str) -> list[str]:
        return [ge.COLORS[int(i)] for i in self.logits(image, objects, classname).argmax(1)]


# --------------------------------------------------------------------------------------------------
# Scoring glue (evals.score kind)
# --------------------------------------------------------------------------------------------------


def prompt_metadata() -> dict[str, dict]:
    """Stripped prompt text -> GenEval metadata, from the shipped, hash-checked evaluation_metadata.jsonl."""
    from evals.benchmarks.protocols import load_protocol

    protocol = load_protocol("geneval")
    path = protocol.shipped_file(protocol.subset(None)[1])
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            table[entry["prompt"].strip()] = {k: v for k, v in entry.items() if k != "prompt"}
    return table


def _row_metadata(row, table: dict[str, dict]) -> dict:
    prompt = str(row.prompt).strip()
    if prompt in table:
        return ge.parse_metadata(table[prompt])
    raw = getattr(row, "metadata", None)
    if isinstance(raw, str) and raw.strip() not in ("", "{}"):
        return ge.parse_metadata(raw)  # a prompt outside the shipped set that carries its own clauses
    raise KeyError(f"prompt {prompt!r} is not a GenEval prompt (evaluation_metadata.jsonl) and the manifest row "
                   "carries no tag/include metadata")


def load_detector(settings: dict) -> ge.Detector:
    """settings: detector_weights (local folder or HF id, default facebook/mask2former-swin-small-coco-instance;
    offline the id must be in the HF cache), device; `detector: shapes_oracle` = the shapes world's exact scene
    parser instead (evals/shapes/oracle.py)."""
    from pixart.runtime import pick_device

    if settings.get("detector") == "shapes_oracle":
        from evals.shapes.oracle import ShapesGenevalOracle

        return ShapesGenevalOracle()

    return Mask2FormerDetector.from_pretrained(settings.get("detector_weights") or DEFAULT_DETECTOR,
                                               device=pick_device(settings.get("device", "auto")))


def load_color_classifier(settings: dict) -> ge.ColorClassifier:
    """settings: clip_weights (local file, required), clip_model (default ViT-L-14-quickgelu), clip_config_dir
    (extra open_clip model configs), device, amp (default: on for CUDA), bgcolor, crop; `color_classifier:
    shapes_oracle` = the shapes world's exact scene parser instead."""
    from pixart.runtime import pick_device

    if settings.get("color_classifier") == "shapes_oracle":
        from evals.shapes.oracle import ShapesGenevalOracle

        return ShapesGenevalOracle()

    options = ge.Options.from_settings(settings)
    return ClipColorClassifier.from_file(settings.get("clip_weights"), settings.get("clip_model") or DEFAULT_CLIP_MODEL,
                                         config_dir=settings.get("clip_config_dir"),
                                         device=pick_device(settings.get("device", "auto")), amp=settings.get("amp"),
                                         bgcolor=options.bgcolor, crop=options.crop)


def deviations(detector, color_classifier) -> list[str]:
    """The named deviations from the original scorer that apply to these backends."""
    out = []
    if isinstance(detector, Mask2FormerDetector):
        out += [f"detector weights: transformers Mask2FormerForUniversalSegmentation "
                f"({getattr(detector.model.config, '_name_or_path', '') or DEFAULT_DETECTOR}; default "
                f"{DEFAULT_DETECTOR}, the port of Detectron2's Swin-S COCO instance model) instead of "
                f"{ORIGINAL_DETECTOR}",
                "detector resize: torch bilinear rounded to uint8 instead of OpenCV INTER_LINEAR"]
    else:
        out.append(f"detector: {getattr(detector, 'name', type(detector).__name__)} instead of Mask2Former")
    if isinstance(color_classifier, ClipColorClassifier):
        if not color_classifier.amp:
            out.append("CLIP colour classifier in fp32 (upstream: CUDA fp16 autocast)")
    else:
        out.append(f"colour classifier: {getattr(color_classifier, 'name', type(color_classifier).__name__)} "
                   "instead of CLIP ViT-L/14")
    return out


def evaluate_cell(manifest: pd.DataFrame, cell: Path, detector: ge.Detector, color_classifier: ge.ColorClassifier,
                  options: ge.Options = ge.Options(), table: dict[str, dict] | None = None):
    """Per manifest row: (tag or None, ImageResult or None, error or None)."""
    table = prompt_metadata() if table is None else table
    out, n_unreadable = [], 0
    for row in manifest.itertuples():
        tag = None
        try:
            meta = _row_metadata(row, table)
            tag = meta["tag"]
            try:
                image = load_image(Path(cell) / row.file)
            except (OSError, SyntaxError, ValueError) as err:
                n_unreadable += 1
                out.append((tag, None, f"{row.file}: cannot read image: {err}"))
                continue
            result = ge.evaluate_image(detector.detect(image), meta, image, color_classifier, options)
            out.append((tag, result, None))
        except torch.OutOfMemoryError:
            raise  # the job's resources, not this image: a retry (or a smaller batch) decides, not a NaN
        except Exception as err:  # noqa: BLE001 - a failed image is counted and named, never dropped
            out.append((tag, None, f"{row.file}: {err.__class__.__name__}: {err}"))
    check_not_all_failed([e for _, r, e in out if r is None and "cannot read image" not in e], len(out) - n_unreadable)
    return out


def _prompt_accuracy(manifest: pd.DataFrame, scores: np.ndarray) -> float | None:
    """summary_scores.py's "% correct prompts": fraction of prompts with at least one correct image (prompts
    whose images all failed are left out)."""
    key = manifest["prompt_id"] if "prompt_id" in manifest else manifest["prompt"]
    frame = pd.DataFrame({"prompt": key.to_numpy(), "score": scores}).dropna()
    return float(frame.groupby("prompt")["score"].max().mean()) if len(frame) else None


def geneval_kind(settings: dict, manifest: pd.DataFrame, cell: Path, *, detector: ge.Detector | None = None,
                 color_classifier: ge.ColorClassifier | None = None):
    """Per-image scores (1.0 correct, 0.0 incorrect, NaN failed), errors and the scorer's metadata with the
    GenEval task scores and Overall (mean of the task scores; the headline number, not the mean of the
    per-image scores, which is summary_scores.py's "% correct images"). `detector`/`color_classifier`
    replace the models named in `settings` (tests, oracle backends)."""
    started = time.perf_counter()
    options = ge.Options.from_settings(settings)
    detector = load_detector(settings) if detector is None else detector
    color_classifier = load_color_classifier(settings) if color_classifier is None else color_classifier
    results = evaluate_cell(manifest, cell, detector, color_classifier, options)
    scores = np.array([np.nan if r is None else float(r.correct) for _, r, _ in results], dtype=float)
    errors = [e for _, _, e in results]
    tags = [t if t is not None else "unknown" for t, _, _ in results]
    per_task = ge.task_scores(tags, scores)
    per_task.pop("unknown", None)
    counts = {}
    for tag, score in zip(tags, scores):
        entry = counts.setdefault(tag, {"correct": 0, "n": 0, "n_failed": 0})
        if np.isnan(score):
            entry["n_failed"] += 1
        else:
            entry["n"] += 1
            entry["correct"] += int(score)
    names = (getattr(detector, "name", type(detector).__name__),
             getattr(color_classifier, "name", type(color_classifier).__name__))
    prints = (getattr(detector, "fingerprint", None), getattr(color_classifier, "fingerprint", None))
    standard = isinstance(detector, Mask2FormerDetector) and isinstance(color_classifier, ClipColorClassifier)
    meta = {
        "scorer": SCORER_NAME if standard else "geneval_" + "_".join(dict.fromkeys(names)),  # one backend: once
        "weights_fingerprint": "+".join(p or "none" for p in prints),
        "higher_is_better": True,
        "task_scores": per_task,
        "overall": ge.overall_score(per_task),
        "task_counts": counts,
        "image_accuracy": float(np.nanmean(scores)) if np.isfinite(scores).any() else None,
        "prompt_accuracy": _prompt_accuracy(manifest, scores),
        "detector": names[0],
        "color_classifier": names[1],
        "options": {k: getattr(options, k) for k in ge.Options.__dataclass_fields__},
        "deviations": deviations(detector, color_classifier),
        "scoring_seconds": round(time.perf_counter() - started, 3),
    }
    if len(per_task) < len(ge.TAGS):
        meta["missing_tasks"] = [t for t in ge.TAGS if t not in per_task]
    return scores, errors, meta
