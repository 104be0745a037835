"""The prefork runner (pixart/prefork.py): a job forked from the server behaves like `python -m` in a fresh
interpreter (output, exit status, working directory, environment, thread count, numbers), a killed client
takes its job with it, and without a server the client runs the job itself."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pixart import prefork

ROOT = Path(__file__).resolve().parent.parent
JOB = textwrap.dedent("""
    import os, sys
    import torch
    torch.manual_seed(0)
    x = torch.randn(64, 64)
    print("cwd", os.getcwd())
    print("env", os.environ.get("PREFORK_TEST_VALUE"))
    print("threads", torch.get_num_threads())
    print("value", float((x @ x).sum()))
    import random
    import numpy
    print("unseeded", random.random(), numpy.random.random())
    print("to stderr", file=sys.stderr)
    if len(sys.argv) > 1 and sys.argv[1] == "raise":
        raise RuntimeError("job failed on purpose")
    if len(sys.argv) > 1 and sys.argv[1] == "sleep":  # write the job's pid to argv[2], then wait
        open(sys.argv[2] + ".tmp", "w").write(str(os.getpid()))
        os.replace(sys.argv[2] + ".tmp", sys.argv[2])
        import time
        time.sleep(60)
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logs = tmp_path_factory.mktemp("prefork")
    env_before = os.environ.get(prefork.ENV_VAR)
    process = prefork.start_server(str(logs / "prefork.log"))
    path = os.environ[prefork.ENV_VAR]
    deadline = time.time() + 120
    while not os.path.exists(path):
        assert process.poll() is None, (logs / "prefork.log").read_text()
        assert time.time() < deadline, "the prefork server did not start in 120 s"
        time.sleep(0.2)
    yield path
    prefork.stop_server(process)
    assert not os.path.exists(path)
    if env_before is not None:
        os.environ[prefork.ENV_VAR] = env_before


def _job_dir(tmp_path: Path) -> Path:
    (tmp_path / "prefork_job.py").write_text(JOB)
    return tmp_path


def _client(cwd: Path, *args, socket_path=None, threads="1", **kwargs):
    env = {**os.environ, "PREFORK_TEST_VALUE": "from the client", "OMP_NUM_THREADS": threads,
           "PYTHONPATH": str(ROOT)}
    env.pop(prefork.ENV_VAR, None)
    if socket_path:
        env[prefork.ENV_VAR] = socket_path
    return subprocess.run([sys.executable, "-m", "pixart.prefork", "-m", "prefork_job", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, **kwargs)


def _lines(text: str) -> dict:
    return dict(line.split(" ", 1) for line in text.splitlines())


def test_a_forked_job_matches_a_fresh_interpreter(server, tmp_path):
    cwd = _job_dir(tmp_path)
    fresh = _client(cwd, threads="2")
    forked = _client(cwd, socket_path=server, threads="2")
    assert fresh.returncode == forked.returncode == 0, forked.stderr
    out, again = _lines(forked.stdout), _lines(_client(cwd, socket_path=server, threads="1").stdout)
    assert {**_lines(fresh.stdout), "unseeded": ""} == {**out, "unseeded": ""}
    assert fresh.stderr == forked.stderr == "to stderr\n"
    assert out["cwd"] == str(cwd) and out["env"] == "from the client" and out["threads"] == "2"
    assert again["threads"] == "1"
    assert again["unseeded"] != out["unseeded"]  # Python's and numpy's global RNGs are reseeded per job


def test_exit_status_and_tracebacks_reach_the_caller(server, tmp_path):
    cwd = _job_dir(tmp_path)
    assert _client(cwd, "3", socket_path=server).returncode == 3
    failed = _client(cwd, "raise", socket_path=server)
    assert failed.returncode == 1 and "RuntimeError: job failed on purpose" in failed.stderr
    missing = subprocess.run([sys.executable, "-m", "pixart.prefork", "-m", "no_such_module_here"], cwd=cwd,
                             env={**os.environ, prefork.ENV_VAR: server, "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no_such_module_here" in missing.stderr


def _sleeping_job(server: str, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """A client whose forked job has started and sleeps: (the client process, the job's pid)."""
    cwd = _job_dir(tmp_path)
    started = tmp_path / "started"
    env = {**os.environ, prefork.ENV_VAR: server, "PYTHONPATH": str(ROOT)}
    client = subprocess.Popen([sys.executable, "-m", "pixart.prefork", "-m", "prefork_job", "sleep", str(started)],
                              cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not started.exists():
        assert time.time() < deadline and client.poll() is None
        time.sleep(0.1)
    return client, int(started.read_text())


def _ends(pid: int, within: float = 10.0) -> bool:
    """Whether process `pid` is gone (killed and reaped by the server) within `within` seconds."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_killed_client_takes_its_job_with_it(server, tmp_path):
    client, job = _sleeping_job(server, tmp_path)
    client.send_signal(signal.SIGKILL)
    client.wait(timeout=10)
    assert _ends(job)


def test_sigterm_is_forwarded_to_the_job(server, tmp_path):
    client, job = _sleeping_job(server, tmp_path)
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=10) == 128 + signal.SIGTERM
    assert _ends(job)


def test_without_a_server_the_client_runs_the_job_itself(tmp_path):
    cwd = _job_dir(tmp_path)
    alone = _client(cwd, "4")
    assert alone.returncode == 4 and _lines(alone.stdout)["env"] == "from the client"
    gone = _client(cwd, socket_path=str(tmp_path / "no-server.sock"))  # a stale path, e.g. another machine
    assert gone.returncode == 0 and "value" in gone.stdout
    usage = subprocess.run([sys.executable, "-m", "pixart.prefork", "prefork_job"], cwd=cwd, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert usage.returncode != 0 and "usage" in usage.stderr
