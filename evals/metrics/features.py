"""Image features for Fréchet distances: extractors (Inception-v3 as in clean-fid, DINOv2 ViT-L/14, any module)
and the image pipeline that feeds them (load → optional protocol transform → the extractor's resize → batch).

An extractor receives float batches (B, 3, H, W) with values in [0, 255], clean-fid's convention, and returns
(B, dim) features. Its `resize` is applied per image before batching, exactly where clean-fid applies
`fn_resize`, so that our features equal clean-fid's for the same module. Weights always come from local files.
"""
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torchvision.transforms.functional as TF
from cleanfid.downloads_helper import check_download_inception, inception_url
from cleanfid.resize import build_resizer
from PIL import Image
from tqdm import tqdm

from pixart.checkpoints import fingerprint_state
from evals.files import sha256_file  # noqa: F401  (re-exported)

WEIGHTS_DIR = Path("weights")  # documented local home of metric weights (config key `weights.*`)
INCEPTION_FILE = "inception-2015-12-05.pt"  # clean-fid's TF-ported torchscript (modes clean, legacy_tensorflow)
PT_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid port (mode legacy_pytorch)
PT_INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PT_INCEPTION_FILE
CLEANFID_DOWNLOAD_DIR = Path("/tmp")  # where clean-fid itself downloads the torchscript on Linux
MODES = ("clean", "legacy_pytorch", "legacy_tensorflow")
DINOV2_ARCH = "vit_large_patch14_dinov2.lvd142m"
DINOV2_SIZE = 224  # dgm-eval (Stein et al. 2023) resizes to 224 with bicubic, ImageNet mean/std
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp", "npy"}  # clean-fid's


class WeightsNotFoundError(FileNotFoundError):
    """Metric weights are missing locally; the message names the file, where to put it and where it comes from."""


class BadImagesError(ValueError):
    """Some images could not be decoded; the message counts and names them."""


@dataclass
class FeatureExtractor:
    """A feature network plus the per-image resize it expects; `fingerprint` identifies its weights."""
    name: str
    fingerprint: str
    dim: int
    mode: str  # resize convention: a clean-fid mode, or the extractor's own (e.g. "dinov2")
    model: torch.nn.Module  # float (B, 3, H, W) in [0, 255] -> (B, dim)
    resize: Callable[[np.ndarray], np.ndarray] = field(repr=False)  # HWC image -> HWC at the model's input size
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def to(self, device) -> "FeatureExtractor":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        return self.model(batch.to(self.device)).float().cpu().numpy()


def as_extractor(module: torch.nn.Module | FeatureExtractor, *, mode: str = "clean",
                 name: str | None = None) -> FeatureExtractor:
    """Wrap any module mapping (B, 3, 299, 299) floats in [0, 255] to (B, dim), with clean-fid's resize for `mode`."""
    if isinstance(module, FeatureExtractor):
        return module
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: a custom extractor uses clean-fid's resize, one of {MODES}.")
    module.eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))  # where the caller put it
    dim = getattr(module, "num_features", None)
    if not isinstance(dim, int):
        with torch.no_grad():
            dim = int(module(torch.zeros(1, 3, 299, 299, device=device)).shape[-1])
    return FeatureExtractor(name or type(module).__name__.lower(), fingerprint_state(module.state_dict()), dim,
                            mode, module, build_resizer(mode), device)


def load_inception(path: str | Path | None = None, mode: str = "clean", device="cpu",
                   download: bool | None = None) -> FeatureExtractor:
    """Inception-v3 pool3 (2048-d) as clean-fid uses it for `mode`.

    clean / legacy_tensorflow: clean-fid's torchscript `inception-2015-12-05.pt` (legacy_tensorflow resizes
    inside the network); legacy_pytorch: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`.
    `path` is the file or its folder; without it we look in `weights/`, then in clean-fid's own download folder.
    `download` (default: unless HF_HUB_OFFLINE=1) lets clean-fid fetch the torchscript into `weights/`.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not a clean-fid mode; use one of {MODES}.")
    file_name, url = (PT_INCEPTION_FILE, PT_INCEPTION_URL) if mode == "legacy_pytorch" else (INCEPTION_FILE,
                                                                                             inception_url)
    weights = _find_inception(path, file_name, url, download)
    if mode == "legacy_pytorch":
        model = _PytorchFIDInception(weights)
    else:
        from cleanfid.inception_torchscript import InceptionV3W
        model = InceptionV3W(str(weights.parent), download=False, resize_inside=mode == "legacy_tensorflow")
    return FeatureExtractor("inception", sha256_file(weights), 2048, mode, model.eval(),
                            build_resizer(mode)).to(device)


def load_dinov2(path: str | Path, device="cpu", *, arch: str = DINOV2_ARCH, img_size: int = DINOV2_SIZE,
                name: str = "dinov2_vitl14", **model_kwargs) -> FeatureExtractor:
    """DINOv2 through timm with weights from a local file (timm's `model.safetensors` for `arch`, or Meta's
    `dinov2_vitl14_pretrain.pth`); features are the normalised CLS token, as in dgm-eval's FD-DINOv2.

    Position embeddings are resampled once from the checkpoint's grid to `img_size` (timm, bicubic); dgm-eval
    interpolates them at every forward from the hub model, so values may differ slightly from dgm-eval's.
    `model_kwargs` override the architecture (tests build a tiny ViT this way).
    """
    import timm

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"DINOv2 weights not found at {path}. Put timm's `model.safetensors` of `timm/{DINOV2_ARCH}` "
            f"(https://huggingface.co/timm/{DINOV2_ARCH}) or Meta's dinov2_vitl14_pretrain.pth "
            f"(https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth) at "
            f"{WEIGHTS_DIR / 'dinov2_vitl14.safetensors'} (config `weights.dinov2`) and pass that path.")
    net = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=0,
                            img_size=img_size, **model_kwargs)
    return FeatureExtractor(name, sha256_file(path), net.num_features, "dinov2", _ImageNetNormalised(net).eval(),
                            _pil_bicubic_resizer(img_size)).to(device)




def _find_inception(path, file_name: str, url: str, download: bool | None) -> Path:
    if path is not None:
        path = Path(path)
        found = path / file_name if path.is_dir() else path
        if found.is_file() and found.name == file_name:
            return found
        where = f"{path} (expected the file {file_name} or a folder holding it)"
    else:
        for candidate in (WEIGHTS_DIR / file_name, CLEANFID_DOWNLOAD_DIR / file_name):
            if candidate.is_file():
                return candidate
        if download is None:
            download = os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True")
        reason = "offline (HF_HUB_OFFLINE=1): no download attempted" if not download else \
            "only clean-fid's torchscript is downloaded automatically"
        if download and file_name == INCEPTION_FILE:
            WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
            try:
                return Path(check_download_inception(str(WEIGHTS_DIR)))
            except OSError as err:
                reason = f"download failed: {err}"
        where = f"{WEIGHTS_DIR} or {CLEANFID_DOWNLOAD_DIR} ({reason})"
    raise WeightsNotFoundError(
        f"Inception weights {file_name} not found in {where}. Download {url} and put it at "
        f"{WEIGHTS_DIR / file_name} (or set config `weights.inception` / pass path=... to its location).")


class _PytorchFIDInception(torch.nn.Module):
    """pytorch-fid's Inception (clean-fid legacy_pytorch) with weights read from a local file, not a URL."""

    def __init__(self, weights: Path):
        super().__init__()
        from cleanfid import inception_pytorch

        # clean-fid builds this network with a hard-wired download; hand it the local file instead.
        local = lambda *args, **kwargs: torch.load(weights, map_location="cpu", weights_only=True)  # noqa: E731
        with mock.patch.object(inception_pytorch, "load_state_dict_from_url", local), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")  # its `pretrained=False`
            self.net = inception_pytorch.InceptionV3(output_blocks=[3], resize_input=False)

    def forward(self, x):
        return self.net(x / 255)[0].squeeze(-1).squeeze(-1)


class _ImageNetNormalised(torch.nn.Module):
    """[0, 255] batch -> ImageNet-normalised input of `net`."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def _pil_bicubic_resizer(size: int) -> Callable[[np.ndarray], np.ndarray]:
    """dgm-eval's DINOv2 resize: PIL bicubic on the 8-bit image (torchvision resize of a PIL image)."""
    def resize(img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8:
            raise TypeError(f"the DINOv2 resize expects 8-bit images, got {img.dtype}.")
        return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return resize


# ----------------------------------------------------------------------------------------------- image pipeline

@dataclass
class ImageSource:
    """Image files of a folder, a zip archive or an explicit list: names (sorted), byte sizes and stamps (a
    zip member's CRC-32, a file's modification time in ns: what tells a cache that a file of the same name and
    size was rewritten)."""
    description: str
    names: list[str]
    sizes: list[int]
    zip_path: Path | None = None
    root: Path | None = None
    stamps: list[int] = field(default_factory=list)

    def path(self, i: int) -> str:
        if self.zip_path is not None:
            return f"{self.zip_path}:{self.names[i]}"
        return str(self.root / self.names[i]) if self.root else self.names[i]


def list_images(source) -> ImageSource:
    """Resolve a folder (recursive), a `.zip` of images, or a sequence of image paths; an ImageSource is
    returned as it is (listed once, used by several steps)."""
    if isinstance(source, ImageSource):
        return source
    if isinstance(source, (str, Path)):
        source = Path(source)
        if source.is_file() and source.suffix.lower() == ".zip":
            with zipfile.ZipFile(source) as zf:
                infos = sorted((i for i in zf.infolist() if _is_image(i.filename)), key=lambda i: i.filename)
            found = ImageSource(str(source), [i.filename for i in infos], [i.file_size for i in infos],
                                zip_path=source, stamps=[i.CRC for i in infos])
        elif source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.is_file() and _is_image(p.name))
            stats = [p.stat() for p in files]
            found = ImageSource(str(source), [p.relative_to(source).as_posix() for p in files],
                                [st.st_size for st in stats], root=source, stamps=[st.st_mtime_ns for st in stats])
        else:
            raise FileNotFoundError(f"{source}: no such folder or .zip of images.")
    else:
        files = sorted(Path(p).resolve() for p in source)
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} listed image files do not exist, e.g. {missing[:5]}.")
        stats = [p.stat() for p in files]
        found = ImageSource(f"{len(files)} files", [str(p) for p in files], [st.st_size for st in stats],
                            stamps=[st.st_mtime_ns for st in stats])
    if not found.names:
        raise FileNotFoundError(f"{found.description}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    return found


def image_to_input(img: np.ndarray, transform: Callable | None, resize: Callable) -> torch.Tensor:
    """One HWC uint8 RGB image -> (3, H, W) float in [0, 255], the steps and dtype rules of clean-fid's dataset."""
    if transform is not None:
        img = transform(img)
    resized = resize(img)
    if resized.dtype == np.uint8:  # ToTensor scales 8-bit input to [0, 1]; clean-fid scales back
        return TF.to_tensor(np.array(resized)) * 255
    return TF.to_tensor(np.asarray(resized, dtype=np.float32))


class _ImageDataset(torch.utils.data.Dataset):
    """Decodes images as clean-fid does; a file that fails to decode yields its error instead of a tensor."""

    def __init__(self, source: ImageSource, transform: Callable | None, resize: Callable):
        self.source, self.transform, self.resize = source, transform, resize
        self._zip = None  # opened lazily, once per worker process

    def __len__(self):
        return len(self.source.names)

    def _decode(self, i: int) -> np.ndarray:
        name = self.source.names[i]
        if self.source.zip_path is not None:
            self._zip = self._zip or zipfile.ZipFile(self.source.zip_path)
            with self._zip.open(name) as f:
                return np.array(Image.open(f).convert("RGB"))
        path = self.source.path(i)
        if name.lower().endswith(".npy"):
            return np.load(path)
        return np.array(Image.open(path).convert("RGB"))

    def __getitem__(self, i):
        try:
            img = self._decode(i)
        except (OSError, ValueError, SyntaxError, zipfile.BadZipFile) as err:  # what PIL/numpy raise on bad files
            return i, None, f"{type(err).__name__}: {err}"
        return i, image_to_input(img, self.transform, self.resize), None


def _collate(items):
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, err) for i, _, err in items if err is not None]
    batch = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], batch, bad


@dataclass
class ExtractedFeatures:
    features: np.ndarray  # (n_good, dim), in the order of `source.names` minus bad files
    source: ImageSource
    bad_files: list[tuple[str, str]]  # (path, error)


def extract_features(source, extractor: FeatureExtractor, *, transform: Callable | None = None,
                     batch_size: int = 64, num_workers: int = 0, on_error: str = "raise",
                     desc: str = "features") -> ExtractedFeatures:
    """Features of every image in `source` (folder, zip or list). Undecodable files are collected over the
    whole pass and then raised together (`on_error="raise"`) or returned in `bad_files` (`"skip"`)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    images = list_images(source)
    loader = torch.utils.data.DataLoader(_ImageDataset(images, transform, extractor.resize), batch_size=batch_size,
                                         num_workers=num_workers, collate_fn=_collate)
    feats, bad = [], []
    for _, batch, failed in tqdm(loader, desc=f"{desc} ({images.description})", leave=False):
        bad += [(images.path(i), err) for i, err in failed]
        if batch is not None:
            feats.append(extractor(batch))
    if bad and on_error == "raise":
        shown = "\n".join(f"  {path}: {err}" for path, err in bad[:20])
        raise BadImagesError(f"{len(bad)} of {len(images.names)} images in {images.description} could not be "
                             f"decoded:\n{shown}\nReplace or delete them, or pass on_error='skip' to leave "
                             f"them out (they are then counted in the result).")
    dim = extractor.dim
    return ExtractedFeatures(np.concatenate(feats) if feats else np.empty((0, dim), np.float32), images, bad)


def images_to_batch(images, transform: Callable | None, resize: Callable) -> torch.Tensor:
    """In-memory images (uint8 tensor (B, 3, H, W) or (3, H, W), or a sequence of PIL images / HWC uint8 arrays)
    through the same per-image steps as files."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise TypeError(f"image tensors must be uint8 in [0, 255] (B, 3, H, W); got {images.dtype}.")
        arrays = list((images if images.ndim == 4 else images[None]).permute(0, 2, 3, 1).cpu().numpy())
    elif isinstance(images, Sequence):
        arrays = [np.array(im.convert("RGB")) if isinstance(im, Image.Image) else np.asarray(im) for im in images]
    else:
        raise TypeError(f"expected a uint8 tensor or a sequence of PIL images/arrays, got {type(images).__name__}.")
    return torch.stack([image_to_input(a, transform, resize) for a in arrays])


def _is_image(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS
