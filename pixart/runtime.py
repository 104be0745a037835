"""Device and dtype choice, and the provenance every generated cell records."""
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from pixart.cli import UsageError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
LIBRARIES = ("torch", "diffusers", "transformers", "numpy", "pillow")


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}") from None


def pick_device(name: str = "auto") -> torch.device:
    """`auto` (CUDA when there is one), `cpu`, `cuda` or `cuda:N`; anything else, or CUDA that this torch
    cannot reach, is a ValueError naming the choice."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA device; use cpu or auto")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def library_versions() -> dict:
    return {name: metadata.version(name) for name in LIBRARIES}


def code_version() -> str:
    """git describe of the suite's checkout, '+dirty' when it has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty=+dirty"], cwd=root,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
