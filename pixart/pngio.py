"""Atomic PNG writes with provenance in a text chunk, and the validity check resume relies on."""
import hashlib
import json
import os
from pathlib import Path

from PIL import Image, PngImagePlugin

from pixart.atomic import write_atomic

META_KEY = "pixart-eval"


def prompt_sha(prompt: str) -> str:
    """The prompt's hash as a PNG's provenance records it (`prompt_sha`)."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def write_png(image: Image.Image, path: Path, meta: dict):
    """Write to a temp file in the same folder, then rename: a kill or full disk never leaves a partial PNG."""
    info = PngImagePlugin.PngInfo()
    info.add_text(META_KEY, json.dumps(meta, sort_keys=True))

    def write(tmp: Path):
        with open(tmp, "wb") as fh:
            image.save(fh, format="PNG", pnginfo=info)
            fh.flush()
            os.fsync(fh.fileno())

    write_atomic(path, write)


def read_meta(path: Path, verify: bool = True) -> dict | None:
    """The provenance of a finished PNG, or None when the file is missing, truncated or not ours.
    `verify=False` reads the header chunks only (no check that the rest of the file is whole)."""
    try:
        with Image.open(path) as img:
            meta = img.info.get(META_KEY)  # tEXt before IDAT: read at open, no decode
            if verify:
                img.verify()  # CRCs of every chunk: a truncated or corrupted file fails here
        return json.loads(meta) if meta else None
    except (OSError, SyntaxError, ValueError):  # ValueError also covers metadata that is not JSON: not ours
        return None
