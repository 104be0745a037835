"""Detector backends for the T2I-CompBench 2D/3D spatial and numeracy rules (`compbench.Detector`).

Callers pass the image already in the detector frame (`compbench.to_detector_frame`); boxes come back in
that image's pixels, sorted by score (highest first), because the rules take "the first detection of a
label".

- `Owlv2Detector` (default backend, a documented deviation): open-vocabulary OWLv2 queried with the object
  nouns of the prompt. Its scores are calibrated differently from UniDet's (typically 0.1-0.5 where UniDet
  gives > 0.5), and the rules weight confidences by 0.25, so absolute numbers are not comparable with the
  published UniDet ones; name the backend next to every number.
- `UniDetDetector`: the original UniDet (detectron2) — RS200 for 2D spatial, R50 for 3D spatial and
  numeracy — when detectron2 and the UniDet code are installed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image

from evals.metrics.compbench import Detection, load_pretrained

DEFAULT_OWLV2 = "google/owlv2-base-patch16-ensemble"


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _box_iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    inter = (torch.minimum(box[2:], boxes[:, 2:]) - torch.maximum(box[:2], boxes[:, :2])).clamp(min=0).prod(dim=1)
    return inter / (_area(box) + _area(boxes) - inter).clamp(min=1e-9)


def nms_per_label(scores: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, iou: float) -> list[int]:
    """Greedy per-label NMS, indices in descending score order (plain torch: torchvision's compiled nms is
    not available on every install). UniDet's Cascade R-CNN applies per-class NMS too; OWLv2 does not."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    kept: list[int] = []
    for i in order:
        same = [k for k in kept if labels[k] == labels[i]]
        if not same or _box_iou(boxes[i], boxes[same]).max() <= iou:
            kept.append(i)
    return kept


class Owlv2Detector:
    """OWLv2 with the prompt's object nouns as text queries; one label per box (its best query)."""

    name = "owlv2_base_patch16_ensemble"

    def __init__(self, model, processor, threshold: float = 0.1, nms_iou: float | None = 0.5,
                 device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_OWLV2, **kwargs) -> Owlv2Detector:
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        what = "OWLv2 detector (T2I-CompBench spatial/numeracy)"
        model = load_pretrained(Owlv2ForObjectDetection.from_pretrained, name_or_path, what)
        processor = load_pretrained(Owlv2Processor.from_pretrained, name_or_path, what)
        return cls(model, processor, **kwargs)

    @torch.no_grad()
    def detect(self, image: Image.Image, labels: list[str]) -> list[Detection]:
        if not labels:
            return []
        image = image.convert("RGB")
        inputs = self.processor(text=[list(labels)], images=image, return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        # OWLv2 pads to a square; target size (h, w) maps boxes back to this image's pixels.
        result = self.processor.image_processor.post_process_object_detection(
            outputs, threshold=self.threshold, target_sizes=[(image.height, image.width)]
        )[0]
        scores, label_ids, boxes = result["scores"].cpu(), result["labels"].cpu(), result["boxes"].cpu().float()
        if self.nms_iou is None:
            order = torch.argsort(scores, descending=True, stable=True).tolist()
        else:
            order = nms_per_label(scores, label_ids, boxes, self.nms_iou)
        w, h = image.size
        return [
            Detection(labels[label_ids[i]], float(scores[i]), (
                float(boxes[i, 0].clamp(0, w)), float(boxes[i, 1].clamp(0, h)),
                float(boxes[i, 2].clamp(0, w)), float(boxes[i, 3].clamp(0, h)),
            ))
            for i in order
        ]


UNIDET_CONFIGS = {
    "RS200": "Unified_learned_OCIM_RS200_6x+2x",  # 2D spatial (2D_spatial_eval.py)
    "R50": "Unified_learned_OCIM_R50_6x+2x",  # 3D spatial and numeracy
}
UNIDET_SCORE_THRESHOLD = 0.5


class UniDetDetector:
    """The original UniDet via detectron2 (closed vocabulary: 722 unified labels, `labels` is ignored).

    Needs: detectron2 (the protocol pinned commit 5aeb252b), the UniDet code as shipped in T2I-CompBench
    (`UniDet_eval/`, passed as `unidet_root`, which holds `experts/obj_detection/unidet`, the configs and
    `dataset/detection_features.pt` with the label names), and the weights
    `experts/expert_weights/<config>.pth` (from HF `shikunl/prismer`, folder expert_weights)."""

    def __init__(self, unidet_root: str | Path, backbone: str = "RS200", device: str = "cuda",
                 score_threshold: float = UNIDET_SCORE_THRESHOLD):
        if backbone not in UNIDET_CONFIGS:
            raise ValueError(f"backbone must be one of {sorted(UNIDET_CONFIGS)}, got {backbone!r}")
        root = Path(unidet_root)
        config = UNIDET_CONFIGS[backbone]
        self.name = f"unidet_{backbone.lower()}"
        files = {
            "config": root / "experts" / "obj_detection" / "configs" / f"{config}.yaml",
            "weights": root / "experts" / "expert_weights" / f"{config}.pth",
            "labels": root / "dataset" / "detection_features.pt",
        }
        try:
            import detectron2  # noqa: F401
        except ImportError:
            raise ImportError(
                "UniDet needs detectron2 (T2I-CompBench pinned commit 5aeb252b): "
                "pip install 'git+https://github.com/facebookresearch/detectron2.git@5aeb252b' "
                "(CUDA build); or use the OWLv2 backend (evals.metrics.detectors.Owlv2Detector)"
            ) from None
        missing = [f"{key}: {path}" for key, path in files.items() if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"UniDet {config} files missing under {root} ({'; '.join(missing)}). Put T2I-CompBench's "
                f"UniDet_eval folder there and the weights {config}.pth (HF shikunl/prismer, expert_weights/) "
                "in experts/expert_weights/"
            )
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))  # UniDet's code imports itself as `experts.obj_detection.unidet`
        from detectron2.config import get_cfg
        from detectron2.engine.defaults import DefaultPredictor
        from experts.obj_detection.unidet.config import add_unidet_config

        cfg = get_cfg()
        add_unidet_config(cfg)
        cfg.merge_from_file(str(files["config"]))
        cfg.MODEL.WEIGHTS = str(files["weights"])
        cfg.MODEL.DEVICE = str(device)
        cfg.MODEL.RETINANET.SCORE_THRESH_TEST = score_threshold
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_threshold
        cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = score_threshold
        cfg.freeze()
        self.model = DefaultPredictor(cfg).model.eval()
        self.label_names = torch.load(files["labels"], weights_only=True)["labels"]

    @torch.no_grad()
    def detect(self, image: Image.Image, labels: list[str]) -> list[Detection]:
        import numpy as np

        # As UniDet_eval: BGR float tensor (C, H, W) of the frame image, outputs in the same frame.
        bgr = np.asarray(image.convert("RGB"))[:, :, ::-1].astype("float32").transpose(2, 0, 1)
        inputs = [{"image": torch.as_tensor(bgr.copy()), "height": image.height, "width": image.width}]
        with torch.autocast("cuda", dtype=torch.float16, enabled=torch.cuda.is_available()):
            fields = self.model(inputs)[0]["instances"].get_fields()
        boxes, classes, scores = fields["pred_boxes"].tensor.float().cpu(), fields["pred_classes"].cpu(), fields["scores"].float().cpu()
        return [
            Detection(self.label_names[int(classes[i])], float(scores[i]), tuple(float(v) for v in boxes[i]))
            for i in range(len(scores))
        ]
