"""Master process: binds the listeners once, forks the workers, and keeps their number and health.

The master imports no app code unless ``--preload`` asks for it, so every worker it forks loads the code on
disk: that is what makes SIGHUP a code reload. It runs one loop, modelled on gunicorn's arbiter: signal
handlers only record the signal (and wake the loop through ``signal.set_wakeup_fd``); the loop then reads
the workers' reports (:mod:`bascule.workers`), reaps the dead, checks heartbeats and memory, and starts or
stops workers until the set matches what it should be. Nothing blocks in between but the one ``select``.

Replacing a worker is always "new one first": the replacement is forked, and only once it reports READY
(its listeners accept) is the old one sent SIGTERM to drain. That one rule serves SIGHUP (every worker),
--max-requests and --max-worker-memory (one worker). A worker that dies unexpectedly is replaced at once;
if workers keep dying young the next start waits, doubling up to ``MAX_BACKOFF``. A worker that fails to
boot while no worker serves (an import error, a failed lifespan startup) stops the whole server with that
worker's one-line message and exit code, instead of a crash loop.

With ``--reload`` the same loop restarts the workers on file changes (:mod:`bascule.reloader`), starting
them as fresh interpreters, stopping the old ones before starting new ones, and waiting for the next change
instead of stopping when the code does not boot.

``--admin-bind`` is served by the master, from an asyncio loop in a thread (ops/admin_listener.py), which
reads only what this loop publishes after each pass (:class:`~bascule.ops.sources.MasterState`: the workers,
their state, heartbeats and readiness-check answers, draining). With ``--shutdown-delay``, the first
SIGTERM/SIGINT makes ``/readyz`` fail and the stop waits for the delay while the workers go on serving; a
second one, or SIGQUIT, stops at once.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from bascule import tls
from bascule.config import Config
from bascule.errors import AppLoadError, BasculeError, ConfigError, StartupError
from bascule.listen import quic
from bascule.listen.listeners import BoundListener, bind_listeners, describe, remove_unix_sockets
from bascule.logs import reopen_log_files
from bascule.mounts import Mount, resolve_mounts
from bascule.ops.admin_listener import AdminThread, bind_admin
from bascule.ops.merge import MetricsBook
from bascule.ops.metrics import enabled as metrics_enabled
from bascule.ops.metrics import parse_buckets
from bascule.ops.sources import MasterSource, MasterState, WorkerRow, resident_mib
from bascule.ops.views import MasterMetrics
from bascule.workers import (
    ERROR,
    MASTER_SIGNALS,
    READINESS,
    READY,
    RECYCLE,
    SNAPSHOT,
    DrainFlag,
    PidFile,
    WorkerSetup,
    run_worker,
    set_process_title,
    unframe,
)

_log = logging.getLogger("bascule.error")

STRAGGLER_GRACE = 5.0  # after --timeout-graceful-shutdown, a draining worker gets this long before SIGKILL
FAST_STOP_GRACE = 3.0  # after SIGQUIT, a worker gets this long before SIGKILL
STACK_DUMP_WAIT = 0.3  # between SIGUSR2 (faulthandler dump) and SIGKILL of a stuck worker
STABLE_SECONDS = 5.0  # a worker that lived this long before dying does not count towards the backoff
MAX_BACKOFF = 30.0
MEMORY_CHECK_INTERVAL = 1.0
MAX_WAIT = 1.0


class State(enum.Enum):
    BOOTING = "booting"  # forked, not yet accepting
    SERVING = "serving"
    RETIRING = "retiring"  # told to stop (TERM or QUIT), draining


@dataclass(eq=False)
class Worker:
    pid: int
    number: int
    report_fd: int
    spawned: float
    generation: int
    proc: subprocess.Popen[bytes] | None = None  # workers started as fresh interpreters (--reload)
    state: State = State.BOOTING
    ready_at: float | None = None
    last_beat: float = 0.0
    buffer: bytearray = field(default_factory=bytearray)
    error: tuple[int, str] | None = None  # the ERROR report: (exit code, one-line message)
    replaces: Worker | None = None  # takes this worker's place once READY
    replaced_by: Worker | None = None
    recycle: str | None = None  # why this worker should be replaced (reload, max-requests, memory)
    retry_at: float = 0.0  # when a failed replacement may be tried again
    kill_at: float | None = None  # SIGKILL then: a straggler after SIGTERM, or a stuck worker after SIGUSR2
    stuck: bool = False
    killed: bool = False
    restarts: int = 0  # workers this one's place had before it (deaths and replacements)
    check_ok: bool = True  # the --readiness-check's last answer this worker reported (False until the first)
    check_reason: str = ""


def backoff(failures: int) -> float:
    """Delay before starting a worker after ``failures`` young deaths in a row: none for the first."""
    return 0.0 if failures <= 1 else min(MAX_BACKOFF, 0.1 * 2 ** (failures - 2))


def describe_exit(status: int) -> tuple[int, str]:
    """(exit code as the master returns it, words): a signal is 128+N, as a shell shows it."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        return 128 - code, f"was killed by {name}"
    return code, f"exited with code {code}"


def boot_error(code: int, message: str) -> BasculeError:
    """The error the master stops with when a worker could not boot: the worker's code, or 4."""
    kinds: dict[int, type[BasculeError]] = {2: ConfigError, 3: AppLoadError}
    return kinds.get(code, StartupError)(message)


class Supervisor:
    """Runs the master loop for ``config``; :meth:`run` returns the exit code or raises the boot error."""

    def __init__(self, config: Config, app: Any = None) -> None:
        self.config = config
        self.app = app
        self.target = config.workers
        self.workers: list[Worker] = []
        self.listeners: list[BoundListener] = []  # bound once, shared by every worker (specs included)
        self.sockets: list[socket.socket] = []
        self.quic: list[tuple[str, int]] = []  # HTTP/3 addresses, probed here; each worker binds its own socket
        self.mounts: list[Mount] | None = None
        self.generation = 1
        self.stopping = False
        self.fast = False
        self.paused = False  # --reload: the code did not boot; wait for the next change
        self.fatal: BasculeError | None = None
        self.failures = 0
        self.respawn_at = 0.0
        self._numbers = 0
        self._signals: list[int] = []
        self._memory_check_at = 0.0
        self._reported_reload_failure = 0
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = -1, -1
        self._watcher: Any = None
        self.restarts = 0  # workers started in the place of another (deaths, recycling, reloads)
        self._inherited: list[int] = []  # restart counts of dead workers' places, for their replacements
        self.delay_until: float | None = None  # --shutdown-delay running: the graceful stop starts then
        # what forked workers read on SIGTERM (workers.DrainFlag); workers started with --reload exec a fresh
        # interpreter and do not share it: they stop on any SIGTERM, as without a delay
        self._drain_flag = DrainFlag() if config.shutdown_delay > 0 else None
        self.admin_state = MasterState(readiness_check=config.readiness_check is not None)
        self.admin_source = MasterSource(self.admin_state)  # metrics attach here (metrics_view)
        self._admin: AdminThread | None = None
        # --metrics: the workers' snapshots merged, and the restarts counted here (bascule.ops.merge)
        self.metrics = MetricsBook(parse_buckets(config.metrics_buckets)) if metrics_enabled(config) else None
        if self.metrics is not None:
            self.admin_source.metrics_view = MasterMetrics(self.metrics)

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self) -> int:
        config = self.config
        if not hasattr(os, "fork"):
            raise ConfigError("workers, max_requests, max_worker_memory and reload need a master process, which "
                              "needs os.fork (not available on this platform): serve with one process")
        if config.max_worker_memory is not None and not os.path.exists("/proc/self/statm"):
            raise ConfigError("max_worker_memory reads /proc/PID/statm, which this system does not have")
        if config.reload and self.app is not None:
            raise ConfigError("reload needs the app as MODULE:ATTR (an app object cannot be reloaded)")
        if config.preload or self.app is not None:
            self.mounts = resolve_mounts(config, self.app)
        # Each worker builds its own TLS context (so SIGHUP's new workers load the certificate files again);
        # the master checks the files once first, so a bad one is one error line, not one per worker.
        tls.server_context(config, ["http/1.1"])
        set_process_title(f"bascule master {config.app or ''}".rstrip())
        self.listeners = bind_listeners(config)
        self.sockets = [bound.sock for bound in self.listeners]
        try:
            for sock in self.sockets:
                sock.listen(config.backlog)  # connections queue while the workers boot instead of failing
            # HTTP/3: each worker binds its own UDP sockets; a port in use is found here, once (listen/quic.py)
            self.quic = quic.probe(quic.quic_addresses(config, self.listeners), reuse_port=config.reuse_port)
            if self.quic:
                quic.quic_configuration(config)  # a certificate aioquic cannot use: one line, not one per worker
            with PidFile(config.pid):
                self._install_signals()
                try:
                    self._start_admin()
                    if config.reload:
                        from bascule.reloader import ChangeWatcher

                        self._watcher = ChangeWatcher(config, self._wake)
                        self._watcher.start()
                    for bound in self.listeners:
                        _log.info("bascule master %d serving on %s with %d worker(s) (press CTRL+C to quit)",
                                  os.getpid(), describe(bound.sock, bound.spec.scheme), self.target)
                    for address in self.quic:
                        _log.info("bascule master %d serving on %s (HTTP/3) with %d worker(s)", os.getpid(),
                                  quic.describe(address), self.target)
                    return self._loop()
                except BaseException as exc:
                    if not isinstance(exc, BasculeError):  # a bug in the master: leave no worker behind
                        self._signal_all(signal.SIGTERM)
                    raise
                finally:
                    if self._watcher is not None:
                        self._watcher.stop()
                    if self._admin is not None:
                        self._admin.stop()
                    self._restore_signals()
        finally:
            self._close_sockets()
            remove_unix_sockets(config)

    def _start_admin(self) -> None:
        """--admin-bind: bind it (a port in use stops the start with one line) and serve it from a thread whose
        signals stay blocked, so every signal reaches this loop's handlers."""
        if self.config.admin_bind is None:
            return
        self._publish(time.monotonic())
        admin = AdminThread(self.config, self.admin_source, bind_admin(self.config))
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            admin.start()
        except BaseException:
            admin.stop()  # closes the socket it bound
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self._admin = admin
        _log.info("bascule master %d: admin routes on %s (/livez, /readyz, /metrics, /status)", os.getpid(),
                  admin.where)

    def _publish(self, now: float) -> None:
        """What the admin thread may read of this loop: a snapshot of the workers, replaced whole."""
        rows = tuple(WorkerRow(pid=w.pid, number=w.number, spawned=w.spawned, state=w.state.value,
                               last_beat=w.last_beat, restarts=w.restarts, check_ok=w.check_ok,
                               check_reason=w.check_reason) for w in self.workers)
        self.admin_state.publish(rows, draining=self.stopping or self.delay_until is not None,
                                 restarts=self.restarts, now=now)

    def _loop(self) -> int:
        while True:
            now = time.monotonic()
            for key, _ in self._selector.select(self._wait(now)):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 4096):
                            pass
                else:
                    self._read_reports(key.data)
            self._handle_signals()
            self._reap()
            if self.stopping and not self.workers:
                if self.fatal is not None:
                    raise self.fatal
                _log.info("bascule master %d stopped", os.getpid())
                return 0
            now = time.monotonic()
            if self._watcher is not None and not self.stopping:
                self._on_changes(self._watcher.take())
            self._check_health(now)
            self._maintain(now)
            if self.delay_until is not None and now >= self.delay_until and not self.stopping:
                _log.info("--shutdown-delay is over: stopping gracefully")
                self._stop(fast=False)
            if self._admin is not None:
                self._publish(now)

    def _wait(self, now: float) -> float:
        """Seconds the loop may sleep: until the nearest deadline, at most MAX_WAIT."""
        times = [now + MAX_WAIT]
        if self.delay_until is not None and not self.stopping:
            times.append(self.delay_until)
        timeout = self.config.timeout_worker_healthcheck
        for w in self.workers:
            if w.kill_at is not None and not w.killed:
                times.append(w.kill_at)
            if timeout and not w.stuck and not w.killed:
                times.append(w.last_beat + timeout)
        if not self.stopping and not self.paused:
            times.extend(w.retry_at for w in self._primaries() if w.recycle and w.replaced_by is None)
            if len(self._primaries()) < self.target and not self._reload_waits():
                times.append(self.respawn_at)
        return max(0.0, min(times) - now)

    def _reload_waits(self) -> bool:
        """--reload: new workers wait until the old ones are gone (two app instances never overlap)."""
        return self.config.reload and any(w.state is State.RETIRING for w in self.workers)

    # -- signals ----------------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in MASTER_SIGNALS:
            signal.signal(signum, self._record_signal)

    def _record_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)  # only record: the loop acts (set_wakeup_fd has woken it)

    def _wake(self) -> None:
        """Wake the loop from another thread (the --reload watcher)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for signum in MASTER_SIGNALS:
            signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _handle_signals(self) -> None:
        pending, self._signals = self._signals, []
        for signum in pending:
            name = signal.Signals(signum).name
            if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                fast = signum == signal.SIGQUIT or self.stopping
                delay = self.config.shutdown_delay
                if not fast and delay > 0 and self.delay_until is None:
                    _log.info("master received %s: not ready from now on; serving for %g s more "
                              "(--shutdown-delay), then stopping gracefully", name, delay)
                    self.delay_until = time.monotonic() + delay
                    if self._drain_flag is not None:
                        self._drain_flag.set(DrainFlag.DELAYING)  # the workers serve on through a group SIGTERM
                    continue
                if not fast and self.delay_until is not None:
                    _log.info("master received %s again: skipping the rest of --shutdown-delay", name)
                else:
                    _log.info("master received %s: %s", name, "stopping now" if fast else "stopping gracefully")
                self._stop(fast=fast)
            elif self.stopping:
                continue
            elif signum == signal.SIGHUP:
                self._reload()
            elif signum == signal.SIGTTIN:
                self.target += 1
                _log.info("master received SIGTTIN: %d worker(s) now", self.target)
            elif signum == signal.SIGTTOU:
                if self.target > 1:
                    self.target -= 1
                _log.info("master received SIGTTOU: %d worker(s) now%s", self.target,
                          " (the least there can be)" if self.target == 1 else "")
            elif signum == signal.SIGUSR1:
                _log.info("master received SIGUSR1: reopening log files")
                reopen_log_files()
                self._signal_all(signal.SIGUSR1)

    def _signal_all(self, signum: int) -> None:
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signum)

    def _stop(self, *, fast: bool) -> None:
        if self.stopping and (self.fast or not fast):
            return
        self.stopping, self.fast = True, fast
        if self._drain_flag is not None:
            self._drain_flag.set(DrainFlag.STOPPING)  # from now on a worker's SIGTERM is the master's: it stops
        self._close_sockets()  # the workers' copies close as they stop: then the port refuses
        for w in self.workers:
            self._retire(w, fast=fast)

    def _reload(self) -> None:
        self.generation += 1
        live = [w for w in self.workers if w.state is not State.RETIRING]
        _log.info("master received SIGHUP: replacing %d worker(s), new ones first", len(live))
        self.paused = False
        for w in live:
            w.recycle, w.retry_at = "reload", 0.0

    def _on_changes(self, changes: list[str]) -> None:
        """--reload: stop the workers; new ones start once the old ones are gone (see _maintain)."""
        if not changes:
            return
        shown = ", ".join(os.path.relpath(path) for path in changes[:3]) + (" ..." if len(changes) > 3 else "")
        _log.warning("changes in %s: restarting", shown)
        self.paused = False
        self.failures = 0
        self.respawn_at = 0.0
        for w in self.workers:
            if w.state is not State.RETIRING:
                self._restarted("reload")
                self._retire(w, fast=False)

    # -- workers ----------------------------------------------------------------------------------------
    def _primaries(self) -> list[Worker]:
        """The workers that count towards --workers: not stopping, and not a replacement still booting."""
        return [w for w in self.workers if w.state is not State.RETIRING and w.replaces is None]

    def _maintain(self, now: float) -> None:
        if self.stopping or self.paused:
            return
        if self._reload_waits():
            return
        primaries = self._primaries()
        while len(primaries) < self.target and now >= self.respawn_at:
            spawned = self._spawn(now)
            if spawned is None:
                break
            primaries.append(spawned)
        excess = len(primaries) - self.target
        if excess > 0:  # SIGTTOU: the oldest go, those without a replacement on the way first
            for w in sorted(primaries, key=lambda w: (w.replaced_by is not None, w.spawned))[:excess]:
                if w.replaced_by is not None:
                    self._retire(w.replaced_by, fast=False)
                self._retire(w, fast=False)
        for w in primaries:
            if w.recycle and w.replaced_by is None and w.state is not State.RETIRING and now >= w.retry_at:
                self._spawn(now, replaces=w)

    def _spawn(self, now: float, *, replaces: Worker | None = None) -> Worker | None:
        config = self.config
        self._numbers += 1
        limit = None
        if config.max_requests is not None:
            limit = config.max_requests + random.randint(0, config.max_requests_jitter)
        report_r, report_w = os.pipe()
        setup = WorkerSetup(config=config, socket_fds=tuple(s.fileno() for s in self.sockets), report_fd=report_w,
                            master_pid=os.getpid(), number=self._numbers, max_requests=limit,
                            listeners=tuple(bound.spec for bound in self.listeners), quic=tuple(self.quic))
        try:
            if config.reload:
                proc: subprocess.Popen[bytes] | None = self._exec_worker(setup)
                pid = proc.pid if proc is not None else 0
            else:
                proc, pid = None, self._fork_worker(setup, report_r)
        except OSError as exc:
            os.close(report_r)
            os.close(report_w)
            _log.error("cannot start a worker: %s", exc)
            self.failures += 1
            self.respawn_at = now + max(0.1, backoff(self.failures))
            return None
        os.close(report_w)
        os.set_blocking(report_r, False)
        w = Worker(pid=pid, number=setup.number, report_fd=report_r, spawned=now, generation=self.generation,
                   proc=proc, last_beat=now, replaces=replaces, check_ok=config.readiness_check is None)
        if replaces is not None:
            replaces.replaced_by = w
            w.restarts = replaces.restarts + 1
        elif self._inherited:
            w.restarts = self._inherited.pop(0) + 1
        if w.restarts:
            self.restarts += 1
        self.workers.append(w)
        self._selector.register(report_r, selectors.EVENT_READ, w)
        _log.debug("started worker %d (pid %d)", w.number, pid)
        return w

    def _fork_worker(self, setup: WorkerSetup, report_r: int) -> int:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)  # no master handler runs in the child
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            raise
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            return pid
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for fd in (report_r, self._wake_r, self._wake_w, *(w.report_fd for w in self.workers)):
                os.close(fd)
            if self._admin is not None:
                self._admin.close_in_child()  # the admin port and its connections are the master's alone
            self._selector.close()
            for signum in MASTER_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            code = run_worker(setup, self.mounts, self._drain_flag)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _exec_worker(self, setup: WorkerSetup) -> subprocess.Popen[bytes]:
        setup_r, setup_w = os.pipe()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "bascule.workers", "--setup-fd", str(setup_r)],
                                    pass_fds=(setup_r, setup.report_fd, *setup.socket_fds))
        finally:
            os.close(setup_r)
        with os.fdopen(setup_w, "w") as fh:
            fh.write(setup.to_json())
        return proc

    def _retire(self, w: Worker, *, fast: bool) -> None:
        """Ask ``w`` to stop (TERM drains, QUIT closes now) and set the deadline after which it is killed."""
        if w.state is State.RETIRING and not fast:
            return
        w.state = State.RETIRING
        grace = FAST_STOP_GRACE if fast else self.config.timeout_graceful_shutdown + STRAGGLER_GRACE
        w.kill_at = min(w.kill_at or float("inf"), time.monotonic() + grace)
        if w.replaces is not None:
            w.replaces.replaced_by = None
            w.replaces = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.pid, signal.SIGQUIT if fast else signal.SIGTERM)

    def _read_reports(self, w: Worker) -> None:
        while True:
            try:
                data = os.read(w.report_fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            w.buffer += data
        now = time.monotonic()
        for kind, payload in unframe(w.buffer):
            w.last_beat = now
            if kind == READY:
                self._on_ready(w, now)
            elif kind == RECYCLE and w.state is not State.RETIRING and not w.recycle:
                w.recycle = "max-requests"
            elif kind == ERROR:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    info = json.loads(payload)
                    w.error = (int(info["code"]), str(info["message"]))
            elif kind == READINESS:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    info = json.loads(payload)
                    w.check_ok, w.check_reason = bool(info["ok"]), str(info["reason"])
            elif kind == SNAPSHOT and self.metrics is not None:
                self.metrics.update(w.pid, payload)

    def _on_ready(self, w: Worker, now: float) -> None:
        if w.state is State.BOOTING:
            w.state = State.SERVING
        w.ready_at = now
        _log.info("worker %d (pid %d) ready in %.2f s", w.number, w.pid, now - w.spawned)
        old = w.replaces
        if old is not None:
            w.replaces, old.replaced_by = None, None
            _log.info("worker %d (pid %d) replaced (%s): draining it", old.number, old.pid, old.recycle)
            self._restarted(old.recycle or "reload")
            self._retire(old, fast=False)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = next((w for w in self.workers if w.pid == pid), None)
            if w is None:
                continue
            self._read_reports(w)  # its last snapshot too, before its counts are retired
            if self.metrics is not None:
                self.metrics.retire(w.pid)
            self._selector.unregister(w.report_fd)
            os.close(w.report_fd)
            self.workers.remove(w)
            code, words = describe_exit(status)
            if w.proc is not None:
                w.proc.returncode = code  # reaped here: keeps Popen from waiting for it again
            self._on_exit(w, code, words)

    def _on_exit(self, w: Worker, code: int, words: str) -> None:
        now = time.monotonic()
        replacement = w.replaced_by
        if replacement is not None:  # it died while its replacement booted: that one takes its place (and
            w.replaced_by, replacement.replaces = None, None  # its READY must not count or signal the dead)
        if w.state is State.RETIRING:
            _log.log(logging.DEBUG if self.fatal else logging.INFO, "worker %d (pid %d) %s", w.number, w.pid,
                     "stopped" if code == 0 else words)
            return
        if self.stopping:
            return
        message = w.error[1] if w.error else None
        booted = w.ready_at is not None
        if not booted and w.stuck:
            message = (f"worker {w.number} did not start within --timeout-worker-healthcheck "
                       f"({self.config.timeout_worker_healthcheck:g} s); its stacks are in the log above")
        old = w.replaces
        if old is not None:  # a replacement that never came up: the old worker keeps serving
            old.replaced_by = None
            if w.generation > self._reported_reload_failure or old.recycle != "reload":
                _log.error("a new worker %s before it was ready%s; worker %d keeps serving", words,
                           f": {message}" if message else "", old.number)
                self._reported_reload_failure = w.generation
            if old.recycle == "reload":
                old.recycle = None  # fix the code and send SIGHUP again
            else:
                self.failures += 1
                old.retry_at = now + max(1.0, backoff(self.failures))
            return
        if self.config.reload:
            _log.error("worker %d %s%s", w.number, words, f": bascule: {message}" if message else "")
            _log.warning("waiting for a file change to restart")
            self.paused = True
            return
        if not booted and not any(x.state is State.SERVING for x in self.workers):
            self.fatal = boot_error(code if w.error else 4, message or f"worker {w.number} {words} before it was "
                                    f"ready (its output is above)")
            _log.error("worker %d could not boot: stopping the server", w.number)
            self._stop(fast=True)
            return
        if replacement is None:
            self._inherited.append(w.restarts)  # the next worker started takes its place
        self._restarted("heartbeat" if w.stuck else "crash")
        self.failures = 0 if now - w.spawned >= STABLE_SECONDS else self.failures + 1
        delay = backoff(self.failures)
        self.respawn_at = now + delay
        _log.warning("worker %d (pid %d) %s%s; %s", w.number, w.pid, words, f": {message}" if message else "",
                     f"workers keep dying: next start in {delay:.1f} s" if delay else "starting a new one")
        self._maintain(now)

    def _restarted(self, reason: str) -> None:
        """A worker is being replaced: bascule_worker_restarts_total{reason} (crash, heartbeat, max-requests,
        memory, reload)."""
        if self.metrics is not None:
            self.metrics.restarted(reason)

    def _check_health(self, now: float) -> None:
        timeout = self.config.timeout_worker_healthcheck
        for w in self.workers:
            if w.kill_at is not None and now >= w.kill_at and not w.killed:
                if not w.stuck:
                    _log.warning("worker %d (pid %d) is still running after its stop deadline: killing it",
                                 w.number, w.pid)
                w.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
            elif timeout and not w.stuck and not w.killed and now - w.last_beat > timeout:
                _log.error("worker %d (pid %d) is stuck: its event loop has not run for %.1f s "
                           "(--timeout-worker-healthcheck %g); its threads' stacks follow, then it is killed",
                           w.number, w.pid, now - w.last_beat, timeout)
                w.stuck = True
                w.kill_at = now + STACK_DUMP_WAIT
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGUSR2)
        limit = self.config.max_worker_memory
        if limit is not None and now >= self._memory_check_at:
            self._memory_check_at = now + MEMORY_CHECK_INTERVAL
            for w in self._primaries():
                rss = resident_mib(w.pid)
                if w.state is State.SERVING and not w.recycle and rss is not None and rss > limit:
                    _log.warning("worker %d (pid %d) uses %.0f MiB (--max-worker-memory %d): replacing it",
                                 w.number, w.pid, rss, limit)
                    w.recycle = "memory"

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()

