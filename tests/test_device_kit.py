"""tools/device: the wheels carried to a lent GPU machine match the pinned environment, and demo-gpu.sh starts the
DAG, lets a call end while it runs on, picks it up again in the next call, reports failure, and starts anew after
the DAG has ended (the DAG itself is a stand-in here; docs/device.md records a real dry run of it on a CPU)."""
import os
import re
import shutil
import signal
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


# Stands in for the machine's python3: the real interpreter, except `-m snakemake`, which is the DAG: it waits
# for the file `release` where FAKE_WAIT is set, then writes a checks table; FAKE_RC makes it fail. The
# shakedown's snakemake ends at once, failing a rule where FAKE_SHAKEDOWN_RC is set.
FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-m" ] && [ "$2" = "snakemake" ]; then
    case " $* " in
        *" --report "*) exit 0 ;;
        *" tools/device/shakedown.yaml "*)
            echo "snakemake $*" >> shakedown-calls.log
            [ -z "${FAKE_SHAKEDOWN_RC:-}" ] || { printf 'Error in rule score:\\n    the cause\\n'; exit 1; }
            echo "4 of 4 steps (100%) done"; exit 0 ;;
    esac
    echo "snakemake $*" >> calls.log
    [ -z "${FAKE_WAIT:-}" ] || while [ ! -f release ]; do sleep 0.2; done
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

    def call(seconds, *extra: str, **variables) -> subprocess.CompletedProcess:
        shutil.rmtree(tmp_path / "out", ignore_errors=True)  # $OUT is emptied before each command there
        return subprocess.run(["bash", str(root / "tools/device/demo-gpu.sh"), str(seconds), *extra], cwd=tmp_path,
                              env={**env, **variables}, capture_output=True, text=True, timeout=120)
    yield root, tmp_path / "out", call
    (root / "release").touch()  # lets a stand-in DAG that a failed test left waiting end


def test_demo_gpu_follows_one_dag_across_calls(kit):
    root, out, call = kit
    first = call(1, "my overlay.yaml", FAKE_WAIT="1")
    assert first.returncode == 3, first.stdout + first.stderr
    assert "started the DAG" in first.stdout and "call again at once" in first.stdout
    assert (out / "progress.txt").is_file() and (out / "results.tgz").is_file()
    (root / "release").touch()
    second = call(60, "my overlay.yaml")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "started the DAG" not in second.stdout and "ended with status 0" in second.stdout
    assert (out / "checks.md").read_text() == "| check | holds |\n"
    assert "9 of 9 steps (100%) done" in (out / "progress.txt").read_text()
    calls = (root / "calls.log").read_text().splitlines()
    assert len(calls) == 1  # the second call followed the first call's DAG
    assert "--scheduler greedy" in calls[0]
    assert "workflows/config/demo.yaml workflows/config/demo-gpu.yaml my overlay.yaml" in calls[0]
    third = call(60)  # after the end: copies again, keeps the run and its time
    assert third.returncode == 0 and "started the DAG" not in third.stdout
    assert len((root / "calls.log").read_text().splitlines()) == 1
    shakedown = (root / "shakedown-calls.log").read_text().splitlines()
    assert len(shakedown) == 1 and "--nolock" in shakedown[0]  # beside the DAG, never in its way
    assert "--configfile workflows/config/demo.yaml tools/device/shakedown.yaml" in shakedown[0]
    assert "shakedown (demo.yaml's DAG at test size, into results/): ended with status 0" in third.stdout


@pytest.mark.slow
def test_the_shakedowns_failed_jobs_come_back_and_it_runs_again_in_the_next_call(kit):
    root, out, call = kit
    # 45 s: the DAG waits, so the call follows it for 20 s, long after the shakedown has ended, set-up included
    first = call(45, FAKE_WAIT="1", FAKE_SHAKEDOWN_RC="1")
    assert first.returncode == 3, first.stdout + first.stderr
    assert "shakedown (demo.yaml's DAG at test size, into results/): ended with status 1" in first.stdout
    assert "    shakedown: 1 Error in rule score:" in first.stdout
    progress = (out / "progress.txt").read_text()
    assert "--- the shakedown's failed jobs" in progress and "    the cause" in progress
    fixed = call(45)  # the fix has landed: the shakedown runs again beside the same DAG, and passes
    assert fixed.returncode == 3 and "started the DAG" not in fixed.stdout
    assert "shakedown (demo.yaml's DAG at test size, into results/): ended with status 0" in fixed.stdout
    assert "the shakedown's failed jobs" not in (out / "progress.txt").read_text()
    assert len((root / "shakedown-calls.log").read_text().splitlines()) == 2
    assert len((root / "calls.log").read_text().splitlines()) == 1


def test_demo_gpu_restarts_a_failed_or_killed_dag(kit):
    root, out, call = kit
    failed = call(60, FAKE_RC="1")
    assert failed.returncode == 1 and "ended with status 1" in failed.stdout
    waiting = call(1, FAKE_WAIT="1")  # starts it again
    assert waiting.returncode == 3 and "started the DAG" in waiting.stdout
    os.killpg(int((root / "results-gpu/device/pid").read_text()), signal.SIGKILL)  # dies without its status
    (root / "release").touch()
    again = call(60)
    assert again.returncode == 0 and "started the DAG" in again.stdout, again.stdout + again.stderr
    assert len((root / "calls.log").read_text().splitlines()) == 3
    assert len(list((root / "results-gpu/device").glob("dag.*.log"))) == 2  # both earlier runs' logs kept


def test_demo_gpu_set_up_errors_exit_2(kit):
    _, _, call = kit
    refused = call(1, ALLOW_CPU="0")
    assert refused.returncode == 2 and "torch sees no CUDA device" in refused.stderr
    assert call("5m").returncode == 2
    assert call(5, OUT="").returncode == 2
