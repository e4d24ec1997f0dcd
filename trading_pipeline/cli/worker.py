"""A warm worker: `trading` commands (and the dbt builds they start) without the import floor.

Why: every `trading` process imports Dagster, dagster-dbt, dbt, great-expectations, DuckDB,
polars and pandas before it does any work — about 6 s of a one-session `trading scan` on a
2-core machine — and each dbt build it starts imports dbt again (~1.7 s) in its own process.
The work itself (load one session, check it, build the incremental models) is a few seconds.

How: `trading worker start` starts one process per TRADING_HOME that imports those packages
once and then waits on a Unix socket (``$TRADING_HOME/worker.sock``, mode 0600, same-user peers
only). The `trading` entry point and the ``trading-dbt`` shim dagster-dbt runs
(``cli/entry.py``) look for that socket first; when a worker answers, they hand it their
arguments, environment, working directory and their stdin/stdout/stderr (the file descriptors
themselves, over SCM_RIGHTS), and the worker forks a child that runs the command exactly as the
process would have — its own environment (settings are read in the child, never in the worker),
its own terminal (Rich progress bars, ``--json``), its own exit code, returned to the caller.
Ctrl-C in the caller is forwarded to the child's process group. Nothing else changes: each
command still starts a real Dagster run in the home's instance, and dbt still runs as the
``dbt build`` dagster-dbt asked for. Without a worker (the default), or when it refuses (a
different Python, or our code changed since it started: it then exits so the next start loads
the new code), the command runs in its own process as before.

The worker first imports third-party packages only (:func:`_check_pristine` makes sure no
setting was read meanwhile), then warms up (``cli/entry.py`` ``warm``: the settings, the Dagster
definitions with the dbt manifest), which reads the settings of its own
environment and directory. So it serves only commands whose settings come from the same
(:func:`env_fingerprint`: TRADING_/DAGSTER_/DBT_/GX_ variables, directory, ``.env``); any other
command runs in its own process. Our Python code and the dbt project are watched
(:func:`code_stamp`): an edit after the start makes the worker refuse and exit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

SOCKET_NAME = "worker.sock"
ENV_SOCKET = "TRADING_WORKER_SOCKET"  # set in each child, so the dbt it starts finds the worker
ENV_SWITCH = "TRADING_WORKER"  # "off": never delegate (this process does the work)
# imported once by the worker: the packages a run needs, not our own (they read settings)
PRELOAD = (
    "dagster", "dagster_dbt", "dagster_dbt.core.dbt_cli_invocation", "great_expectations",
    "dbt.cli.main", "dbt.adapters.duckdb", "duckdb", "polars", "pandas", "pyarrow", "numpy",
    "sqlalchemy", "alembic", "exchange_calendars", "structlog", "rich.progress", "typer",
    "pydantic_settings", "jinja2", "agate", "sqlglot", "yaml",
)
PACKAGE_ROOTS = ("trading_pipeline", "trading_api")
DBT_SOURCES = (".sql", ".py", ".yml", ".yaml")  # the dbt project's (its manifest is in the warm definitions)
_MAX_HEADER = 4 << 20


class WorkerError(RuntimeError):
    """The worker could not be started, reached or stopped (the message says what to do)."""


# ---------------------------------------------------------------------------------------------
# the socket protocol: a length-prefixed JSON header with fds, then JSON lines back


def _send_json(sock: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    payload = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [payload], fds)
    else:
        sock.sendall(payload)


def _recv_request(sock: socket.socket) -> tuple[dict, list[int]]:
    msg, fds, _flags, _addr = socket.recv_fds(sock, 65536, 3)
    if len(msg) < 4:
        raise WorkerError("short request")
    (n,) = struct.unpack("!I", msg[:4])
    if n > _MAX_HEADER:
        raise WorkerError("request too large")
    data = msg[4:]
    while len(data) < n:
        chunk = sock.recv(min(65536, n - len(data)))
        if not chunk:
            raise WorkerError("request cut short")
        data += chunk
    return json.loads(data[:n]), list(fds)


def _reply(conn: socket.socket, obj: dict) -> None:
    with contextlib.suppress(OSError):
        conn.sendall((json.dumps(obj) + "\n").encode())


# ---------------------------------------------------------------------------------------------
# where the worker listens, and whether our code changed since it started


def socket_path(home: Path | str) -> Path:
    return Path(home).resolve() / SOCKET_NAME


def _home_socket() -> Path:
    from trading_pipeline.settings import get_settings

    return socket_path(get_settings().home)


def code_stamp() -> float:
    """The newest modification time of our Python sources, of the dbt project's files and of
    the environment's packages folder (it changes when packages are added or removed): a
    worker whose start predates it would run old code."""
    here = Path(__file__).resolve().parents[2]
    newest = 0.0
    roots = [(here / r, (".py",)) for r in PACKAGE_ROOTS] + [(here / "dbt_project", DBT_SOURCES)]
    for root, suffixes in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "target", "logs", "dbt_packages")]
            for f in filenames:
                if f.endswith(suffixes):
                    with contextlib.suppress(OSError):
                        newest = max(newest, os.stat(os.path.join(dirpath, f)).st_mtime)
    with contextlib.suppress(Exception):
        import sysconfig

        newest = max(newest, os.stat(sysconfig.get_paths()["purelib"]).st_mtime)
    return newest


FINGERPRINT_PREFIXES = ("TRADING_", "DAGSTER_", "DBT_", "GX_")


def env_fingerprint(env: dict[str, str], cwd: str) -> str:
    """What the settings of a command started with ``env`` in ``cwd`` are read from: the
    variables our settings, Dagster, dbt and GX read, the directory (relative paths) and its
    ``.env`` file. A worker warmed with one answers only commands with the same."""
    import hashlib

    items = sorted((k, v) for k, v in env.items()
                   if k.startswith(FINGERPRINT_PREFIXES) and k not in (ENV_SWITCH, ENV_SOCKET))
    digest = hashlib.sha256(repr((items, os.path.realpath(cwd))).encode())
    with contextlib.suppress(OSError):
        digest.update(Path(cwd, ".env").read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# the caller's side


def _connect(path: Path) -> socket.socket | None:
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:  # a socket file a dead worker left: nobody answers
        sock.close()
        return None
    return sock


def delegate(kind: str, argv: list[str], path: Path | None = None) -> int | None:
    """Run ``argv`` in the worker and return its exit code, or None to run it here (no worker,
    or it refused: a different interpreter, or it is older than our code)."""
    if os.environ.get(ENV_SWITCH, "").lower() in ("off", "0", "false", "no"):
        return None
    try:
        path = path or (Path(os.environ[ENV_SOCKET]) if os.environ.get(ENV_SOCKET) else _home_socket())
    except Exception:  # noqa: BLE001 - bad settings: let the command itself say so
        return None
    sock = _connect(path)
    if sock is None:
        return None
    with sock:
        try:
            _send_json(sock, {"kind": kind, "argv": argv, "env": dict(os.environ), "cwd": os.getcwd(),
                              "python": sys.executable}, [0, 1, 2])
            reader = sock.makefile("r")
            first = json.loads(reader.readline() or "{}")
        except (OSError, ValueError):
            return None
        if "pid" not in first:
            if first.get("refused") == "stale":
                print("trading: the worker started before the code changed; running here "
                      "(`trading worker start` loads the new code)", file=sys.stderr)
            elif first.get("refused") == "environment":
                print("trading: this command's settings (TRADING_* variables, .env, directory) are not the "
                      "worker's; running here", file=sys.stderr)
            return None
        pid = int(first["pid"])
        forward = lambda signum, _frame: _signal_group(pid, signum)  # noqa: E731
        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            line = reader.readline()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        try:
            return int(json.loads(line)["exit"])
        except (ValueError, KeyError, TypeError):
            print(f"trading: the worker went away while running this command (process {pid}); "
                  "its outcome is unknown: see `trading status`", file=sys.stderr)
            return 1


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


# ---------------------------------------------------------------------------------------------
# the worker's side


def _check_pristine() -> None:
    """Preloading must not have built our settings: the worker's environment is not a
    command's (each child reads its caller's)."""
    mod = sys.modules.get("trading_pipeline.settings")
    if mod is not None and mod.get_settings.cache_info().currsize:
        raise WorkerError("preloading read the settings: the worker would run commands with its own environment")


def _native_threads() -> list[str]:
    """The names of this process's OS threads (Python's and native libraries' pools)."""
    out = []
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                out.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip() + f"#{tid}")
    return out


def preload(modules: tuple[str, ...] = PRELOAD) -> float:
    import importlib

    t0 = time.perf_counter()
    for name in modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    _check_pristine()
    return time.perf_counter() - t0


def _fresh_stdio() -> None:
    """Python objects over the caller's fds 0-2 (line-buffered when a terminal, as Python
    would have made them for the caller)."""
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="surrogateescape")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                  line_buffering=os.isatty(1), write_through=False)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                  line_buffering=True, write_through=True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr


def _run_child(runner: Callable[[list[str]], object], request: dict, fds: list[int], sock_path: Path) -> int:
    for target, fd in zip((0, 1, 2), fds, strict=False):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    _fresh_stdio()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[ENV_SOCKET] = str(sock_path)
    argv = list(request["argv"])
    sys.argv = argv
    try:
        runner(argv)
        return 0
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseException:  # noqa: BLE001 - as the interpreter would: the traceback, exit 1
        import traceback

        traceback.print_exc()
        return 1
    finally:
        _exit_like_the_interpreter()


def _exit_like_the_interpreter() -> None:
    """What Python does at exit, which ``os._exit`` skips: wait for non-daemon threads, run
    the atexit handlers (multiprocessing's clean-up, logging's flush), flush stdio."""
    import atexit
    import threading

    with contextlib.suppress(Exception):
        threading._shutdown()  # type: ignore[attr-defined]
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()


class Worker:
    """One listening socket, one fork per request; single-threaded (a fork from a process with
    other threads can inherit a held lock)."""

    def __init__(self, path: Path, runners: dict[str, Callable[[list[str]], object]],
                 warm: Callable[[], object] | None = None) -> None:
        """``runners``: what a request of each kind runs in the child, given its argv (raising
        SystemExit for a non-zero exit, as a CLI does). ``warm``: work done once after the
        imports, whose cached results every child inherits (settings, Dagster definitions,
        calendars): it reads the settings, so the worker then serves only commands whose
        :func:`env_fingerprint` is its own."""
        self.path = path
        self.runners = runners
        self.warm = warm
        self.fingerprint = env_fingerprint(dict(os.environ), os.getcwd())
        self.warm_s = 0.0
        self.started = time.time()
        self.stamp = code_stamp()
        self.served = dict.fromkeys(runners, 0)
        self.children: dict[int, socket.socket] = {}
        self.stopping = False
        self.preload_s = 0.0

    def _peer_ok(self, conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid == os.getuid()

    def status(self) -> dict:
        return {"pid": os.getpid(), "socket": str(self.path), "started": self.started,
                "uptime_s": round(time.time() - self.started, 1), "preload_s": round(self.preload_s, 2),
                "warm_s": round(self.warm_s, 2), "cwd": os.getcwd(),
                "served": dict(self.served), "running": len(self.children), "python": sys.executable}

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            if not self._peer_ok(conn):
                conn.close()
                return
            request, fds = _recv_request(conn)
        except (OSError, ValueError, WorkerError):
            conn.close()
            return
        kind = request.get("kind")
        if kind in ("status", "stop"):
            if kind == "stop":
                self.stopping = True
            _reply(conn, {**self.status(), "stopping": self.stopping})
            conn.close()
            return
        try:
            refused = None
            if kind not in self.served or len(fds) != 3:
                refused = "bad request"
            elif request.get("python") != sys.executable:
                refused = "python"
            elif kind == "trading" and env_fingerprint(request.get("env") or {}, request.get("cwd") or "/") != self.fingerprint:
                refused = "environment"
            elif self.stopping:
                refused = "stopping"
            elif code_stamp() > self.stamp:
                refused, self.stopping = "stale", True
            if refused:
                _reply(conn, {"refused": refused})
                conn.close()
                return
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the child: never returns into the worker's loop
                code = 1
                try:
                    conn.close()
                    self.listener.close()
                    for other in self.children.values():  # other callers' sockets: theirs to close
                        other.close()
                    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                        signal.signal(s, signal.SIG_DFL)
                    os.setpgid(0, 0)
                    code = _run_child(self.runners[kind], request, fds, self.path)
                finally:
                    os._exit(code)
            with contextlib.suppress(OSError):
                os.setpgid(pid, pid)
            self.served[kind] += 1
            self.children[pid] = conn
            print(json.dumps({"event": "command", "pid": pid, "kind": kind, "argv": request["argv"][:3],
                              "cwd": request["cwd"]}), flush=True)
            conn.settimeout(None)
            _reply(conn, {"pid": pid})
        finally:
            for fd in fds:
                os.close(fd)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                code = os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
                _reply(conn, {"exit": code})
                conn.close()
                print(json.dumps({"event": "command_done", "pid": pid, "exit": code}), flush=True)

    def serve(self) -> None:
        self.preload_s = preload()
        threads = _native_threads()
        if self.warm is not None:
            t0 = time.perf_counter()
            self.warm()
            self.warm_s = time.perf_counter() - t0
        started = sorted(set(_native_threads()) - set(threads))
        if started:  # e.g. polars' pool: a forked child would wait on its lock for ever
            raise WorkerError(f"warming up started threads {started}: a fork of this process would deadlock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if _connect(self.path) is not None:
            raise WorkerError(f"a worker already listens on {self.path}: `trading worker stop` first")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self.listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        self.listener.listen(16)
        self.listener.setblocking(False)

        def stop(_signum, _frame) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        print(json.dumps({"event": "worker_ready", **self.status()}), flush=True)
        try:
            while not (self.stopping and not self.children):
                for _key, _ev in sel.select(timeout=0.1):
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = self.listener.accept()
                        conn.setblocking(True)
                        self._handle(conn)
                self._reap()
                if self.stopping and self.listener.fileno() != -1:
                    sel.unregister(self.listener)
                    self.listener.close()
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
        finally:
            if self.listener.fileno() != -1:
                self.listener.close()
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        print(json.dumps({"event": "worker_stopped", "served": self.served}), flush=True)


def ask(path: Path, kind: str) -> dict | None:
    """``status``/``stop`` of the worker on ``path`` (None: no worker answers there)."""
    sock = _connect(path)
    if sock is None:
        return None
    with sock:
        sock.settimeout(10)
        try:
            _send_json(sock, {"kind": kind})
            return json.loads(sock.makefile("r").readline() or "null")
        except (OSError, ValueError):
            return None
