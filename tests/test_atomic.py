"""pixart.atomic: the one way the suite writes a whole file."""
import os

import numpy as np
import pytest

from evals.metrics import fid
from pixart.atomic import write_atomic, write_text_atomic


def test_a_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metric.json"
    write_text_atomic(path, "old")

    def half_then_crash(tmp):
        tmp.write_text("ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_crash)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["metric.json"]


def test_the_temporary_is_hidden_from_globs_for_finished_files_and_the_folder_is_made(tmp_path):
    path = tmp_path / "history" / "a.json"
    seen = []
    write_atomic(path, lambda tmp: (tmp.write_text("{}"), seen.append((tmp.name, sorted(path.parent.glob("*.json"))))))
    (name, finished), = seen
    assert name == f".a.json.tmp{os.getpid()}" and finished == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_reference_statistics_keep_their_name_through_numpys_npz_suffix(tmp_path):
    path = tmp_path / "coco.npz"
    fid._save_stats(path, {"mu": np.zeros(3), "sigma": np.eye(3), "n": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco.npz"]
    with np.load(path) as saved:
        assert saved["sigma"].shape == (3, 3)
