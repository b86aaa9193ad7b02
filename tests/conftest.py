"""Shared fixtures: a real bascule server on a loopback port, in-process or as a CLI subprocess.

``serve`` runs :class:`bascule.server.Server` on its own uvloop thread (fast, and the test can hand it app
objects); ``cli_server`` runs ``python -m bascule`` as a real process, for what only a process shows
(signals, exit codes, logs on stderr). Both pick a free port and wait until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bascule.config import Config
from bascule.server import Server, new_event_loop

HERE = Path(__file__).parent


@dataclass
class Running:
    """A server the test talks to."""

    host: str
    port: int
    server: Server | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        return sock

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: Any = None, **options: Any) -> Iterator[Running]:
    """Serve ``app`` (object or 'module:attr') in-process on a free port; stop gracefully on exit."""
    options.setdefault("port", 0)
    options.setdefault("access_log", False)
    if isinstance(app, str):
        config, obj = Config(app=app, **options), None
    else:
        config, obj = Config(app=options.pop("label", "test:app"), **options), app
    server = Server(config, obj)
    loop = new_event_loop()
    failure: list[BaseException] = []

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve())
        except BaseException as exc:
            failure.append(exc)
            server.started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    end = time.monotonic() + 15
    while not server.sockets and not failure and time.monotonic() < end:
        time.sleep(0.01)
    while not server.started.is_set() and not failure and time.monotonic() < end:
        time.sleep(0.01)
    if failure:
        thread.join(5)
        raise failure[0]
    name = server.sockets[0].getsockname()
    try:
        yield Running(host=name[0] if isinstance(name, tuple) else "", port=name[1] if isinstance(name, tuple) else 0,
                      server=server)
    finally:
        server.request_exit()
        thread.join(30)


@pytest.fixture
def serve() -> Callable[..., contextlib.AbstractContextManager[Running]]:
    """``with serve(app, **options) as srv:`` — an in-process server; srv.url is its base URL."""
    return serve_in_thread


@contextlib.contextmanager
def run_cli(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
            wait: bool = True, port: int | None = None, tmp: Path | None = None) -> Iterator[Running]:
    """``python -m bascule ARGS --port P`` as a subprocess; stdout+stderr go to a log file."""
    port = free_port() if port is None else port
    log_dir = tmp or Path(os.environ.get("TMPDIR", "/tmp"))
    log_path = log_dir / f"bascule-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BASCULE_")}
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "bascule", *args]
    if "--port" not in args and "--uds" not in args and "--fd" not in args:
        cmd += ["--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    running = Running(host="127.0.0.1", port=port, proc=proc, log_path=log_path)
    try:
        if wait:
            try:
                wait_port("127.0.0.1", port)
            except TimeoutError:
                proc.kill()
                raise AssertionError(f"server did not start: {running.log()}") from None
        yield running
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def cli_server(tmp_path: Path) -> Callable[..., contextlib.AbstractContextManager[Running]]:
    """``with cli_server([...args], cwd=...) as srv:`` — bascule as a real process on a free port."""

    def start(args: list[str], **kwargs: Any) -> contextlib.AbstractContextManager[Running]:
        kwargs.setdefault("tmp", tmp_path)
        return run_cli(args, **kwargs)

    return start


def http_exchange(sock: socket.socket, raw: bytes, *, timeout: float = 5.0, until_close: bool = False) -> bytes:
    """Send raw bytes; read until the peer closes (until_close) or until one response looks complete."""
    sock.settimeout(timeout)
    sock.sendall(raw)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data
        if not chunk:
            return data
        data += chunk
        if not until_close and _complete(data):
            return data


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    lower = head.lower()
    if b"\r\ncontent-length:" in lower:
        length = int(lower.split(b"\r\ncontent-length:")[1].split(b"\r\n")[0])
        return len(body) >= length
    if b"transfer-encoding: chunked" in lower:
        return body.endswith(b"0\r\n\r\n")
    return head.startswith(b"HTTP/1.1 1") or b" 204 " in head.split(b"\r\n")[0] or b" 304 " in head.split(b"\r\n")[0]
