"""The process model as a user runs it: a master and its workers as real processes, under a bounded loopback
load where it matters (kill -9, SIGHUP, --max-requests), plus TTIN/TTOU, boot failures, a stuck worker,
--reload and systemd socket activation. Every load is a few keep-alive client threads for a few seconds.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from it_support import APPS, can_connect, clean_env, exit_within, spawn, wait_for

READY = re.compile(r"worker \d+ \(pid (\d+)\) ready")


@dataclass
class Master:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count(self, needle: str) -> int:
        return self.log().count(needle)

    def children(self) -> set[int]:
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return set()
        return {int(pid) for pid in text.split()}

    def ready_pids(self) -> list[int]:
        return [int(pid) for pid in READY.findall(self.log())]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    """``master(app, *flags, workers=2)``: bascule with a master, started once every worker is ready."""
    with contextlib.ExitStack() as stack:

        def start(app: str, *flags: str, workers: int = 2, cwd: Path = APPS,
                  env: dict[str, str] | None = None) -> Master:
            port = free_port()
            log = tmp_path / f"master-{port}.log"
            args = [app, "--workers", str(workers), "--port", str(port), "--no-access-log", *flags]
            proc = stack.enter_context(spawn(args, cwd=cwd, env=env or clean_env(), log=log))
            running = Master(proc, port, log)
            if not wait_for(lambda: proc.poll() is not None or len(running.ready_pids()) >= workers, 15):
                raise AssertionError(f"workers did not start: {running.log()}")
            if proc.poll() is not None:
                raise AssertionError(f"master exited with {proc.returncode}: {running.log()}")
            return running

        yield start


@dataclass
class Load:
    """``threads`` keep-alive clients sending GET ``path`` for ``seconds`` (bounded in time and count)."""

    port: int
    path: str = "/hello"
    threads: int = 4
    seconds: float = 3.0
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    bodies: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        end = time.monotonic() + self.seconds
        self._workers = [threading.Thread(target=self._client, args=(end,), daemon=True) for _ in range(self.threads)]
        for t in self._workers:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self._workers:
            t.join(self.seconds + 10)

    def _client(self, end: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        for _ in range(200_000):
            if time.monotonic() >= end:
                break
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read()
                good = response.status == 200
            except (OSError, http.client.HTTPException) as exc:
                good, body = False, repr(exc).encode()
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            with self._lock:
                if good:
                    self.ok += 1
                    self.bodies.add(body)
                else:
                    self.failed += 1
                    self.errors.append(body.decode(errors="replace"))
        conn.close()


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=10)


# -- supervision -------------------------------------------------------------------------------------


def test_killed_worker_is_replaced_at_once_and_load_goes_on(master: Callable[..., Master]) -> None:
    srv = master("it_workers:app")
    before = srv.children()
    assert len(before) == 2
    with Load(srv.port, seconds=3.0) as load:
        time.sleep(1.0)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        replaced_after = None
        for _ in range(5000):  # poll the master's children every ms, up to ~5 s
            now = srv.children()
            if now - before - {victim}:
                replaced_after = time.monotonic() - killed
                break
            time.sleep(0.001)
    assert replaced_after is not None and replaced_after < 0.1, (replaced_after, srv.log())
    assert load.ok > 200
    # only requests on the killed worker's connections fail: at most one per client connection
    assert load.failed <= load.threads, load.errors
    assert wait_for(lambda: len(srv.ready_pids()) == 3, 5)
    assert "was killed by SIGKILL; starting a new one" in srv.log()
    assert {get(srv.url + "/hello").status_code for _ in range(10)} == {200}


def test_sighup_under_load_drops_nothing_and_runs_new_code(master: Callable[..., Master], tmp_path: Path) -> None:
    app_dir = tmp_path / "proj"
    app_dir.mkdir()
    module = app_dir / "it_workers.py"
    shutil.copy(APPS / "it_workers.py", module)
    srv = master("it_workers:app", "--app-dir", str(app_dir), env=clean_env(PYTHONDONTWRITEBYTECODE="1"))
    old = srv.children()
    with Load(srv.port, path="/version", seconds=3.0) as load:
        time.sleep(0.8)
        module.write_text(module.read_text().replace('VERSION = "one"', 'VERSION = "second"'))
        srv.signal(signal.SIGHUP)
        assert wait_for(lambda: srv.count("replaced (reload): draining it") == 2, 5), srv.log()
        assert wait_for(lambda: not (srv.children() & old), 5), srv.log()
    assert load.failed == 0, load.errors
    assert load.ok > 200
    assert load.bodies == {b"one", b"second"}
    assert {get(srv.url + "/version").text for _ in range(10)} == {"second"}


def test_ttin_adds_and_ttou_removes_a_worker(master: Callable[..., Master]) -> None:
    srv = master("it_workers:app")
    srv.signal(signal.SIGTTIN)
    assert wait_for(lambda: len(srv.children()) == 3 and len(srv.ready_pids()) == 3, 5), srv.log()
    for _ in range(3):  # the third is refused: one worker is the least there can be
        srv.signal(signal.SIGTTOU)
        time.sleep(0.2)
    assert wait_for(lambda: len(srv.children()) == 1, 5), srv.log()
    assert "1 worker(s) now (the least there can be)" in srv.log()
    time.sleep(0.3)
    assert len(srv.children()) == 1
    assert get(srv.url + "/hello").text == "hello"


@pytest.mark.parametrize(("app", "env", "code", "needle", "flags"), [
    ("it_broken:app", {}, 3, "KeyError", []),
    ("it_workers:app", {"IT_FAIL_STARTUP": "1"}, 4, "no database here", []),
    ("it_broken:app", {}, 3, "KeyError", ["--preload"]),  # fails in the master, before any fork
])
def test_worker_boot_failure_stops_the_server_with_one_line(app: str, env: dict[str, str], code: int,
                                                            needle: str, flags: list[str], tmp_path: Path) -> None:
    log = tmp_path / "boot.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bascule", app, "--workers", "3", "--port",
                                 str(free_port()), *flags], cwd=APPS, env=clean_env(**env), stdout=out,
                                stderr=subprocess.STDOUT)
    took = exit_within(proc, 15)
    text = log.read_text()
    assert took is not None and took < 10, text
    assert proc.returncode == code, text
    lines = [line for line in text.splitlines() if line.startswith("bascule: ")]
    assert len(lines) == 1 and needle in lines[0], text
    assert "Traceback" not in text
    assert "starting a new one" not in text  # no crash loop
    assert text.count("could not boot") == (0 if flags else 1)


def test_workers_stop_when_the_master_is_killed(master: Callable[..., Master]) -> None:
    srv = master("it_workers:app")
    workers = srv.children()
    srv.proc.kill()
    srv.proc.wait(5)

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # exited, not yet reaped by init

    assert wait_for(lambda: all(gone(pid) for pid in workers), 5), srv.log()
    assert srv.count("the master") == 2  # "worker N: the master (M) is gone; stopping"


def test_graceful_stop_drains_requests_in_flight_in_every_worker(master: Callable[..., Master]) -> None:
    srv = master("it_workers:app", "--timeout-graceful-shutdown", "5")
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(4)]
    for sock in socks:
        sock.sendall(b"GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    srv.signal(signal.SIGTERM)
    assert wait_for(lambda: not can_connect(socket.AF_INET, ("127.0.0.1", srv.port)), 1.0)
    for sock in socks:
        with sock:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"slept"), data
    assert srv.proc.wait(10) == 0
    assert "master received SIGTERM: stopping gracefully" in srv.log()


def test_quit_stops_at_once(master: Callable[..., Master]) -> None:
    srv = master("it_workers:app")
    [stuck] = [socket.create_connection(("127.0.0.1", srv.port), timeout=10)]
    stuck.sendall(b"GET /sleep?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    srv.signal(signal.SIGQUIT)
    took = exit_within(srv.proc, 5)
    assert took is not None and took < 2, srv.log()
    assert srv.proc.returncode == 0
    stuck.close()


def test_stuck_worker_is_killed_with_its_stack_in_the_log(master: Callable[..., Master]) -> None:
    srv = master("it_workers:app", "--timeout-worker-healthcheck", "1")
    before = srv.children()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"GET /block?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_for(lambda: "is stuck" in srv.log(), 5), srv.log()
        assert sock.recv(65536) == b""  # killed: the blocked request's connection is closed
    assert wait_for(lambda: len(srv.children() - before) == 1 and len(srv.children()) == 2, 3), srv.log()
    log = srv.log()
    assert "(--timeout-worker-healthcheck 1)" in log
    # faulthandler's dump: where it hung, in the user's code
    assert re.search(r'File ".*it_workers\.py", line \d+ in block_the_loop', log), log
    assert "starting a new one" in log
    assert get(srv.url + "/hello").text == "hello"


def test_max_requests_recycles_under_load_without_failures(master: Callable[..., Master]) -> None:
    srv = master("it_workers:app", "--max-requests", "300", "--max-requests-jitter", "50")
    with Load(srv.port, seconds=3.0) as load:
        pass
    assert load.failed == 0, load.errors
    assert load.ok > 1000
    assert srv.count("replaced (max-requests): draining it") >= 2, srv.log()
    assert wait_for(lambda: len(srv.children()) == 2, 5)


# -- listeners ---------------------------------------------------------------------------------------


def test_several_binds_with_workers_and_a_pid_file(master: Callable[..., Master], tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    pid_file = tmp_path / "bascule.pid"
    port = free_port()
    log = tmp_path / "binds.log"
    args = ["it_workers:app", "--workers", "2", "--bind", f"127.0.0.1:{port}", "--bind", f"unix:{path}",
            "--uds-mode", "600", "--pid", str(pid_file)]
    with spawn(args, log=log, ready=lambda: "(pid" in log.read_text() and log.read_text().count("ready") >= 2) as proc:
        assert get(f"http://127.0.0.1:{port}/hello").text == "hello"
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=10) as client:
            assert client.get("http://x/hello").text == "hello"
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert pid_file.read_text().strip() == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert not pid_file.exists() and not os.path.exists(path)


_ACTIVATE = """\
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)  # systemd's first socket is fd 3
os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="http")
os.execv(sys.executable, [sys.executable, "-m", "bascule", *sys.argv[2:]])  # exec keeps the pid
"""


def _activated(app_flags: list[str], sock: socket.socket, log: Path) -> subprocess.Popen[bytes]:
    """bascule started as systemd would: the socket on fd 3, LISTEN_PID naming the server's own pid."""
    fd = sock.fileno()
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-c", _ACTIVATE, str(fd), *app_flags], cwd=APPS, env=clean_env(),
                                stdout=out, stderr=subprocess.STDOUT, pass_fds=(fd,))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_systemd_socket_activation(workers: str, tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    log = tmp_path / "activated.log"
    proc = _activated(["it_workers:app", "--workers", workers], sock, log)
    sock.close()
    try:
        assert get(f"http://127.0.0.1:{port}/hello").text == "hello"
        # the variables were meant for bascule, not for the app's own child processes
        assert get(f"http://127.0.0.1:{port}/env?name=LISTEN_FDS").text == "-"
        assert get(f"http://127.0.0.1:{port}/env?name=LISTEN_PID").text == "-"
        assert wait_for(lambda: f"http://127.0.0.1:{port}" in log.read_text(), 2)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0, log.read_text()


# -- --reload ----------------------------------------------------------------------------------------


def test_reload_picks_up_edits_and_survives_a_syntax_error(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    module = tmp_path / "devapp.py"
    source = (APPS / "it_workers.py").read_text()
    module.write_text(source)
    port = free_port()
    log = tmp_path / "reload.log"
    args = ["devapp:app", "--reload", "--app-dir", str(tmp_path), "--port", str(port), "--no-access-log"]
    url = f"http://127.0.0.1:{port}/version"

    def version() -> str:
        try:
            return httpx.get(url, timeout=2).text
        except httpx.HTTPError:
            return ""

    with spawn(args, cwd=tmp_path, env=clean_env(PYTHONDONTWRITEBYTECODE="1"), log=log,
               ready=lambda: "ready" in log.read_text()):
        assert version() == "one"
        module.write_text(source.replace('VERSION = "one"', 'VERSION = "two!"'))
        assert wait_for(lambda: version() == "two!", 10), log.read_text()
        module.write_text(source.replace('VERSION = "one"', 'VERSION = "three'))  # a syntax error
        assert wait_for(lambda: "waiting for a file change" in log.read_text(), 10), log.read_text()
        errors = [line for line in log.read_text().splitlines() if "SyntaxError" in line or "syntax" in line]
        assert errors, log.read_text()
        module.write_text(source.replace('VERSION = "one"', 'VERSION = "fourth"'))
        assert wait_for(lambda: version() == "fourth", 10), log.read_text()


def test_max_worker_memory_recycles_gracefully(master: Callable[..., Master]) -> None:
    srv = master("it_workers:app", "--max-worker-memory", "1")  # every worker is over 1 MiB: replaced each second
    with Load(srv.port, threads=2, seconds=2.5) as load:
        pass
    assert load.failed == 0, load.errors
    assert srv.count("(--max-worker-memory 1): replacing it") >= 2, srv.log()
    assert srv.count("replaced (memory): draining it") >= 2, srv.log()


def test_usr1_reopens_log_files_in_master_and_workers(master: Callable[..., Master], tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    config = tmp_path / "logging.json"
    config.write_text(json.dumps({
        "version": 1,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(access)},
                     "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
        "loggers": {"bascule.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
                    "bascule.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
    }))
    srv = master("it_workers:app", "--log-config", str(config), "--access-log")
    for _ in range(4):
        get(srv.url + "/before")
    assert wait_for(lambda: access.read_text().count("/before") == 4, 3)
    access.rename(tmp_path / "access.log.1")  # what logrotate does
    srv.signal(signal.SIGUSR1)
    assert wait_for(lambda: access.exists(), 3), srv.log()  # reopened (the master's handler creates it)
    time.sleep(0.2)  # the workers got it too
    for _ in range(6):
        get(srv.url + "/after")
    assert wait_for(lambda: access.read_text().count("/after") == 6, 3), access.read_text()
    assert "/after" not in (tmp_path / "access.log.1").read_text()


def test_quit_stops_a_single_process_at_once(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "single.log"
    with spawn(["it_workers:app", "--port", str(port)], log=log,
               ready=lambda: can_connect(socket.AF_INET, ("127.0.0.1", port))) as proc:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stuck:
            stuck.sendall(b"GET /sleep?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.3)
            proc.send_signal(signal.SIGQUIT)
            took = exit_within(proc, 5)
        assert took is not None and took < 2, log.read_text()
        assert proc.returncode == 0
    assert "received SIGQUIT: stopping now" in log.read_text()
