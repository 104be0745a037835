"""Install, only where needed, the import hook that lets torchvision 0.28.0 import next to a CPU torch.

The only torchvision for torch 2.13.0 is a CUDA build: its compiled ops fail to load on a CPU torch and
then `torchvision/_meta_registrations.py` crashes on the two fake registrations (nms, qnms) that are not
guarded by `_has_ops()` (pytorch/vision#9085). Declaring those two schemas before torchvision is imported
is enough. The hook is a `.pth` file in site-packages, so every interpreter of the venv gets it (pytest,
snakemake jobs, data-loader workers). Where the plain import works (CUDA torch), nothing is installed.

Usage: python tools/torchvision_fix.py   (idempotent; prints what it did)
"""
import subprocess
import sys
import sysconfig
from pathlib import Path

HOOK_MODULE = "_pixart_torchvision_fix"
HOOK_SOURCE = '''"""Declares torchvision's nms/qnms schemas when its compiled ops cannot load (see tools/torchvision_fix.py)."""
import importlib.abc
import importlib.util
import sys

_LIBRARY = None


def _declare_missing_ops():
    global _LIBRARY
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    from pathlib import Path

    so_files = sorted(Path(spec.submodule_search_locations[0]).glob("_C*.so"))
    try:
        if not so_files:
            raise OSError("no torchvision/_C*.so")
        torch.ops.load_library(str(so_files[0]))
    except (OSError, RuntimeError):
        _LIBRARY = torch.library.Library("torchvision", "DEF")
        _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            _declare_missing_ops()
        return None


sys.meta_path.insert(0, _Finder())
'''


def plain_import_works() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    return probe.returncode == 0


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    hook_py, hook_pth = site / f"{HOOK_MODULE}.py", site / f"{HOOK_MODULE}.pth"
    if hook_pth.exists():
        print(f"torchvision fix: already installed in {site}")
    elif plain_import_works():
        print("torchvision fix: not needed (torchvision imports as is)")
        return 0
    else:
        hook_py.write_text(HOOK_SOURCE)
        hook_pth.write_text(f"import {HOOK_MODULE}\n")
        print(f"torchvision fix: installed {hook_pth.name} in {site}")
    if not plain_import_works():
        print("torchvision fix: torchvision still fails to import; see this script's docstring and README.md "
              "(torch and torchvision must be the pinned pair)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
