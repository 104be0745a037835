"""Pre-forked job runner: one server imports torch, diffusers, transformers, open_clip… once; each DAG job
forks from it instead of paying 5–10 s of imports in a fresh interpreter.

On 2 CPU cores the embedded demo runs ~100 short `python -m …` jobs, most of whose time was imports
(docs/benchmarks.md). With `prefork: true` in the config, the Snakefile starts a server at the start of a
run and every job command `python -m pixart.prefork -m MODULE ARGS…` connects to it:

- client (`python -m pixart.prefork -m MODULE ARGS…`): sends its argv, working directory, environment and
  stdin/stdout/stderr file descriptors over a Unix socket (path in $PIXART_PREFORK), forwards SIGINT/SIGTERM/
  SIGHUP to the job and exits with the job's exit status (128 + signal when killed). With no server (the
  variable unset, the socket gone, another machine of a cluster) or when the server closes the connection
  without starting the job, it execs `python -m MODULE ARGS…` itself, so the command is the same with and
  without a server.
- server (`python -m pixart.prefork serve SOCKET`): imports PRELOAD, then forks one child per request and
  runs the module as `__main__` (runpy) in it. A client that disconnects (killed, even by SIGKILL) gets its
  job terminated; a request that fails (the client gone, fork failing with ENOMEM/EAGAIN) ends only that
  connection. The server exits when its parent (Snakemake) is gone or on SIGTERM, and its jobs die with it,
  even when it is SIGKILLed (PR_SET_PDEATHSIG, Linux).

What a forked job gets from its client: argv, descriptors 0–2, working directory, os.environ, and what is
re-read from them in the child: TMPDIR & co. (tempfile), torch's thread count (OMP_NUM_THREADS), the thread
count of each OpenBLAS the server loaded (numpy's and scipy's; OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS,
OMP_NUM_THREADS by OpenBLAS's own rule), fresh seeds for `random`, numpy's and torch's global RNGs (CPU; CUDA
is not initialised in the server, so its generators start from torch's fixed default as in a fresh
interpreter). Variables read once at interpreter start or import cannot be re-read: a request whose PYTHON*
(PYTHONPATH, PYTHONHASHSEED, …) or HF_*/HUGGINGFACE_* (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, …) variables
differ from the server's, or whose OpenBLAS thread variables differ when the server found no way to set
OpenBLAS's threads, is not forked: the client runs it in a fresh interpreter. Under Snakemake they only
differ if a rule sets them; the thread variables it sets per job are honoured. Anything else a library
read at import stays the server's.

Forking is safe because the server runs no Python thread and never runs a torch op (OpenMP's pool is
started by the first parallel op, in the child); the native threads its imports start (OpenBLAS's pools,
pyarrow's jemalloc background thread) are stopped or made consistent by their libraries' fork handlers.
Results are bit-identical to a fresh interpreter (tests/test_prefork.py); only import time differs.
"""
from __future__ import annotations

import json
import os
import re
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

# read once at interpreter start or import (sys.path, str hashes, huggingface_hub.constants): a job whose values
# differ from the server's runs in a fresh interpreter
_FRESH_IF_CHANGED = ("PYTHON", "HF_", "HUGGINGFACE_")
REQUEST_TIMEOUT = 5.0  # seconds for a client to send its request
_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")  # OpenBLAS's order


def _openblas() -> list | None:
    """(set_num_threads, get_num_procs) of each OpenBLAS loaded in this process (numpy's and scipy's wheels
    each bundle one, with prefixed/suffixed names), or None when one of them, or the list, cannot be found."""
    import ctypes

    try:
        with open("/proc/self/maps") as maps:  # Linux; elsewhere the jobs whose thread variables differ run fresh
            paths = {line.split(None, 5)[5].strip() for line in maps if "openblas" in line.rsplit("/", 1)[-1]}
        found = []
        for path in sorted(paths):
            lib = ctypes.CDLL(path)  # already loaded: the same library, not a second copy
            names = [(f"{prefix}openblas_set_num_threads{suffix}", f"{prefix}openblas_get_num_procs{suffix}")
                     for prefix in ("", "scipy_") for suffix in ("", "64_")]
            found.append(next((getattr(lib, s), getattr(lib, p)) for s, p in names if hasattr(lib, s)
                              and hasattr(lib, p)))
        return found
    except (OSError, StopIteration):
        return None


def _atoi(value: str | None) -> int:
    digits = re.match(r"\s*[+-]?\d+", value or "")  # as OpenBLAS reads them: "2x" is 2, "x" is 0
    return int(digits.group()) if digits else 0


def _forkable(env: dict, server_env: dict, openblas) -> bool:
    names = {name for name in (*env, *server_env) if name.startswith(_FRESH_IF_CHANGED)}
    if openblas is None:
        names.update(_BLAS_THREADS)
    return all(env.get(name) == server_env.get(name) for name in names)


def _run_job(request: dict, fds: list[int], mask, server_env: dict, openblas) -> int:
    """In the forked child: become the job and run it; returns its exit status."""
    for sig in _FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal sent meanwhile is delivered now, to the job
    sys.stdout.flush()
    sys.stderr.flush()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # what the libraries read from the server's environment at import and can be told again
    import tempfile

    tempfile.tempdir = None  # gettempdir() cached the server's TMPDIR
    if "OMP_NUM_THREADS" in os.environ and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    if any(os.environ.get(name) != server_env.get(name) for name in _BLAS_THREADS):
        wanted = next((n for n in map(_atoi, map(os.environ.get, _BLAS_THREADS)) if n > 0), 0)
        for set_num_threads, get_num_procs in openblas:  # OpenBLAS's rule at load: at most one per core
            set_num_threads(min(wanted, get_num_procs()) if wanted else get_num_procs())
    # a fresh interpreter seeds these from the OS; forked jobs would otherwise all share the server's state
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:  # the CPU generator only: CUDA's start from a fixed seed in a fresh interpreter too
        sys.modules["torch"].default_generator.seed()
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


def _die_with(server: int):
    """In the forked child: be sent SIGTERM when the server dies, even by SIGKILL (the OOM killer): its client
    then reports a failure, and the job must not run on beside a rerun of it."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, ctypes.c_ulong(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != server:  # it died before prctl took effect
        os._exit(1)


def _child(request: dict, fds: list[int], inherited: list, server: int, mask, server_env: dict, openblas):
    code = 1
    try:  # never return into the server's loop, whatever happens
        _die_with(server)
        for handle in inherited:
            handle.close()
        code = _run_job(request, fds, mask, server_env, openblas)
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
    server_env = dict(os.environ)  # what the imports read (some also add variables)
    for name in preload:
        try:
            __import__(name)
        except ImportError:  # optional: a job that needs it imports it itself
            pass
    openblas = _openblas()
    if openblas is None:  # e.g. no /proc (macOS): say why jobs with their own thread counts are not forked
        print("prefork: cannot set OpenBLAS thread counts in a forked job here; jobs whose OPENBLAS/GOTO/OMP thread "
              "variables differ from the server's run in a fresh interpreter", flush=True)
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
    forked = declined = 0
    try:
        while os.getppid() == parent:
            for key, _ in selector.select(timeout=0.2):
                if key.fileobj is listener:
                    if _accept(listener, selector, jobs, server_env, openblas):
                        forked += 1
                    else:
                        declined += 1
                else:  # a client hung up before its job ended: end the job
                    pid = key.data
                    try:
                        alive = key.fileobj.recv(1, socket.MSG_PEEK)
                    except OSError:  # ECONNRESET: it died with the pid unread
                        alive = b""
                    if pid in jobs and not alive:
                        selector.unregister(key.fileobj)
                        os.kill(pid, signal.SIGTERM)
            _reap(selector, jobs)
    finally:
        for pid in jobs:
            os.kill(pid, signal.SIGTERM)
        if os.path.exists(path):
            os.unlink(path)
        # a run with many declined jobs paid an interpreter start for each: this line says how many
        print(f"prefork: stopped after {forked} job(s) run in a fork, {declined} left to their client "
              f"({time.perf_counter() - started:.0f} s)", flush=True)


def _accept(listener: socket.socket, selector, jobs: dict, server_env: dict, openblas) -> bool:
    """Start the job of the next request; whether it runs in a fork. Whatever fails ends this connection only, and
    a client that gets no pid runs its job itself: a bad request, an environment a fork cannot give, a failed fork
    (ENOMEM, EAGAIN)."""
    try:
        conn, _ = listener.accept()
    except OSError:  # the client is gone already
        return False
    fds, pid = [], 0
    try:
        conn.settimeout(REQUEST_TIMEOUT)  # a client that connects and stalls must not hold up every other job
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        request = json.loads(_recv_exactly(conn, _HEADER.unpack(header)[0]))
        if not _forkable(request["env"], server_env, openblas):
            raise ValueError("for a fresh interpreter")
        # signals for the child wait until it has its own handlers: the server's (sys.exit) would unwind it into
        # the server's loop, whose `finally` ends the other jobs and removes the socket
        mask, server = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED), os.getpid()
        try:
            pid = os.fork()
            if pid == 0:
                _child(request, fds, [selector, listener, conn, *jobs.values()], server, mask, server_env, openblas)
            jobs[pid] = conn  # from now on the job ends with the server
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        conn.sendall(_PID.pack(pid))  # BrokenPipeError: the client died before reading it
        conn.settimeout(None)
        selector.register(conn, selectors.EVENT_READ, data=pid)
        return True
    except (OSError, ValueError, LookupError, TypeError, struct.error):
        if pid:
            del jobs[pid]
            os.kill(pid, signal.SIGTERM)  # reaped by _reap
        conn.close()
        return False
    finally:
        for fd in fds:
            os.close(fd)


def _reap(selector, jobs: dict):
    while True:  # every child, also those no longer in `jobs`
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
    """Stop the server and remove the folder `start_server` made for its socket."""
    import shutil

    os.environ.pop(ENV_VAR, None)
    server.terminate()
    try:
        server.wait(timeout=10)
    except Exception:  # noqa: BLE001 - a server that does not stop is killed
        server.kill()
        server.wait()
    shutil.rmtree(os.path.dirname(server.args[-1]), ignore_errors=True)  # args end with the socket's path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(argv[1])
    else:
        sys.exit(run_client(argv))


if __name__ == "__main__":
    main()
