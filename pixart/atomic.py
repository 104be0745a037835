"""Whole-file writes: a temporary sibling first, then one rename over the final name. A killed job or a full disk
never leaves half a file under that name, and two processes writing the same name never share a temporary file."""
import os
from pathlib import Path
from typing import Callable


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)`, then rename `tmp` to `path` (its folder is made first). `tmp` is `.{name}.tmp{pid}` beside
    `path`: hidden, and not ending in the final suffix, so a glob for finished files never picks it up. On any
    error, `tmp` is removed and the error raised; `path` keeps its previous content."""
    return write_all_atomic({path: write})[0]


def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_all_atomic(writes: dict) -> list[Path]:
    """Several files that belong together (a cell's per-image scores and its metric JSON): every temporary is
    written first, then each is renamed over its final name, back to back. A failed write (a value JSON cannot
    hold, a full disk) leaves every final name with its previous content; only a kill between two renames could
    leave them apart."""
    temporaries = {}
    try:
        for path, write in writes.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporaries[path] = path.with_name(f".{path.name}.tmp{os.getpid()}")
            write(temporaries[path])
        for path, tmp in temporaries.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        raise
    return list(temporaries)
