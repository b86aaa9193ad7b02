"""Helpers shared by the integration tests: app directory, process spawning, polling, raw HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

APPS = Path(__file__).resolve().parent / "apps"


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without BASCULE_* variables, unbuffered, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASCULE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is truthy; False after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def can_connect(family: int, address: object) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            s.connect(address)
        return True
    except OSError:
        return False


def tcp_ready(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return lambda: can_connect(family, (host, port))


@contextlib.contextmanager
def spawn(args: list[str], *, cwd: Path | str = APPS, env: dict[str, str] | None = None,
          log: Path, ready: Callable[[], object] | None = None,
          pass_fds: tuple[int, ...] = ()) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m bascule ARGS`` exactly as given (no --port added); stdout+stderr to ``log``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bascule", *args], cwd=cwd, env=env or clean_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=pass_fds)
    try:
        if ready is not None and not wait_for(lambda: proc.poll() is not None or ready(), 15):
            raise AssertionError(f"server did not start: {log.read_text(errors='replace')}")
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {log.read_text(errors='replace')}")
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not go within 10 s (a test that fails must not leave it behind)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def exit_within(proc: subprocess.Popen[bytes], seconds: float) -> float | None:
    """Seconds until ``proc`` exited, or None if it is still running after ``seconds``."""
    start = time.monotonic()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - start


def raw_request(port: int, raw: bytes, *, host: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    """Send raw bytes on a new connection, read until the server closes it."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return data
            if not chunk:
                return data
            data += chunk


def log_lines_with(path: Path, needle: str, count: int = 1, timeout: float = 5.0) -> list[str]:
    """Lines of ``path`` containing ``needle``, waiting until there are at least ``count`` of them."""
    def lines() -> list[str]:
        text = path.read_text(errors="replace") if path.exists() else ""
        return [line for line in text.splitlines() if needle in line]

    wait_for(lambda: len(lines()) >= count, timeout)
    return lines()


@contextlib.contextmanager
def spawn_uvicorn(app: str, port: int, *, cwd: Path | str = APPS, log: Path,
                  extra: tuple[str, ...] = ()) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m uvicorn APP`` on 127.0.0.1:``port``, the reference server some tests compare against."""
    args = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        if not wait_for(lambda: proc.poll() is not None or can_connect(socket.AF_INET, ("127.0.0.1", port)), 15):
            raise AssertionError(f"uvicorn did not start: {log.read_text(errors='replace')}")
        if proc.poll() is not None:
            raise AssertionError(f"uvicorn exited with {proc.returncode}: {log.read_text(errors='replace')}")
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def spawn_gunicorn(app: str, bind: str, *, ready: Callable[[], object], cwd: Path | str = APPS,
                   log: Path, flags: tuple[str, ...] = ()) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m gunicorn APP -b BIND [FLAGS]``: the WSGI reference server some tests compare against."""
    args = [sys.executable, "-m", "gunicorn", app, "-b", bind, "--workers", "1", *flags]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        if not wait_for(lambda: proc.poll() is not None or ready(), 15):
            raise AssertionError(f"gunicorn did not start: {log.read_text(errors='replace')}")
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {proc.returncode}: {log.read_text(errors='replace')}")
        yield proc
    finally:
        stop(proc)
