"""The engine benchmark (python -m pixart.bench) on the tiny model: every mode measured, and a run cut short
(bench-gpu.sh's time share) keeps in its JSON the modes measured before the cut."""
import json

import pytest

from pixart import bench

ARGS = ["--arch", "tiny", "--prompts", "6", "--batch-size", "3", "--loop-prompts", "2", "--steps", "2",
        "--repeats", "1", "--device", "cpu"]


def test_every_mode_is_measured_and_the_per_prompt_loop_runs_on_its_own_prompt_count(tmp_path, monkeypatch):
    calls = []
    original_build = bench.build  # count the stock pipe() calls: one per prompt in the loop, one per chunk batched

    def counting_build(*args, **kwargs):
        pipe = original_build(*args, **kwargs)
        original = type(pipe).__call__
        monkeypatch.setattr(type(pipe), "__call__", lambda self, p, **kw: calls.append(p) or original(self, p, **kw))
        return pipe

    monkeypatch.setattr(bench, "build", counting_build)
    bench.main(ARGS + ["--json", str(tmp_path / "b.json")])
    report = json.loads((tmp_path / "b.json").read_text())
    assert set(report["images_per_s"]) == set(report["peak_memory_mb"]) == {"ours", "stock_batched",
                                                                              "stock_per_prompt"}
    assert report["prompts"] == 6 and report["loop_prompts"] == 2
    assert [len(c) if isinstance(c, list) else 1 for c in calls] == [3, 3, 1, 1]
    ips = report["images_per_s"]
    assert report["speedup_vs_stock_per_prompt"] == pytest.approx(ips["ours"] / ips["stock_per_prompt"], rel=0.01)


def test_a_run_cut_short_keeps_the_modes_measured_so_far(tmp_path, monkeypatch):
    timed, seen = bench.timed, []

    def cut_at_the_second_mode(fn, device, repeats):
        if seen:
            raise TimeoutError("cut")
        seen.append(fn)
        return timed(fn, device, repeats)

    monkeypatch.setattr(bench, "timed", cut_at_the_second_mode)
    with pytest.raises(TimeoutError):
        bench.main(ARGS + ["--json", str(tmp_path / "b.json")])
    assert list(json.loads((tmp_path / "b.json").read_text())["images_per_s"]) == ["ours"]


def test_the_per_prompt_loop_needs_a_prompt(capsys):
    with pytest.raises(SystemExit):
        bench.main(ARGS[:6] + ["--loop-prompts", "0"])
    assert "--loop-prompts must be at least 1" in capsys.readouterr().err
