"""CLIP score via open_clip: cosine similarity of L2-normalised image and caption embeddings.

Variants (the name says which):
- `clip_vitb32_cosine`: OpenAI ViT-B/32, raw cosine (T2I-CompBench non-spatial; values ≈ 0.30).
- `clip_vitl14_x100`: OpenAI ViT-L/14, cosine × 100 (the COCO FID-vs-CLIP curves, paper Fig. 20a).
- optional caption prefix "A photo depicts " (GigaGAN's COCO CLIP score).
OpenAI weights use QuickGELU: open_clip turns it on only for its own 'openai' tag, so weights loaded from a
local file must use the `-quickgelu` model names (`ViT-B-32-quickgelu`, `ViT-L-14-quickgelu`), else the
embeddings are silently wrong. Captions are truncated to CLIP's 77 tokens; how many were is counted.
"""
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evals.files import sha256_file

log = logging.getLogger(__name__)
VARIANTS = {  # name -> (open_clip model for local OpenAI weights, scale, hub file users can fetch)
    "clip_vitb32_cosine": ("ViT-B-32-quickgelu", 1.0, "timm/vit_base_patch32_clip_224.openai"),
    "clip_vitl14_x100": ("ViT-L-14-quickgelu", 100.0, "timm/vit_large_patch14_clip_224.openai"),
}
PHOTO_PREFIX = "A photo depicts "


class WeightsError(FileNotFoundError):
    pass


@dataclass
class ClipScorer:
    """A loaded open_clip model with its preprocessing and tokenizer; `score` gives per-pair values."""

    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    name: str
    scale: float = 1.0
    prefix: str = ""
    device: torch.device = torch.device("cpu")
    fingerprint: str = ""
    higher_is_better: bool = field(default=True, init=False)
    n_truncated: int = field(default=0, init=False)

    def token_count(self, text: str) -> int:
        inner = getattr(self.tokenizer, "encode", None)
        ids = inner(text) if inner else self.tokenizer([text])[0].nonzero().flatten().tolist()
        return len(ids) + (2 if inner else 0)  # start and end tokens

    @torch.no_grad()
    def score(self, images, captions: list[str], batch_size: int = 32) -> np.ndarray:
        """Cosine (× scale) of each image with its caption; images are PIL images or file paths."""
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        texts = [self.prefix + c for c in captions]
        context = getattr(self.tokenizer, "context_length", 77)
        long = [t for t in texts if self.token_count(t) > context]
        if long:
            self.n_truncated += len(long)
            log.warning("%d of %d captions exceed %d CLIP tokens and are truncated (first: %r)",
                        len(long), len(texts), context, long[0][:80])
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = images[start:start + batch_size]
            pixels = torch.stack([self.preprocess(Image.open(i).convert("RGB") if isinstance(i, (str, Path))
                                                  else i.convert("RGB")) for i in chunk]).to(self.device)
            tokens = self.tokenizer(texts[start:start + batch_size]).to(self.device)
            img = torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)
            txt = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
            out.append((img * txt).sum(-1).cpu().numpy() * self.scale)
        return np.concatenate(out) if out else np.zeros(0)




def load_clip(variant: str, weights: str | None = None, *, model_name: str | None = None, prefix: str = "",
              device="cpu", config_dir: str | None = None) -> ClipScorer:
    """Load a CLIP-score variant from local weights (a .bin/.safetensors/.pt state dict).

    `model_name` overrides the open_clip architecture (e.g. a custom config registered from `config_dir`,
    as the embedded demo's small CLIP); `weights=None` is refused, since a random CLIP scores nothing."""
    import open_clip

    if variant not in VARIANTS and model_name is None:
        raise ValueError(f"unknown CLIP-score variant {variant!r}; known: {sorted(VARIANTS)}")
    arch, scale, hub = VARIANTS.get(variant, (model_name, 1.0, None))
    arch = model_name or arch
    if config_dir:
        open_clip.add_model_config(config_dir)
    if weights is None or not Path(weights).is_file():
        where = f" (e.g. open_clip_pytorch_model.bin from the hub repo {hub})" if hub else ""
        raise WeightsError(f"CLIP weights for {variant!r} not found at {weights!r}: put the OpenAI {arch} "
                           f"weights file there{where} and set it under `weights:` in the config")
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(weights), device=device)
    model.eval()
    return ClipScorer(model, preprocess, open_clip.get_tokenizer(arch), variant, scale, prefix,
                      torch.device(device), sha256_file(Path(weights))[:16])


class ClipImageFeatures(torch.nn.Module):
    """CLIP's image tower on batches at its input size, floats in [0, 255]: /255, CLIP's normalisation, encode
    (the steps of clean-fid's CLIP_fx)."""

    def __init__(self, scorer: ClipScorer):
        super().__init__()
        self.model = scorer.model
        mean = getattr(self.model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(self.model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image((x / 255.0 - self.mean) / self.std).float()


def clip_feature_extractor(scorer: ClipScorer, name: str) -> "FeatureExtractor":
    """CLIP-FID's extractor as clean-fid builds it for `model_name="clip_vit_b_32"`: each 8-bit image is
    PIL-bicubic resized (shorter side) to the tower's input size and centre-cropped (clean-fid's
    img_preprocess_clip, whose 224 is ViT-B/32's size; other towers get their own), then `ClipImageFeatures`."""
    from torchvision import transforms

    from evals.metrics.features import FeatureExtractor, fingerprint_state

    size = scorer.model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    to_input = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                                   transforms.CenterCrop(size)])

    def resize(img: np.ndarray) -> np.ndarray:
        return np.asarray(to_input(Image.fromarray(img.astype(np.uint8)).convert("RGB")))  # 8-bit, as PIL gives

    module = ClipImageFeatures(scorer).to(scorer.device).eval()
    with torch.no_grad():
        dim = int(module(torch.zeros(1, 3, size, size, device=scorer.device)).shape[-1])
    return FeatureExtractor(name, fingerprint_state(module.state_dict()), dim, "clip", module, resize, scorer.device)
