"""tools/device: the wheels carried to a lent GPU machine match the pinned environment, and demo-gpu.sh starts the
DAG, lets a call end while it runs on, picks it up again in the next call, reports failure, and starts anew after
the DAG has ended (the DAG itself is a stand-in here; docs/device.md records a real dry run of it on a CPU)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version.strip()
    return pins


def test_carried_wheels_are_the_pinned_versions():
    carried = _pins(ROOT / "tools/device/wheels.txt")
    pinned = {**_pins(ROOT / "constraints.txt"), **_pins(ROOT / "requirements.txt")}
    assert {"diffusers", "open-clip-torch", "clean-fid", "snakemake", "transformers"} <= set(carried)
    assert not set(carried) - set(pinned), "wheels.txt names packages the environment does not pin"
    assert {name: version for name, version in carried.items() if pinned[name] != version} == {}
    assert not {"torch", "torchvision", "pulp"} & set(carried)  # the machine's own CUDA build; pulp: greedy scheduler


# Stands in for the machine's python3: the real interpreter, except `-m snakemake`, which sleeps (the DAG), then
# writes a checks table; FAKE_RC makes the DAG fail.
FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-m" ] && [ "$2" = "snakemake" ]; then
    case " $* " in *" --report "*) exit 0 ;; esac
    echo "snakemake $*" >> calls.log
    sleep "${FAKE_SECONDS:-3}"
    mkdir -p results-gpu/report/tables && echo "| check | holds |" > results-gpu/report/tables/checks.md
    echo "9 of 9 steps (100%) done"
    exit "${FAKE_RC:-0}"
fi
exec "$REAL_PYTHON" "$@"
"""


@pytest.fixture
def kit(tmp_path):
    root = tmp_path / "repo"
    (root / "tools/device").mkdir(parents=True)
    for script in ("demo-gpu.sh", "env.sh"):
        shutil.copy(ROOT / "tools/device" / script, root / "tools/device" / script)
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "REAL_PYTHON": sys.executable, "ALLOW_CPU": "1",
           "SITE": str(tmp_path / "site"), "OUT": str(tmp_path / "out")}

    def call(seconds: int, *extra: str, **variables) -> subprocess.CompletedProcess:
        shutil.rmtree(tmp_path / "out", ignore_errors=True)  # $OUT is emptied before each command there
        return subprocess.run(["bash", str(root / "tools/device/demo-gpu.sh"), str(seconds), *extra], cwd=tmp_path,
                              env={**env, **variables}, capture_output=True, text=True, timeout=120)
    return root, tmp_path / "out", call


def test_demo_gpu_follows_one_dag_across_calls(kit):
    root, out, call = kit
    first = call(1, "extra.yaml", FAKE_SECONDS="6")
    assert first.returncode == 3, first.stdout + first.stderr
    assert "started the DAG" in first.stdout and "call again at once" in first.stdout
    assert (out / "progress.txt").is_file() and (out / "results.tgz").is_file()
    second = call(60, "extra.yaml")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "started the DAG" not in second.stdout and "ended with status 0" in second.stdout
    assert (out / "checks.md").read_text() == "| check | holds |\n"
    assert "9 of 9 steps (100%) done" in (out / "progress.txt").read_text()
    calls = (root / "calls.log").read_text().splitlines()
    assert len(calls) == 1  # the second call followed the first call's DAG
    assert "--scheduler greedy" in calls[0]
    assert "workflows/config/demo.yaml workflows/config/demo-gpu.yaml extra.yaml" in calls[0]


def test_demo_gpu_reports_a_failed_dag_and_a_later_call_starts_it_again(kit):
    root, out, call = kit
    failed = call(60, FAKE_SECONDS="0", FAKE_RC="1")
    assert failed.returncode == 1 and "ended with status 1" in failed.stdout
    again = call(60, FAKE_SECONDS="0")
    assert again.returncode == 0 and "started the DAG" in again.stdout
    assert len((root / "calls.log").read_text().splitlines()) == 2
    assert (root / "results-gpu/device/dag.previous.log").is_file()


def test_demo_gpu_refuses_a_machine_without_cuda(kit):
    _, _, call = kit
    refused = call(1, ALLOW_CPU="0")
    assert refused.returncode == 2 and "torch sees no CUDA device" in refused.stderr
