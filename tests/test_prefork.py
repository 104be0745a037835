"""The prefork runner (pixart/prefork.py): a job forked from the server behaves like `python -m` in a fresh
interpreter (output, exit status, working directory, environment, temporary directory, thread counts, numbers,
unseeded RNGs), a killed client takes its job with it, a client that dies early ends only its own job, a
server that dies takes its jobs with it, and without a server, with a failed fork or with variables read at
startup that differ from the server's, the client runs the job itself."""
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pixart import prefork

ROOT = Path(__file__).resolve().parent.parent
JOB = textwrap.dedent("""
    import ctypes, os, sys, tempfile
    import torch
    unseeded = torch.rand(1).item()
    torch.manual_seed(0)
    x = torch.randn(64, 64)
    print("cwd", os.getcwd())
    print("env", os.environ.get("PREFORK_TEST_VALUE"))
    print("threads", torch.get_num_threads())
    import numpy, scipy.linalg  # each bundles an OpenBLAS
    blas = {line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line.rsplit("/", 1)[-1]}
    names = [prefix + "openblas_get_num_threads" + suffix for prefix in ("", "scipy_") for suffix in ("", "64_")]
    print("blas", *[getattr(ctypes.CDLL(path), name)() for path in sorted(blas) for name in names
                    if hasattr(ctypes.CDLL(path), name)])
    print("tmp", tempfile.gettempdir())
    print("parent", os.getppid())
    print("value", float((x @ x).sum()))
    import random
    print("unseeded", random.random(), numpy.random.random(), unseeded)
    print("to stderr", file=sys.stderr)
    if len(sys.argv) > 1 and sys.argv[1] == "raise":
        raise RuntimeError("job failed on purpose")
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
""")
SMALL = textwrap.dedent("""
    import os, sys, time
    print("parent", os.getppid(), flush=True)
    if len(sys.argv) > 2:  # write the job's pid to argv[1], then sleep argv[2] seconds
        open(sys.argv[1] + ".tmp", "w").write(str(os.getpid()))
        os.replace(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(float(sys.argv[2]))
""")
# the server gets the clients' PYTHONPATH (else every job runs fresh) and none of the thread variables, so that a
# job's thread counts are set in the fork (where the machine has more than one core)
SERVER_ENV = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": None, "OPENBLAS_NUM_THREADS": None,
              "GOTO_NUM_THREADS": None}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logs = tmp_path_factory.mktemp("prefork")
    env_before = {name: os.environ.get(name) for name in (prefork.ENV_VAR, *SERVER_ENV)}
    _set_environ(SERVER_ENV)
    try:
        process = prefork.start_server(str(logs / "prefork.log"))
        path = os.environ[prefork.ENV_VAR]
    finally:
        _set_environ(env_before)
    deadline = time.time() + 120
    while not os.path.exists(path):
        assert process.poll() is None, (logs / "prefork.log").read_text()
        assert time.time() < deadline, "the prefork server did not start in 120 s"
        time.sleep(0.2)
    yield path
    prefork.stop_server(process)
    assert not os.path.exists(os.path.dirname(path))  # neither the socket nor its folder is left in TMPDIR
    summary = (logs / "prefork.log").read_text().splitlines()[-1]
    assert re.fullmatch(r"prefork: stopped after [1-9]\d* job\(s\) run in a fork, \d+ left to their client \(\d+ s\)",
                        summary), summary


def _set_environ(values: dict):
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _job_dir(tmp_path: Path) -> Path:
    (tmp_path / "prefork_job.py").write_text(JOB)
    (tmp_path / "prefork_small.py").write_text(SMALL)
    return tmp_path


def _client(cwd: Path, *args, socket_path=None, threads="1", module="prefork_job", env=(), **kwargs):
    env = {**os.environ, "PREFORK_TEST_VALUE": "from the client", "OMP_NUM_THREADS": threads,
           "OPENBLAS_NUM_THREADS": threads, "PYTHONPATH": str(ROOT), "TMPDIR": str(cwd), **dict(env)}
    env.pop(prefork.ENV_VAR, None)
    if socket_path:
        env[prefork.ENV_VAR] = socket_path
    return subprocess.run([sys.executable, "-m", "pixart.prefork", "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, **kwargs)


def _lines(text: str) -> dict:
    return dict(line.split(" ", 1) for line in text.splitlines())


def _forked(out: dict) -> bool:
    """Whether the job ran in a fork of the server (its parent), not in the client's own process (ours)."""
    return int(out["parent"]) != os.getpid()


def test_a_forked_job_matches_a_fresh_interpreter(server, tmp_path):
    cwd = _job_dir(tmp_path)
    fresh = _client(cwd, threads="2")
    forked = _client(cwd, socket_path=server, threads="2")
    assert fresh.returncode == forked.returncode == 0, forked.stderr
    out, again = _lines(forked.stdout), _lines(_client(cwd, socket_path=server, threads="1").stdout)
    assert _forked(out) and _forked(again) and not _forked(_lines(fresh.stdout))
    per_process = {"unseeded": "", "parent": ""}
    assert {**_lines(fresh.stdout), **per_process} == {**out, **per_process}
    assert fresh.stderr == forked.stderr == "to stderr\n"
    assert out["cwd"] == str(cwd) and out["env"] == "from the client" and out["threads"] == "2"
    assert out["tmp"] == str(cwd)  # the job's TMPDIR, not the one the server's imports cached
    assert again["threads"] == "1" and set(again["blas"].split()) == {"1"}  # OpenBLAS's as well as torch's
    # Python's, numpy's and torch's global RNGs are reseeded per job
    assert all(a != b for a, b in zip(again["unseeded"].split(), out["unseeded"].split(), strict=True))


def test_variables_read_at_startup_that_differ_from_the_servers_make_a_fresh_interpreter(server, tmp_path):
    cwd = _job_dir(tmp_path)
    same = _client(cwd, socket_path=server, module="prefork_small")
    assert same.returncode == 0 and _forked(_lines(same.stdout))
    for name in ("PYTHONHASHSEED", "HF_HOME"):  # str hashes; huggingface_hub's cache, read at its import
        other = _client(cwd, socket_path=server, module="prefork_small", env={name: os.environ.get(name, "") + "1"})
        assert other.returncode == 0 and not _forked(_lines(other.stdout)), name


def test_exit_status_and_tracebacks_reach_the_caller(server, tmp_path):
    cwd = _job_dir(tmp_path)
    assert _client(cwd, "3", socket_path=server).returncode == 3
    failed = _client(cwd, "raise", socket_path=server)
    assert failed.returncode == 1 and "RuntimeError: job failed on purpose" in failed.stderr
    missing = subprocess.run([sys.executable, "-m", "pixart.prefork", "-m", "no_such_module_here"], cwd=cwd,
                             env={**os.environ, prefork.ENV_VAR: server, "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no_such_module_here" in missing.stderr


def _sleeping_job(server: str, tmp_path: Path, seconds=60, name="started") -> tuple[subprocess.Popen, int]:
    """A client whose forked job has started and sleeps: (the client process, the job's pid)."""
    cwd = _job_dir(tmp_path)
    started = tmp_path / name
    env = {**os.environ, prefork.ENV_VAR: server, "PYTHONPATH": str(ROOT)}
    client = subprocess.Popen([sys.executable, "-m", "pixart.prefork", "-m", "prefork_small", str(started),
                               str(seconds)], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = _started(started, client)
    assert job != client.pid  # forked, not run by the client itself
    return client, job


def _started(started: Path, client=None) -> int:
    """The pid a prefork_small job wrote to `started` once it runs."""
    deadline = time.time() + 60
    while not started.exists():
        assert time.time() < deadline and (client is None or client.poll() is None)
        time.sleep(0.05)
    return int(started.read_text())


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


def _gone(pid: int, within: float) -> bool:
    """Whether process `pid` is dead within `within` seconds (a zombie counts: an orphan's reaper may be slow)."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _raw_request(server: str, cwd: Path, *args) -> socket.socket:
    """Connect and send a request as the client does (descriptors: /dev/null), reading nothing."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(server)
    request = json.dumps({"argv": ["prefork_small", *args], "cwd": str(cwd),
                          "env": {**os.environ, "PYTHONPATH": str(ROOT)}}).encode()
    null = os.open(os.devnull, os.O_RDWR)
    try:
        socket.send_fds(conn, [prefork._HEADER.pack(len(request))], [null] * 3)
    finally:
        os.close(null)
    conn.sendall(request)
    return conn


def test_a_client_that_dies_early_ends_only_its_own_job(server, tmp_path):
    good, good_job = _sleeping_job(server, tmp_path, seconds=3, name="good")
    # a client gone before the server sends the pid (BrokenPipeError there) ...
    _raw_request(server, tmp_path, str(tmp_path / "early"), "60").close()
    # ... and one gone with the pid unread (ConnectionResetError when the server looks for its hang-up)
    late = _raw_request(server, tmp_path, str(tmp_path / "late"), "60")
    assert select.select([late], [], [], 30)[0] and len(late.recv(8, socket.MSG_PEEK)) == 8  # the pid, left unread
    late_job = _started(tmp_path / "late")
    late.close()
    assert _ends(late_job)
    assert good.wait(timeout=30) == 0  # the server kept serving it
    if (tmp_path / "early").exists():
        assert _ends(int((tmp_path / "early").read_text()))
    after = _client(tmp_path, socket_path=server, module="prefork_small")
    assert after.returncode == 0 and _forked(_lines(after.stdout))


def test_a_client_that_connects_and_says_nothing_does_not_stall_the_server(server, tmp_path):
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(server)  # and never sends its request
    try:
        started = time.time()
        after = _client(_job_dir(tmp_path), socket_path=server, module="prefork_small")
        assert after.returncode == 0 and _forked(_lines(after.stdout))
        assert time.time() - started < prefork.REQUEST_TIMEOUT + 20
    finally:
        stalled.close()


def _own_server(tmp_path: Path, failing_forks: int = 0) -> tuple[subprocess.Popen, str]:
    """A server without preloads (quick to start) whose first `failing_forks` forks fail with EAGAIN."""
    path = str(tmp_path / "own.sock")
    script = textwrap.dedent(f"""
        import os, sys
        from pixart import prefork
        fork, failing = os.fork, [{failing_forks}]
        def failing_fork():
            failing[0] -= 1
            if failing[0] >= 0:
                raise BlockingIOError(11, "Resource temporarily unavailable")
            return fork()
        os.fork = failing_fork
        prefork.serve({path!r}, preload=())
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 60
    while not os.path.exists(path):
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    return process, path


def test_a_failed_fork_leaves_the_job_to_its_client_and_the_server_serving(tmp_path):
    process, path = _own_server(_job_dir(tmp_path), failing_forks=1)
    try:
        failed = _client(tmp_path, socket_path=path, module="prefork_small")
        assert failed.returncode == 0 and not _forked(_lines(failed.stdout))  # run by the client itself
        forked = _client(tmp_path, socket_path=path, module="prefork_small")
        assert forked.returncode == 0 and _forked(_lines(forked.stdout)) and process.poll() is None
    finally:
        process.kill()
        process.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_server_takes_its_jobs_with_it(tmp_path):
    process, path = _own_server(_job_dir(tmp_path))
    client, job = _sleeping_job(path, tmp_path)
    try:
        process.kill()  # e.g. the OOM killer: no chance to end its jobs itself
        assert client.wait(timeout=10) == 1  # "the server went away"
        assert _gone(job, within=2)
    finally:
        if not _gone(job, within=0):
            os.kill(job, signal.SIGKILL)
        process.wait()


def test_without_a_server_the_client_runs_the_job_itself(tmp_path):
    cwd = _job_dir(tmp_path)
    alone = _client(cwd, "4")
    assert alone.returncode == 4 and _lines(alone.stdout)["env"] == "from the client"
    gone = _client(cwd, socket_path=str(tmp_path / "no-server.sock"))  # a stale path, e.g. another machine
    assert gone.returncode == 0 and "value" in gone.stdout
    usage = subprocess.run([sys.executable, "-m", "pixart.prefork", "prefork_job"], cwd=cwd, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert usage.returncode != 0 and "usage" in usage.stderr
