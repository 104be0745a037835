"""Fidelity metrics: FID (clean-fid definitions), KID and FD-DINOv2, with our own reference-statistics cache.

COCO protocol (GigaGAN / PixArt-α Table 2; reference/benchmarks.md §3): both image sets are centre-cropped to a
square of the short side and Lanczos-resized to 256×256 (`coco_preprocess`), then go through clean-fid's resize
for the mode ("clean": PIL bicubic to 299 on float data) and Inception-v3 pool3. Reference statistics are
computed here and cached content-addressed under `results/refstats` (clean-fid's make_custom_stats would write
into site-packages and ignores custom extractors).
"""
import hashlib
import inspect
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.linalg
import torchvision.transforms.functional as TF
from cleanfid import fid as cleanfid_fid
from cleanfid.fid import frechet_distance
from PIL import Image

from evals.files import sha256_file
from evals.metrics.features import (FeatureExtractor, as_extractor, extract_features, images_to_batch,
                                    list_images)
from evals.stats import CI, bootstrap_statistic_ci
from pixart.atomic import write_atomic, write_text_atomic

REFSTATS_DIR = Path("results/refstats")
COCO_SIZE = 256


def coco_preprocess(img: Image.Image) -> Image.Image:
    """Centre crop to a square of the short side, then PIL Lanczos to 256×256 (GigaGAN's evaluation transform;
    torchvision's centre crop, so odd margins round as theirs do)."""
    return TF.center_crop(img, min(img.size)).resize((COCO_SIZE, COCO_SIZE), Image.Resampling.LANCZOS)


def _coco_preprocess_array(img: np.ndarray) -> np.ndarray:
    """clean-fid's `custom_image_tranform` hook works on HWC uint8 arrays."""
    return np.array(coco_preprocess(Image.fromarray(img)))


# Protocol transforms applied before the extractor's resize; the name is part of the cache key and metric name.
PREPROCESSING: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "coco256": _coco_preprocess_array,
    "none": None,
}


def preprocessing_transform(name: str):
    if name not in PREPROCESSING:
        raise ValueError(f"unknown preprocessing {name!r}; choose one of {sorted(PREPROCESSING)}.")
    return PREPROCESSING[name]


# --------------------------------------------------------------------------------------------- functional core

def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (np.cov, N-1) of features, refusing sets too small for a non-singular covariance."""
    feats = np.asarray(feats, dtype=np.float64)
    n, dim = feats.shape
    if n <= dim:
        raise ValueError(f"Fréchet distance needs more images than feature dimensions: {n} images for {dim}-d "
                         f"features gives a singular covariance; use at least {dim + 1} images.")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


class _SqrtmTakingDisp:
    """scipy.linalg for clean-fid where SciPy no longer takes `sqrtm(..., disp=False)` (removed after 1.17; the GPU
    machine's SciPy): that call returns (root, error estimate) as SciPy's did, every other name is SciPy's."""

    def __getattr__(self, name):
        return getattr(scipy.linalg, name)

    @staticmethod
    def sqrtm(a, disp=True):
        root = scipy.linalg.sqrtm(a)
        if disp:
            return root
        return root, np.linalg.norm(root @ root - a, "fro") ** 2 / np.linalg.norm(a, "fro")


def _let_cleanfid_call_sqrtm_with_disp():
    """clean-fid 0.1.35's `frechet_distance` calls `linalg.sqrtm(M, disp=False)`; with a SciPy that dropped the
    keyword it raises TypeError, so its module gets the adapter above and the rest of its computation runs as written."""
    if not isinstance(cleanfid_fid.linalg, _SqrtmTakingDisp) \
            and "disp" not in inspect.signature(scipy.linalg.sqrtm).parameters:
        cleanfid_fid.linalg = _SqrtmTakingDisp()


def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between two Gaussians (clean-fid's `frechet_distance`, scipy sqrtm)."""
    if np.shape(mu1) != np.shape(mu2) or np.shape(sigma1) != np.shape(sigma2):
        raise ValueError(f"statistics of different extractors: mu {np.shape(mu1)} vs {np.shape(mu2)}, "
                         f"sigma {np.shape(sigma1)} vs {np.shape(sigma2)}.")
    _let_cleanfid_call_sqrtm_with_disp()
    return float(frechet_distance(mu1, sigma1, mu2, sigma2))


def fid_from_features(gen_feats: np.ndarray, ref_stats: dict) -> float:
    mu, sigma = gaussian_stats(gen_feats)
    return fid_from_stats(mu, sigma, ref_stats["mu"], ref_stats["sigma"])


def fid_ci(gen_feats: np.ndarray, ref_stats: dict, *, n_resamples: int = 100, level: float = 0.95,
           seed: int = 0, bias_corrected: bool = False) -> CI:
    """FID with a percentile-bootstrap CI over generated images (reference statistics held fixed).

    Replicates use Tr sqrt(S_g S_r) = Tr sqrt(A S_g A) with A = S_r^(1/2) (one symmetric eigendecomposition per
    replicate, much faster than sqrtm at 2048-d). Resamples repeat images, which inflates FID: the interval sits
    above the point estimate and describes sampling spread, not an unbiased range for FID.
    """
    gen_feats = np.asarray(gen_feats, dtype=np.float64)
    gaussian_stats(gen_feats)  # refuse too-small sets before the loop
    ref_mu, ref_sigma = np.asarray(ref_stats["mu"]), np.asarray(ref_stats["sigma"])
    evals, evecs = np.linalg.eigh(ref_sigma)
    ref_root = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
    ref_trace = np.trace(ref_sigma)

    def fid(rows):
        mu, sigma = rows.mean(axis=0), np.cov(rows, rowvar=False)
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(ref_root @ sigma @ ref_root), 0, None)).sum()
        return float(((mu - ref_mu) ** 2).sum() + np.trace(sigma) + ref_trace - 2 * cross)

    return bootstrap_statistic_ci(gen_feats, fid, n_resamples=n_resamples, level=level, seed=seed, desc="FID CI",
                                  bias_corrected=bias_corrected, lower_bound=0.0)


def kid_from_features(gen_feats: np.ndarray, ref_feats: np.ndarray, *, num_subsets: int = 100,
                      max_subset_size: int = 1000, seed: int = 0) -> float:
    """KID: unbiased MMD² with the cubic polynomial kernel (x·y/d + 1)³, averaged over random subsets of equal
    size; clean-fid's `kernel_distance(ref_feats, gen_feats)` with its draws taken from a seeded RandomState
    (gen subset first, then ref subset, as clean-fid orders them)."""
    gen, ref = np.asarray(gen_feats, dtype=np.float64), np.asarray(ref_feats, dtype=np.float64)
    if gen.shape[1] != ref.shape[1]:
        raise ValueError(f"KID of features with different dimensions: {gen.shape[1]} vs {ref.shape[1]}.")
    m = min(len(gen), len(ref), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per set; got {len(gen)} generated and {len(ref)} reference.")
    dim = gen.shape[1]
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(len(gen), m, replace=False)]
        y = ref[rng.choice(len(ref), m, replace=False)]
        within = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        across = (x @ y.T / dim + 1) ** 3
        total += (within.sum() - np.diag(within).sum()) / (m - 1) - across.sum() * 2 / m
    return float(total / num_subsets / m)


# ----------------------------------------------------------------------------------------- reference statistics

def reference_stats(source, extractor: FeatureExtractor, *, mode: str | None = None, preprocess: str = "coco256",
                    cache_dir: str | Path = REFSTATS_DIR, batch_size: int = 64, device=None, num_workers: int = 0,
                    keep_features: bool = False, on_error: str = "raise") -> dict:
    """Mean/covariance of `extractor` features over a folder, zip, list of images or ImageSource, cached as
    `{cache_dir}/{key}.npz`; key = hash(the reference's content digest over names and bytes, extractor name,
    fingerprint and mode, preprocessing). A cache hit never touches the extractor. `keep_features` also stores
    the features (for KID).

    `mode` is the clean-fid resize mode; it wraps a bare module, and must match a loaded extractor's own mode.
    `device` None keeps the extractor where it was loaded (the scorer's GPU), else moves it there.
    Returns dict(mu, sigma, n, extractor, fingerprint, mode, preprocessing, key, source, bad_files[, features]).
    """
    extractor = as_extractor(extractor, mode=mode or "clean")
    if mode is not None and mode != extractor.mode:
        raise ValueError(f"mode {mode!r} does not match the extractor {extractor.name!r}, built for mode "
                         f"{extractor.mode!r}; load it with mode={mode!r} or drop the mode argument.")
    transform = preprocessing_transform(preprocess)
    images = list_images(source)
    key = _stats_key(_content_digest(images, Path(cache_dir)), extractor, preprocess)
    path = Path(cache_dir) / f"{key}.npz"
    cached = _load_stats(path) if path.is_file() else None
    if cached is not None and (not keep_features or "features" in cached):
        return cached

    if device is not None:
        extractor.to(device)
    extracted = extract_features(images, extractor, transform=transform, batch_size=batch_size,
                                 num_workers=num_workers, on_error=on_error, desc="reference statistics")
    mu, sigma = gaussian_stats(extracted.features)
    stats = dict(mu=mu, sigma=sigma, n=len(extracted.features), extractor=extractor.name,
                 fingerprint=extractor.fingerprint, mode=extractor.mode, preprocessing=preprocess, key=key,
                 source=images.description, bad_files=[path for path, _ in extracted.bad_files])
    if keep_features:
        stats["features"] = extracted.features
    if keep_features or not _has_features(path):  # never drop features a parallel job kept for this key
        _save_stats(path, stats)
    return stats


def _content_digest(images, cache_dir: Path) -> str:
    """sha256 over the reference's file names and bytes (a zip's names and member CRC-32s), so a byte-identical
    copy has the same key and a re-render of the same names and sizes another. Hashing a folder reads every
    byte once: the digest is memoised under `cache_dir/contents/`, keyed by the files' names, sizes and
    modification times, so later jobs only stat the files."""
    stamps = images.stamps or [None] * len(images.names)
    listing = json.dumps(list(zip(images.names, images.sizes, stamps)))
    if images.zip_path is not None:  # CRC-32s are the members' content already
        return hashlib.sha256(listing.encode()).hexdigest()
    memo = cache_dir / "contents" / f"{hashlib.sha256(listing.encode()).hexdigest()[:24]}.txt"
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    for i, name in enumerate(images.names):
        digest.update(f"{name}|{sha256_file(Path(images.path(i)))}\n".encode())
    write_text_atomic(memo, digest.hexdigest())
    return digest.hexdigest()


def _stats_key(content: str, extractor: FeatureExtractor, preprocess: str) -> str:
    """Content address of the statistics: the reference's content digest and everything about the extractor and
    preprocessing."""
    identity = dict(content=content, extractor=extractor.name, fingerprint=extractor.fingerprint,
                    mode=extractor.mode, preprocessing=preprocess)
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:24]


ARRAY_FIELDS = ("mu", "sigma", "features")


def _save_stats(path: Path, stats: dict) -> None:
    meta = {k: v for k, v in stats.items() if k not in ARRAY_FIELDS}
    arrays = {k: stats[k] for k in ARRAY_FIELDS if k in stats}

    def write(tmp: Path):
        with open(tmp, "wb") as fh:  # a handle: np.savez would add ".npz" to a path's temporary name
            np.savez(fh, meta=json.dumps(meta), **arrays)

    write_atomic(path, write)


def _has_features(path: Path) -> bool:
    """Whether a readable cache file holds features (the archive's listing only: no array is read)."""
    try:
        with np.load(path) as data:
            return "features" in data.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def _load_stats(path: Path) -> dict | None:
    """The cached statistics, or None when the file cannot be read (a damaged cache is recomputed, not fatal)."""
    try:
        with np.load(path) as data:
            stats = json.loads(str(data["meta"]))
            stats.update({k: data[k] for k in ARRAY_FIELDS if k in data})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return stats


# ------------------------------------------------------------------------------------ torchmetrics-style classes

class _FeatureMetric:
    """Collects features of images fed through `update`, checked against reference statistics of the same
    extractor, mode and preprocessing; `name` states the variant."""
    higher_is_better = False
    prefix: str

    def __init__(self, extractor, reference: dict, *, preprocess: str = "coco256", batch_size: int = 64):
        self.extractor = as_extractor(extractor)
        self.preprocess, self.transform = preprocess, preprocessing_transform(preprocess)
        self.reference, self.batch_size = reference, batch_size
        _check_reference(reference, self.extractor, preprocess)
        self._features: list[np.ndarray] = []

    @property
    def name(self) -> str:
        size = f"_{COCO_SIZE}" if self.preprocess == "coco256" else ""
        return f"{self.prefix}_{self.extractor.mode}_{self.extractor.name}{size}"

    def update(self, images) -> None:
        """A uint8 tensor (B, 3, H, W) or a sequence of PIL images / HWC uint8 arrays."""
        batch = images_to_batch(images, self.transform, self.extractor.resize)
        for chunk in batch.split(self.batch_size):
            self._features.append(self.extractor(chunk))

    def update_files(self, source, *, on_error: str = "raise") -> list[tuple[str, str]]:
        """Add a folder, zip or list of image files; returns the undecodable files when on_error='skip'."""
        extracted = extract_features(source, self.extractor, transform=self.transform, batch_size=self.batch_size,
                                     on_error=on_error, desc=self.name)
        self._features.append(extracted.features)
        return extracted.bad_files

    @property
    def features(self) -> np.ndarray:
        return np.concatenate(self._features) if self._features else np.empty((0, self.extractor.dim))

    def reset(self) -> None:
        self._features = []


class FID(_FeatureMetric):
    """FID against cached reference statistics (e.g. `fid_clean_inception_256`)."""
    prefix = "fid"

    def compute(self) -> float:
        return fid_from_features(self.features, self.reference)

    def compute_ci(self, *, n_resamples: int = 100, level: float = 0.95, seed: int = 0) -> CI:
        return fid_ci(self.features, self.reference, n_resamples=n_resamples, level=level, seed=seed)


class FDDINOv2(FID):
    """FD-DINOv2 (Stein et al. 2023): the Fréchet distance in DINOv2 ViT-L/14 feature space (`fd_dinov2_vitl14`)."""
    prefix = "fd"

    @property
    def name(self) -> str:
        size = f"_{COCO_SIZE}" if self.preprocess == "coco256" else ""
        return f"{self.prefix}_{self.extractor.name}{size}"


class KID(_FeatureMetric):
    """KID against reference features from `reference_stats(..., keep_features=True)` (`kid_clean_inception_256`)."""
    prefix = "kid"

    def __init__(self, extractor, reference: dict, *, preprocess: str = "coco256", batch_size: int = 64,
                 num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0):
        if "features" not in reference:
            raise ValueError(f"KID needs the reference features; reference statistics {reference.get('key')} hold "
                             f"only mu/sigma. Recompute them with reference_stats(..., keep_features=True).")
        super().__init__(extractor, reference, preprocess=preprocess, batch_size=batch_size)
        self.num_subsets, self.max_subset_size, self.seed = num_subsets, max_subset_size, seed

    def compute(self) -> float:
        return kid_from_features(self.features, self.reference["features"], num_subsets=self.num_subsets,
                                 max_subset_size=self.max_subset_size, seed=self.seed)


def _check_reference(reference: dict, extractor: FeatureExtractor, preprocess: str) -> None:
    """Statistics from another extractor, mode or preprocessing would give a meaningless distance."""
    mine = (extractor.name, extractor.fingerprint, extractor.mode, preprocess)
    theirs = tuple(reference.get(k) for k in ("extractor", "fingerprint", "mode", "preprocessing"))
    if mine != theirs:
        raise ValueError(f"reference statistics {reference.get('key')} were computed with (extractor, fingerprint, "
                         f"mode, preprocessing) = {theirs}, but this metric uses {mine}. Recompute them with "
                         f"reference_stats() for this extractor and preprocessing.")
