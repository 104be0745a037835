import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Tiny random-weight models saved once: pipeline folder, original .pth, transformer config."""
    from pixart.tiny import save_tiny

    out = tmp_path_factory.mktemp("tiny")
    paths = save_tiny(out, seed=0)
    return {**{k: Path(v) for k, v in paths.items()}, "arch": out / "transformer_config.json", "root": out}


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny-tensor tests (`pytestmark = pytest.mark.usefixtures("one_thread")`): on a shared CPU,
    intra-op threads cost far more than they save."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
