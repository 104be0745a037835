"""Depth backend of the T2I-CompBench++ 3D-spatial rule (`compbench.DepthEstimator`).

Mirrors UniDet_eval/3D_spatial_eval.py + experts/model_bank_3d.py with the transformers port of the same
MiDaS model (`Intel/dpt-hybrid-midas` = `dpt_hybrid-midas-501f0c75.pt`):
  input PIL bilinear resize to 480 x 480, (x - 0.5) / 0.5 -> relative inverse depth (larger = closer)
  -> per-image min-max to [0, 1] -> bilinear (align_corners) to the image size -> 8-bit PNG round trip
  -> resized like the image to the detector frame (PIL bilinear) -> / 255.
The 8-bit step and the second resize are kept because the original saved the map as PNG and reloaded it
through the detector transform; the result is a float map aligned with the detector-frame image.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from evals.metrics.compbench import detector_frame_size, load_pretrained

DEFAULT_DPT = "Intel/dpt-hybrid-midas"
INPUT_SIZE = 480


class DptDepth:
    name = "dpt_hybrid_midas"

    def __init__(self, model, input_size: int = INPUT_SIZE, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.input_size = input_size
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_DPT, **kwargs) -> DptDepth:
        from transformers import DPTForDepthEstimation

        model = load_pretrained(DPTForDepthEstimation.from_pretrained, name_or_path, "DPT/MiDaS depth (3D spatial)")
        return cls(model, **kwargs)

    def pixel_values(self, image: Image.Image) -> torch.Tensor:
        """torchvision Resize([480, 480]) (PIL bilinear), ToTensor, Normalize(0.5, 0.5): the original
        transform, done here so no processor default (size, aspect ratio, padding) can change it."""
        resized = image.convert("RGB").resize((self.input_size, self.input_size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return ((x - 0.5) / 0.5).unsqueeze(0).to(self.device)

    @torch.no_grad()
    def normalized_depth(self, image: Image.Image) -> np.ndarray:
        """Min-max normalised inverse depth at the image's own size (H x W, float32 in [0, 1])."""
        depth = self.model(pixel_values=self.pixel_values(image)).predicted_depth[0].float()
        span = depth.max() - depth.min()  # a constant map (upstream: 0/0 = NaN) becomes all zeros
        depth = (depth - depth.min()) / span if span > 0 else torch.zeros_like(depth)
        depth = torch.nn.functional.interpolate(depth[None, None], size=(image.height, image.width),
                                                mode="bilinear", align_corners=True)
        return depth[0, 0].cpu().numpy()

    def depth_in_detector_frame(self, image: Image.Image) -> np.ndarray:
        """The map the 3D rule reads: float32 (frame_h, frame_w) in [0, 1], quantised to 1/255."""
        png = Image.fromarray(255 * self.normalized_depth(image)).convert("L")
        frame = png.resize(detector_frame_size(image.width, image.height), Image.BILINEAR)
        return np.asarray(frame, dtype=np.float32) / 255.0
