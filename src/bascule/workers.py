"""Worker side of the process model: what a worker process runs, and how it reports to its master.

A worker is forked by the master (or, with --reload, started as a fresh interpreter by
``python -m bascule.workers``) with the listening sockets already bound. It serves them with
:class:`bascule.server.Server` on an event loop of its own, and talks to the master through one pipe
(messages of :func:`frame`):

- ``READY`` once its listeners accept, which is what a rolling restart waits for before stopping the
  worker this one replaces;
- ``HEARTBEAT`` from a timer on its event loop: a loop that stops beating is stuck (a blocking call in
  async code), and the master kills and replaces it after dumping its stacks (SIGUSR2, faulthandler);
- ``RECYCLE`` once it has served ``--max-requests``: it keeps serving until its replacement is up;
- ``ERROR`` with the one-line message when it could not boot, so the master prints it once;
- ``READINESS`` with each change of the ``--readiness-check`` answer (JSON ``{"ok", "reason"}``), which the
  master's ``/readyz`` reads (a worker whose check fails does not count as serving there);
- ``SNAPSHOT`` with --metrics: its cumulative metrics as JSON every second and once as it stops
  (:mod:`bascule.ops.metrics`), which the master merges (:mod:`bascule.ops.merge`).

The exit code is the other half of the contract (docs/deployment.md): 0 after a requested stop, 2/3/4 for
a configuration, app-import or startup failure (the :mod:`bascule.errors` codes: the master does not
restart workers in a loop on those), anything else a crash.

Signals in a worker: TERM graceful stop, QUIT fast stop, USR1 reopen log files, USR2 dump every thread's
stack to stderr (a C-level faulthandler, so it works even when the loop is stuck in C code); INT and HUP
are ignored, because a terminal sends them to the whole process group and the master decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import fcntl
import importlib
import json
import logging
import mmap
import os
import select
import signal
import socket
import struct
import sys
import termios
import time
from collections.abc import Callable
from typing import Any

from bascule.config import Config
from bascule.errors import BasculeError, StartupError
from bascule.listen.listeners import BoundListener, Listener
from bascule.logs import reopen_log_files
from bascule.mounts import Mount

_log = logging.getLogger("bascule.error")

READY, HEARTBEAT, RECYCLE, ERROR, READINESS, SNAPSHOT = b"R", b"H", b"M", b"E", b"Y", b"S"
_HEADER = struct.Struct("!cI")
HEARTBEAT_MAX_INTERVAL = 1.0
EXIT_CRASH = 1

# Signals whose master-side handlers a forked worker must not keep (and which it must not die of early).
MASTER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
                  signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def unframe(buffer: bytearray) -> list[tuple[bytes, bytes]]:
    """Complete messages at the start of ``buffer`` (removed from it); a partial one stays."""
    messages = []
    while len(buffer) >= _HEADER.size:
        kind, size = _HEADER.unpack_from(buffer)
        end = _HEADER.size + size
        if len(buffer) < end:
            break
        messages.append((kind, bytes(buffer[_HEADER.size:end])))
        del buffer[:end]
    return messages


def heartbeat_interval(timeout: float) -> float:
    """Beat four times per healthcheck timeout (at most once a second), so one late beat is no alarm."""
    return HEARTBEAT_MAX_INTERVAL if timeout <= 0 else min(HEARTBEAT_MAX_INTERVAL, timeout / 4)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSetup:
    """Everything a worker gets from its master; serialisable for workers that are fresh interpreters."""

    config: Config
    socket_fds: tuple[int, ...]
    report_fd: int
    master_pid: int
    number: int  # 1, 2, ... in spawn order: names the worker in logs and its process title
    max_requests: int | None  # --max-requests plus this worker's jitter
    listeners: tuple[Listener, ...] = ()  # the spec of each socket in socket_fds (none: inherited, by config)
    quic: tuple[tuple[str, int], ...] = ()  # HTTP/3 UDP addresses the master probed: each worker binds its own

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["config"] = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}
        data["listeners"] = [spec.to_json() for spec in self.listeners]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> WorkerSetup:
        data = json.loads(text)
        data["config"] = Config(**data["config"])
        data["socket_fds"] = tuple(data["socket_fds"])
        data["listeners"] = tuple(Listener.from_json(spec) for spec in data.get("listeners", ()))
        data["quic"] = tuple((host, port) for host, port in data.get("quic", ()))
        return cls(**data)

    def bound_listeners(self) -> list[BoundListener]:
        """The shared sockets, each with its spec (a socket without one is taken as an inherited fd)."""
        specs = self.listeners or tuple(Listener("fd", fd, self.config.tls_enabled) for fd in self.socket_fds)
        bound = []
        for spec, fd in zip(specs, self.socket_fds, strict=True):
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            bound.append(BoundListener(spec, sock))
        return bound


class Reporter:
    """The write end of the pipe to the master. A gone master is not an error here (the heartbeat notices)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        try:
            self.capacity = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        except (OSError, AttributeError):  # not a pipe (a test's socket), or not Linux: no room check
            self.capacity = 0

    def room(self) -> int:
        """Bytes the pipe can take now without a partial write (the capacity less what the master has not read)."""
        try:
            queued: int = struct.unpack("i", fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return 0
        return max(0, self.capacity - queued)

    def send(self, kind: bytes, payload: bytes = b"", *, droppable: bool = False) -> None:
        message = frame(kind, payload)
        if (droppable and len(message) > select.PIPE_BUF and self.capacity
                and self.room() < len(message) + 2 * select.PIPE_BUF):
            # Larger than PIPE_BUF, a write may take part of it, and a message begun must be finished: with
            # the master behind, that would hold the worker's loop for up to the deadline below. A droppable
            # message (a metrics snapshot: the next one carries the same totals) waits for room instead. The
            # margin: the kernel fills the pipe by pages, so a partly read page's bytes are not room yet.
            return
        data = memoryview(message)
        deadline = time.monotonic() + 2.0
        while data:
            try:
                data = data[os.write(self.fd, data):]
            except BlockingIOError:  # the master is not reading: a heartbeat can wait for the next one
                if (droppable and len(data) == len(message)) or time.monotonic() > deadline:
                    return  # a message begun is finished (a half frame would garble every one after it)
                time.sleep(0.005)
            except OSError:
                return


class Heartbeat:
    """A timer on the worker's event loop: beats to the master, and stops the worker if the master is gone."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reporter: Reporter, interval: float, master_pid: int,
                 on_orphaned: Callable[[], None]) -> None:
        self.loop = loop
        self.reporter = reporter
        self.interval = interval
        self.master_pid = master_pid
        self.on_orphaned = on_orphaned
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._beat()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _beat(self) -> None:
        if os.getppid() != self.master_pid:
            _log.warning("worker %d: the master (%d) is gone; stopping", os.getpid(), self.master_pid)
            self._handle = None
            self.on_orphaned()
            return
        self.reporter.send(HEARTBEAT, droppable=True)
        self._handle = self.loop.call_later(self.interval, self._beat)


def request_counter(limit: int, on_limit: Callable[[], None]) -> Callable[[Callable[[Any], None]],
                                                                           Callable[[Any], None]]:
    """Wraps the dispatch callable: one counter per request, ``on_limit`` once at the ``limit``-th."""

    def wrap(inner: Callable[[Any], None]) -> Callable[[Any], None]:
        count = 0

        def dispatch(ex: Any) -> None:
            nonlocal count
            count += 1
            if count == limit:
                on_limit()
            inner(ex)

        return dispatch

    return wrap


class DrainFlag:
    """One byte of memory the master shares with the workers it forks: is it holding ``--shutdown-delay``?

    systemd's default KillMode (and ``kill -TERM -PGID``) sends SIGTERM to the workers as well as to the
    master. A worker that stopped on it would end the delay's serving at once, and the master, still in
    its delay, would replace it as crashed. A signal handler cannot tell who sent the signal, so the
    master says what it is doing here instead: a worker that gets SIGTERM while the master is in its
    delay serves on, and the master stops it when the delay is over. Anonymous shared memory (not a
    pipe) because the master writes it from its loop and a worker only reads one byte, with no wake-up.
    """

    IDLE, DELAYING, STOPPING = 0, 1, 2

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: the forked workers see the master's writes

    def set(self, state: int) -> None:
        self._map[0] = state

    def get(self) -> int:
        return self._map[0]


def on_sigterm(loop: asyncio.AbstractEventLoop, server: Any, flag: DrainFlag | None,
               recheck: float = 0.1) -> Callable[[], None]:
    """The worker's SIGTERM handler: stop gracefully, unless the master is in its ``--shutdown-delay``.

    The master and its workers get a process group's SIGTERM at the same moment, and the master marks its
    delay a moment later (from its loop), so a worker that does not see the mark yet looks again after
    ``recheck`` seconds before it stops. A SIGTERM the master sends itself comes after it marked STOPPING.
    """
    if flag is None:
        return lambda: server.request_exit()

    def decide() -> None:
        if flag.get() == DrainFlag.DELAYING:
            _log.info("worker %d: SIGTERM while the master holds --shutdown-delay: serving on until it "
                      "stops the workers", os.getpid())
        else:
            server.request_exit()

    def handler() -> None:
        if flag.get() == DrainFlag.DELAYING:
            decide()
        else:
            loop.call_later(recheck, decide)

    return handler


def run_worker(setup: WorkerSetup, mounts: list[Mount] | None = None, drain_flag: DrainFlag | None = None) -> int:
    """Serve as one worker until told to stop; the exit code for the master."""
    from bascule.server import Server, new_event_loop  # here: the master imports this module, not the server
    from bascule.tuning import tune_gc, tune_malloc

    config = setup.config
    set_process_title(f"bascule worker {setup.number} {config.app or ''}".rstrip())
    if config.runtime_tuning:
        tune_malloc()
    early: list[int] = []  # stop signals that arrive while the app is still loading: acted on once it serves
    for signum in MASTER_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, _: early.append(signum))
    signal.signal(signal.SIGQUIT, lambda signum, _: early.append(signum))
    faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True)
    reporter = Reporter(setup.report_fd)
    listeners = setup.bound_listeners()

    def at_limit() -> None:
        _log.info("worker %d served %d requests (--max-requests): replacing it", os.getpid(), setup.max_requests)
        reporter.send(RECYCLE)

    wrap = request_counter(setup.max_requests, at_limit) if setup.max_requests else None
    def readiness(ok: bool, reason: str) -> None:
        reporter.send(READINESS, json.dumps({"ok": ok, "reason": reason}).encode())

    def ready() -> None:
        if config.runtime_tuning:
            tune_gc()  # the app has started: what it built is frozen out of later collections
        reporter.send(READY)

    server = Server(config, mounts=mounts, wrap_dispatch=wrap, on_ready=ready,
                    announce=False, admin=False, on_readiness=readiness,
                    publish_metrics=lambda data, final: reporter.send(SNAPSHOT, data, droppable=not final),
                    quic=list(setup.quic))
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_serve(server, setup, listeners, reporter, early, drain_flag))
    except BasculeError as exc:
        reporter.send(ERROR, json.dumps({"code": exc.exit_code, "message": str(exc)}).encode())
        return exc.exit_code
    except Exception:
        _log.exception("worker %d crashed", os.getpid())
        return EXIT_CRASH
    return 0


async def _serve(server: Any, setup: WorkerSetup, listeners: list[BoundListener], reporter: Reporter,
                 early: list[int], drain_flag: DrainFlag | None = None) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_sigterm(loop, server, drain_flag))
    loop.add_signal_handler(signal.SIGQUIT, server.request_exit, True)
    loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)
    heartbeat = Heartbeat(loop, reporter, heartbeat_interval(setup.config.timeout_worker_healthcheck),
                          setup.master_pid, server.request_exit)
    heartbeat.start()
    if early:  # told to stop while loading: start (so lifespan startup and shutdown pair up), then stop
        loop.call_soon(server.request_exit, signal.SIGQUIT in early)
    try:
        await server.serve(listeners)
    finally:
        heartbeat.stop()


def set_process_title(title: str) -> None:
    """Name the process in ps/top, when the optional setproctitle package is installed."""
    try:
        module: Any = importlib.import_module("setproctitle")
    except ImportError:
        return
    module.setproctitle(title)


class PidFile:
    """``--pid FILE``: written at start, removed at exit if it still names this process."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def __enter__(self) -> PidFile:
        if self.path is not None:
            try:
                with open(self.path, "w") as fh:
                    fh.write(f"{os.getpid()}\n")
            except OSError as exc:
                raise StartupError(f"cannot write the pid file {self.path!r}: {exc.strerror}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.path is None:
            return
        with contextlib.suppress(OSError, ValueError):
            with open(self.path) as fh:
                if int(fh.read().strip()) != os.getpid():
                    return
            os.unlink(self.path)


def spawned_main(argv: list[str]) -> int:
    """Entry of a worker started as a fresh interpreter (--reload): the setup comes through a pipe."""
    from bascule.logs import configure_logging

    if len(argv) != 2 or argv[0] != "--setup-fd" or not argv[1].isdigit():
        print("usage: python -m bascule.workers --setup-fd N (started by the bascule master)", file=sys.stderr)
        return 2
    with os.fdopen(int(argv[1]), "r") as fh:
        setup = WorkerSetup.from_json(fh.read())
    configure_logging(setup.config)
    return run_worker(setup)


if __name__ == "__main__":
    raise SystemExit(spawned_main(sys.argv[1:]))
