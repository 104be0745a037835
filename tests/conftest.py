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


@pytest.fixture
def cli_error(capsys):
    """Runs a CLI `main` on bad input that must end in one clean error (exit 2, no traceback): returns stderr."""
    def run(main, argv):
        with pytest.raises(SystemExit) as ended:
            main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert ended.value.code == 2, err
        assert "Traceback" not in err and ": error: " in err, err
        return err
    return run


# DESIGN §12: a test over ~30 s carries the `slow` marker, so `pytest -m "not slow"` stays a quick loop. Timings
# vary by machine, so an unmarked one is named at the end of the run rather than failed. Only the test's own call
# is timed: a shared fixture's setup is charged to whichever test uses it first.
SLOW_SECONDS = 30
_marked_slow = set()
_unmarked_slow = []


def pytest_collection_modifyitems(items):
    _marked_slow.update(item.nodeid for item in items if item.get_closest_marker("slow"))


def pytest_runtest_logreport(report):
    if report.when == "call" and report.duration > SLOW_SECONDS and report.nodeid not in _marked_slow:
        _unmarked_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter):
    if _unmarked_slow:
        terminalreporter.section("tests over ~30 s without the slow marker (add @pytest.mark.slow)")
        for nodeid, seconds in _unmarked_slow:
            terminalreporter.write_line(f"{seconds:.0f} s  {nodeid}")
