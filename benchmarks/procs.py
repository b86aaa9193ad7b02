"""The processes of a benchmark run: starting a server, waiting for its port, measuring its tree, stopping it.

Every load benchmark here (run.py and the round-based scripts) starts servers the same way: in a session of
their own, so that stopping one also reaches the workers it forked; started once a connection to its port
(or its Unix socket) is accepted; output to a log whose tail explains a failed start; RSS and CPU time read
from /proc over the whole process tree (a master and its workers). Also here: pinning the server and the
load generator to their own CPUs, the descriptor limit 1000 connections need, and signals that unwind like
Ctrl-C so that no server outlives the runner. Linux only (/proc).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent  # benchmarks/: servers start here, where apps.py is

SERVER_CPU = "0"
CLIENT_CPU = "1"


# ----------------------------------------------------------------------------------------------- /proc


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (a master and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, ()))
    return pids


def tree_rss_kib(root: int) -> int:
    """VmRSS summed over ``root`` and its descendants."""
    return sum(_rss_kib(pid) for pid in _tree(root))


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime, all threads
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time so far of the process trees rooted at ``pids``."""
    hz = os.sysconf("SC_CLK_TCK")
    return sum(_cpu_ticks(pid) for root in pids for pid in _tree(root)) / hz


class RssSampler:
    """Samples a process tree's RSS every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_kib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------- the servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """True once a connection to 127.0.0.1:``port`` is accepted; False if ``proc`` exits or ``timeout`` passes."""
    return _wait_accepted(lambda: socket.create_connection(("127.0.0.1", port), 0.2).close(), proc, timeout)


def wait_unix(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """:func:`wait_port` for a server bound to a Unix socket: True once a connect() to ``path`` succeeds.

    The file appearing is not enough: bind() creates it before listen(), and a socket left by an earlier run
    is a file that refuses every connection. Only an accepted connect() says the server is listening.
    """
    def connect() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            s.connect(str(path))

    return _wait_accepted(connect, proc, timeout)


def _wait_accepted(connect: Callable[[], None], proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Try ``connect`` every 50 ms until it succeeds (True), ``proc`` exits or ``timeout`` passes (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            connect()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def spawn(argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server from benchmarks/ in its own session (so :func:`stop` reaches its workers), its output
    to ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, cwd=HERE, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)


def not_started(where: int | Path, proc: subprocess.Popen[bytes], timeout: float) -> str:
    """Wait for the server to listen on ``where`` (a loopback port, or a Unix socket's path): '' once it does,
    else why not (for a "did not start" note)."""
    if isinstance(where, Path):
        if wait_unix(where, proc, timeout):
            return ""
    elif wait_port(where, proc, timeout):
        return ""
    code = proc.poll()
    if code is not None:
        return f"exited with {code}"
    missing = f"socket at {where}" if isinstance(where, Path) else "port"
    return f"no {missing} after {timeout:.0f} s"


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the server's session, then (after ``grace`` seconds if it has not exited by then) SIGKILL
    whatever is left of it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived their master


def log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(line.strip() for line in text[-lines:])[:300]


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every finally (which kills the servers) runs."""
    def raise_exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)
    previous = {sig: signal.signal(sig, raise_exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------ the machine's share


def pin(cpu: str | None) -> list[str]:
    """The argv prefix that runs a command on ``cpu`` (none when not pinning)."""
    return ["taskset", "-c", cpu] if cpu is not None else []


def can_pin(no_pin: bool) -> bool:
    """Pin the server and the load generator to their own CPUs: unless --no-pin, with two CPUs and taskset."""
    return not no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def keep_off_server_cpu() -> None:
    """Move this runner (and the load generators it starts) to the client's CPU, off the server's."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(CLIENT_CPU)})


def raise_nofile() -> None:
    """1000 connections need more than the usual 1024 descriptors, in wrk and in the servers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
