"""Training data: validated image-caption folders in, and a Dataset over the extracted features out.

Accepted layouts of a dataset folder (checked in this order):
  captions.jsonl   one JSON object per line: {"file": "rel/path.png", "caption": "…", "label": 3, …}
                   ("label" optional, for the class-conditional stage; other keys are kept as metadata)
  *.tar shards     webdataset style: key.png|jpg|jpeg|webp + key.txt and/or key.json ({"caption", "label", …})
  sidecar .txt     a.png next to a.txt holding the caption (any depth)
`scan_dataset` decodes every image once and skips (counting and naming) what cannot be used.

`LatentDataset(features_dir)` reads what `pixart.train.features` wrote and returns, per item, latents
re-sampled from the VAE posterior with noise fixed by (seed, epoch, item), the T5 states padded to
max_length with their mask, the label and the micro-conditions (reference §3). `preload()` reads every feature
file into memory once instead of twice per item and epoch.
"""
import hashlib
import io
import json
import math
import posixpath
import tarfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pixart.train.buckets import stable_seed

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTIONS_JSONL = "captions.jsonl"
SETTINGS_FILE = "settings.json"
INDEX_FILE = "index.parquet"
REPORT_FILE = "report.json"
SKIP_REASONS = ("bad_record", "duplicate", "missing_image", "missing_caption", "empty_caption", "corrupt_image",
                "extreme_aspect")
FIRST_NAMES = 10
LAYOUT_HELP = (f"expected one of: {CAPTIONS_JSONL} (one {{\"file\": …, \"caption\": …}} per line), "
               "webdataset *.tar shards (key.png + key.txt|key.json), or images with a caption .txt beside each")


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class ImageItem:
    """One usable image-caption pair found by scan_dataset."""
    item_id: str            # unique, stable name: image path under the root, or "shard.tar/key"
    file: str               # image path under the root ("shard.tar/member" inside a shard)
    caption: str
    label: int | None
    height: int
    width: int
    digest: str             # sha256 of the image bytes: names its VAE features
    source: str             # the image file, or the tar shard holding it
    member: str | None = None
    meta: dict = field(default_factory=dict, hash=False, compare=False)


def new_report(root, layout: str) -> dict:
    """An empty scan report: counts and first names per skip reason."""
    return {"root": str(root), "layout": layout, "n_records": 0, "n_usable": 0,
            "skipped": {reason: {"count": 0, "first": []} for reason in SKIP_REASONS}}


def note_skip(report: dict, reason: str, name: str):
    """Count a skipped record under `reason`, keeping the first few names."""
    entry = report["skipped"][reason]
    entry["count"] += 1
    if len(entry["first"]) < FIRST_NAMES:
        entry["first"].append(name)


def n_skipped(report: dict) -> int:
    """Total of skipped records in a report."""
    return sum(entry["count"] for entry in report["skipped"].values())


@lru_cache(maxsize=4)
def _open_shard(path: str) -> tarfile.TarFile:
    # Extraction reads items in bucket order across shards; keeping a few open avoids re-indexing each tar.
    return tarfile.open(path)


def read_image_bytes(item: ImageItem) -> bytes:
    """The encoded image bytes of an item, from its file or its tar shard."""
    if item.member is None:
        return Path(item.source).read_bytes()
    return _open_shard(item.source).extractfile(item.member).read()


def open_image(item: ImageItem) -> Image.Image:
    """The item's image as RGB (palette, grey, alpha and CMYK images are converted)."""
    with Image.open(io.BytesIO(read_image_bytes(item))) as image:
        return image.convert("RGB")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of fully decodable image bytes, None for corrupt or truncated ones."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.height, image.width
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError, …) for bad files
        return None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def _skip_reason(item_id: str, seen: set, caption: str | None, data: bytes | None, label) -> tuple[str, str] | None:
    if item_id in seen:
        return "duplicate", ""
    if data is None:
        return "missing_image", ""
    if caption is None:
        return "missing_caption", ""
    if not isinstance(caption, str):
        return "bad_record", f" (caption {caption!r:.40} is not UTF-8 text)"
    if not caption.strip():
        return "empty_caption", ""
    if label is not None and (not isinstance(label, int) or isinstance(label, bool)):
        return "bad_record", f" (label {label!r} is not an integer)"
    return None


def _text(data: bytes) -> str | bytes:
    """UTF-8 caption text, or the raw bytes when they do not decode (reported as a bad record)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _accept(items: list, seen: set, report: dict, *, item_id: str, file: str, caption, data: bytes | None,
            source: str, member: str | None = None, label=None, meta=None):
    """Validate one record and append it to items, or note why it is skipped."""
    report["n_records"] += 1
    skip = _skip_reason(item_id, seen, caption, data, label)
    size = image_size(data) if skip is None else None
    if skip is None and size is None:
        skip = "corrupt_image", ""
    if skip is not None:
        note_skip(report, skip[0], file + skip[1])
        return
    seen.add(item_id)
    height, width = size
    items.append(ImageItem(item_id, file, caption.strip(), label, height, width, _digest(data), source, member,
                           meta or {}))


def _scan_jsonl(root: Path, report: dict) -> list[ImageItem]:
    items, seen = [], set()
    try:
        # lines end at "\n" only: JSON strings may hold U+2028, U+0085 …, where str.splitlines would cut a record
        lines = [line.removesuffix("\r") for line in (root / CAPTIONS_JSONL).read_text(encoding="utf-8").split("\n")]
    except UnicodeDecodeError as err:
        raise DatasetError(f"{root / CAPTIONS_JSONL} is not UTF-8 ({err}); re-save it as UTF-8") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            file = record["file"]
            if not isinstance(file, str) or not file.strip():
                raise TypeError("file is not a path")
        except (json.JSONDecodeError, KeyError, TypeError):
            report["n_records"] += 1
            note_skip(report, "bad_record", f"{CAPTIONS_JSONL}:{number} (needs a JSON object with a \"file\" path)")
            continue
        path = root / file
        meta = {k: v for k, v in record.items() if k not in ("file", "caption", "label")}
        name = posixpath.normpath(Path(file).as_posix())  # "sub/../x.png" is x.png: one item, not two
        _accept(items, seen, report, item_id=name, file=name,
                caption=record.get("caption"), data=path.read_bytes() if path.is_file() else None,
                source=str(path), label=record.get("label"), meta=meta)
    return items


def _scan_sidecar(root: Path, report: dict) -> list[ImageItem]:
    items, seen = [], set()
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    stems = {p.with_suffix("") for p in images}
    for path in images:
        text = path.with_suffix(".txt")
        rel = path.relative_to(root).as_posix()
        _accept(items, seen, report, item_id=rel, file=rel, data=path.read_bytes(), source=str(path),
                caption=_text(text.read_bytes()) if text.is_file() else None)
    for text in sorted(root.rglob("*.txt")):
        if text.with_suffix("") not in stems:
            report["n_records"] += 1
            note_skip(report, "missing_image", text.relative_to(root).as_posix())
    return items


def _shard_groups(path: Path, report: dict, name: str) -> dict[str, dict[str, tarfile.TarInfo]]:
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        with tarfile.open(path) as tar:
            for info in tar:
                if info.isfile():
                    directory, _, base = info.name.rpartition("/")
                    stem, _, ext = base.partition(".")
                    key = f"{directory}/{stem}" if directory else stem
                    groups.setdefault(key, {})[f".{ext.lower()}"] = info
    except (tarfile.TarError, OSError) as err:
        report["n_records"] += 1
        note_skip(report, "bad_record", f"{name} (unreadable shard: {err}; its readable part is used)")
    return groups


def _scan_shards(root: Path, report: dict) -> list[ImageItem]:
    items, seen = [], set()
    for path in sorted(root.rglob("*.tar")):
        shard = path.relative_to(root).as_posix()
        groups = _shard_groups(path, report, shard)
        if not groups:  # unreadable from its first block: counted by _shard_groups
            continue
        try:
            _scan_shard(path, shard, groups, items, seen, report)
        except (tarfile.TarError, OSError) as err:  # cut short after its index was read
            report["n_records"] += 1
            note_skip(report, "bad_record", f"{shard} (unreadable shard: {err}; the items read before are used)")
    return items


def _scan_shard(path: Path, shard: str, groups: dict, items: list, seen: set, report: dict) -> None:
    with tarfile.open(path) as tar:
        for key, members in groups.items():
            image = next((members[e] for e in IMAGE_EXTS if e in members), None)
            caption, label, meta = None, None, {}
            if ".json" in members:
                try:
                    record = json.loads(tar.extractfile(members[".json"]).read())
                    caption, label = record.get("caption"), record.get("label")
                    meta = {k: v for k, v in record.items() if k not in ("caption", "label")}
                except (ValueError, AttributeError, tarfile.TarError):  # ValueError: bad JSON or not UTF-8
                    report["n_records"] += 1
                    note_skip(report, "bad_record", f"{shard}/{members['.json'].name} (not a UTF-8 JSON object)")
                    continue
            if ".txt" in members:
                caption = _text(tar.extractfile(members[".txt"]).read())
            data = tar.extractfile(image).read() if image is not None else None
            _accept(items, seen, report, item_id=f"{shard}/{key}",
                    file=f"{shard}/{image.name if image is not None else key}", caption=caption, data=data,
                    source=str(path), member=image.name if image is not None else None, label=label, meta=meta)


def scan_dataset(root) -> tuple[list[ImageItem], dict]:
    """Usable items of a dataset folder and a report counting and naming every skipped record."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; {LAYOUT_HELP}")
    if (root / CAPTIONS_JSONL).is_file():
        layout, scan = CAPTIONS_JSONL, _scan_jsonl
    elif any(root.rglob("*.tar")):
        layout, scan = "webdataset", _scan_shards
    else:
        layout, scan = "sidecar-txt", _scan_sidecar
    report = new_report(root, layout)
    items = scan(root, report)
    if layout == "webdataset":  # loose images beside the shards are not read: say so rather than drop them
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()):
            report["n_records"] += 1
            note_skip(report, "bad_record", f"{path.relative_to(root).as_posix()} (a loose image beside .tar "
                                            f"shards: the webdataset layout reads the shards only)")
    report["n_usable"] = len(items)
    if not items:
        skipped = {r: e["count"] for r, e in report["skipped"].items() if e["count"]}
        raise DatasetError(f"no usable image-caption pairs in {root} (layout {layout}, {report['n_records']} "
                           f"records, skipped: {skipped or 'none'}); {LAYOUT_HELP}")
    return items, report


ITEM_FIELDS = ("item_id", "label", "height", "width", "bucket", "vae", "t5")  # index columns an item reads
FEATURE_KEYS = {"vae": "moments", "t5": "states"}  # index column naming a feature file -> its tensor's key


def _packed(column) -> np.ndarray:
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy()
    return np.array([str(value).encode() for value in column], dtype=bytes)


def features_files(features_dir) -> tuple[Path, Path]:
    """settings.json and index.parquet of an extracted-features folder; DatasetError (with the fix) if missing."""
    root = Path(features_dir)
    paths = root / SETTINGS_FILE, root / INDEX_FILE
    for path in paths:
        if not path.is_file():
            raise DatasetError(f"{path} is missing: extract features first with "
                               f"`python -m pixart.train.features --data DIR --out {root} …`")
    return paths


def features_fingerprint(features_dir) -> str:
    """Content identity of an extracted-features folder: its settings (the VAE and T5 fingerprints, resolution, …;
    not `sources`, the paths they were read from) and its index. The index alone names latents by image digest,
    so features re-extracted with another VAE would have the same index."""
    settings_path, index_path = features_files(features_dir)
    settings = json.loads(settings_path.read_text())
    settings.pop("sources", None)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(index_path.read_bytes())
    return digest.hexdigest()[:16]


def check_matches_recipe(dataset: "LatentDataset", recipe: dict, num_classes: int | None = None) -> None:
    """The recipe trains on what the features hold: their resolution and multi-scale setting (a 512 model would
    otherwise train on 256 latents, its position embedding silently rebuilt), and, for the class-conditional
    stage, labels in 0..num_classes-1 (no label is stored as -1; label num_classes is DiT's dropped class)."""
    for key in ("resolution", "multiscale"):
        if recipe[key] != dataset.settings[key]:
            raise DatasetError(f"{dataset.root}: the features were extracted with {key} {dataset.settings[key]!r} "
                               f"but the recipe says {recipe[key]!r}; set the recipe's {key} to match or extract "
                               f"features for it (python -m pixart.train.features --{key} …)")
    if num_classes is None:
        return
    labels = np.asarray(dataset.fields["label"])
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        shown = ", ".join(f"{dataset.field('item_id', int(i))} ({int(labels[i])})" for i in bad[:5])
        raise DatasetError(f"{dataset.root}: {len(bad)} item(s) have no label or one outside 0..{num_classes - 1}, "
                           f"which the class-conditional stage needs (e.g. {shown}; -1 = no label): fix their "
                           f"\"label\" in the dataset or the model's num_embeds_ada_norm")


class LatentDataset(Dataset):
    """Items of an extracted-features folder: posterior-resampled latents, padded T5 states, conditions.

    The posterior noise depends on (seed, epoch, item id) only, so a given epoch is reproducible in any
    worker layout. `item(i, epoch)` takes the epoch explicitly (the training stream passes it with each batch);
    `dataset[i]` reads the epoch last given to set_epoch(), which DataLoader workers see only when they start.
    """

    def __init__(self, features_dir, *, max_length: int | None = None, seed: int = 0):
        import pandas as pd

        self.root = Path(features_dir)
        settings_path, index_path = features_files(self.root)
        self.settings = json.loads(settings_path.read_text())
        index = pd.read_parquet(index_path)
        # numpy columns, text as UTF-8 bytes: a pandas row lookup per item cost a quarter of the loading time,
        # and per-row Python objects would be copied into every loader worker as their refcounts change
        self.fields = {name: _packed(index[name]) for name in ITEM_FIELDS}
        self.max_length = max_length or self.settings["max_length"]
        self.scaling_factor = self.settings["scaling_factor"]
        self.seed = seed
        self.epoch = 0
        self._loaded = {}  # column -> (one flat tensor, {file: (offset, shape)}), once preload() has run

    def preload(self) -> "LatentDataset":
        """Read every feature file into memory (for feature sets that fit: the shapes world's take 13 KB per
        item, and every process of a multi-GPU run holds them all); reading two files per item is most of a
        batch's loading time. Each column is one flat tensor, so loader workers share one storage per column
        (forked) or receive it in one piece (spawned), instead of one per file."""
        for column in FEATURE_KEYS:
            parts, where, offset = [], {}, 0
            for relative in dict.fromkeys(value.decode() for value in self.fields[column]):
                tensor = self._read(column, relative)
                parts.append(tensor.flatten())
                where[relative] = (offset, tuple(tensor.shape))
                offset += tensor.numel()
            self._loaded[column] = (torch.cat(parts) if parts else torch.zeros(0), where)
        return self

    def set_epoch(self, epoch: int):
        """Select the epoch whose posterior noise `dataset[i]` uses."""
        self.epoch = epoch

    @property
    def bucket_keys(self) -> list[str]:
        """Bucket key per item, for AspectRatioBatchSampler."""
        return [key.decode() for key in self.fields["bucket"]]

    def __len__(self) -> int:
        return len(self.fields["item_id"])

    def _read(self, column: str, relative: str) -> torch.Tensor:
        from safetensors.torch import load_file

        path = self.root / relative
        try:
            return load_file(str(path))[FEATURE_KEYS[column]]
        except FileNotFoundError:
            raise DatasetError(f"{path} is missing (listed in {self.root / INDEX_FILE}); re-run the feature "
                               f"extraction into {self.root} to restore it") from None

    def _tensor(self, column: str, relative: str) -> torch.Tensor:
        if column not in self._loaded:
            return self._read(column, relative).float()
        flat, where = self._loaded[column]
        offset, shape = where[relative]
        return flat[offset: offset + math.prod(shape)].view(shape).float()

    def field(self, name: str, i: int):
        """Item i's value of an index column (ITEM_FIELDS), as a str or a number."""
        value = self.fields[name][i]
        return value.decode() if isinstance(value, bytes) else value.item()

    def __getitem__(self, i: int) -> dict:
        return self.item(i, self.epoch)

    def item(self, i: int, epoch: int) -> dict:
        """Item i with the posterior noise of `epoch`."""
        row = {name: self.field(name, i) for name in ITEM_FIELDS}
        mean, std = self._tensor("vae", row["vae"]).chunk(2, dim=0)
        generator = torch.Generator().manual_seed(stable_seed("posterior", self.seed, epoch, row["item_id"]))
        latents = (mean + std * torch.randn(mean.shape, generator=generator)) * self.scaling_factor
        states = self._tensor("t5", row["t5"])[: self.max_length]
        text = torch.zeros(self.max_length, states.shape[1])
        text[: len(states)] = states
        mask = torch.zeros(self.max_length, dtype=torch.long)
        mask[: len(states)] = 1
        if self.settings["multiscale"]:
            img_hw, aspect_ratio = [float(row["height"]), float(row["width"])], float(row["bucket"])
        else:  # single-scale training conditions on the crop, as upstream passes (res, res) and 1.0
            img_hw, aspect_ratio = [float(self.settings["resolution"])] * 2, 1.0
        return {"latents": latents, "text": text, "text_mask": mask, "label": int(row["label"]),
                "item_id": row["item_id"], "index": i, "img_hw": torch.tensor(img_hw),
                "aspect_ratio": torch.tensor([aspect_ratio])}
