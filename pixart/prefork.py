"""Pre-forked job runner: one server imports torch, diffusers, transformers, open_clip… once; each DAG job
forks from it instead of paying 5–10 s of imports in a fresh interpreter.

On 2 CPU cores the embedded demo runs ~100 short `python -m …` jobs, most of whose time was imports
(docs/benchmarks.md). With `prefork: true` in the config, the Snakefile starts a server at the start of a
run and every job command `python -m pixart.prefork -m MODULE ARGS…` connects to it:

- client (`python -m pixart.prefork -m MODULE ARGS…`): sends its argv, working directory, environment and
  stdin/stdout/stderr file descriptors over a Unix socket (path in $PIXART_PREFORK), forwards SIGINT/SIGTERM/
  SIGHUP to the job and exits with the job's exit status (128 + signal when killed). With no server (the
  variable unset, the socket gone, another machine of a cluster) it execs `python -m MODULE ARGS…` itself,
  so the command is the same with and without a server.
- server (`python -m pixart.prefork serve SOCKET`): imports PRELOAD, then forks one child per request. The
  child takes the client's descriptors, directory and environment, sets torch's thread count from
  OMP_NUM_THREADS (OpenMP read the server's at import) and runs the module as `__main__` (runpy). A client
  that disconnects (killed, even by SIGKILL) gets its job terminated. The server exits when its parent
  (Snakemake) is gone or on SIGTERM.

Forking is safe because the server is single-threaded and never runs a torch op (OpenMP's pool is started
by the first parallel op, in the child). Results are bit-identical to a fresh interpreter
(tests/test_prefork.py); only import time differs.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

ENV_VAR = "PIXART_PREFORK"
PRELOAD = ("numpy", "pandas", "pyarrow.parquet", "PIL.Image", "scipy.ndimage", "scipy.stats", "tqdm", "yaml",
           "torch", "torchvision", "transformers", "open_clip", "diffusers.models.transformers",
           "diffusers.models.autoencoders", "diffusers.schedulers", "matplotlib.pyplot")
_HEADER = struct.Struct("!Q")  # length of the JSON request that follows
_PID = struct.Struct("!q")
_STATUS = struct.Struct("!i")
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# -- client -------------------------------------------------------------------------------------------------

def _exec_fresh(argv: list[str]):
    os.execv(sys.executable, [sys.executable, *argv])


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def run_client(argv: list[str]) -> int:
    """Run `python ARGV` (ARGV = -m MODULE ARGS…) in a fork of the server, or exec it when there is none."""
    if len(argv) < 2 or argv[0] != "-m":
        raise SystemExit("usage: python -m pixart.prefork -m MODULE [ARGS…] | serve SOCKET")
    path = os.environ.get(ENV_VAR)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if not path:
            raise OSError("no server")
        conn.connect(path)
        request = json.dumps({"argv": argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(conn, [_HEADER.pack(len(request))], [0, 1, 2])
        conn.sendall(request)
        pid_bytes = _recv_exactly(conn, _PID.size)
    except OSError:
        pid_bytes = b""
    if len(pid_bytes) < _PID.size:  # nothing was started: run it here
        conn.close()
        _exec_fresh(argv)
    (pid,) = _PID.unpack(pid_bytes)
    for sig in _FORWARDED:
        signal.signal(sig, lambda signum, frame: os.kill(pid, signum))
    status = _recv_exactly(conn, _STATUS.size)
    if len(status) < _STATUS.size:
        print(f"prefork: the server went away while job {pid} ran", file=sys.stderr)
        return 1
    (code,) = _STATUS.unpack(status)
    return code if code >= 0 else 128 - code


# -- server -------------------------------------------------------------------------------------------------

def _run_job(request: dict, fds: list[int]) -> int:
    """In the forked child: become the job and run it; returns its exit status."""
    for sig in _FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdout.flush()
    sys.stderr.flush()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if "OMP_NUM_THREADS" in os.environ and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    # a fresh interpreter seeds these from the OS; forked jobs would otherwise all share the server's state
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    module, *args = request["argv"]
    sys.argv = [module, *args]
    if "" not in sys.path:  # `python -m` puts the working directory first
        sys.path.insert(0, "")
    import runpy
    import traceback

    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - report like the interpreter would, then fail the job
        traceback.print_exc()
        code = 1
    return code


def _child(request: dict, fds: list[int], inherited: list):
    code = 1
    try:  # never return into the server's loop, whatever happens
        for handle in inherited:
            handle.close()
        code = _run_job(request, fds)
    finally:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def serve(path: str, preload=PRELOAD):
    """Import `preload`, then fork a child per request on the Unix socket `path` until told to stop."""
    started = time.perf_counter()
    parent = os.getppid()
    for name in preload:
        try:
            __import__(name)
        except ImportError:  # optional: a job that needs it imports it itself
            pass
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.tmp{os.getpid()}"
    listener.bind(tmp)
    listener.listen(64)
    os.replace(tmp, path)  # clients see the socket only when it accepts
    print(f"prefork: serving on {path} after {time.perf_counter() - started:.1f} s of imports", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    jobs: dict[int, socket.socket] = {}
    try:
        while os.getppid() == parent:
            for key, _ in selector.select(timeout=0.2):
                if key.fileobj is listener:
                    _accept(listener, selector, jobs)
                else:  # a client hung up before its job ended: end the job
                    pid = key.data
                    if pid in jobs and not key.fileobj.recv(1, socket.MSG_PEEK):
                        selector.unregister(key.fileobj)
                        os.kill(pid, signal.SIGTERM)
            _reap(selector, jobs)
    finally:
        for pid in jobs:
            os.kill(pid, signal.SIGTERM)
        if os.path.exists(path):
            os.unlink(path)


def _accept(listener: socket.socket, selector, jobs: dict):
    conn, _ = listener.accept()
    try:
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        request = json.loads(_recv_exactly(conn, _HEADER.unpack(header)[0]))
    except (OSError, ValueError, struct.error):
        conn.close()
        return
    pid = os.fork()
    if pid == 0:
        _child(request, fds, inherited=[selector, listener, conn, *jobs.values()])
    for fd in fds:
        os.close(fd)
    conn.sendall(_PID.pack(pid))
    jobs[pid] = conn
    selector.register(conn, selectors.EVENT_READ, data=pid)


def _reap(selector, jobs: dict):
    while jobs:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = jobs.pop(pid, None)
        if conn is None:
            continue
        try:
            selector.unregister(conn)
        except KeyError:
            pass
        try:
            conn.sendall(_STATUS.pack(os.waitstatus_to_exitcode(status)))
        except OSError:
            pass
        conn.close()


# -- the Snakefile's hooks ----------------------------------------------------------------------------------

def start_server(log_path: str) -> "subprocess.Popen":
    """Start a server for this process's children (sets $PIXART_PREFORK); jobs started before it accepts
    run as fresh interpreters."""
    import subprocess
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="pixart-prefork-"), "sock")
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "pixart.prefork", "serve", path], stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    os.environ[ENV_VAR] = path
    return server


def stop_server(server) -> None:
    os.environ.pop(ENV_VAR, None)
    server.terminate()
    try:
        server.wait(timeout=10)
    except Exception:  # noqa: BLE001 - a server that does not stop is killed
        server.kill()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(argv[1])
    else:
        sys.exit(run_client(argv))


if __name__ == "__main__":
    main()
