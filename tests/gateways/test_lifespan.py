"""Tests for bascule.gateways.lifespan: startup/shutdown, state, the auto/on/off modes, and startup failures.

In-process servers for the protocol; a real ``python -m bascule`` for what users see on a failed start
(one line on stderr, exit code 4) and for shutdown on a signal.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port

from bascule.errors import StartupError

Scope = dict[str, Any]
Message = dict[str, Any]


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """caplog on bascule.error at DEBUG, even if another test installed bascule's non-propagating handler."""
    monkeypatch.setattr(logging.getLogger("bascule.error"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="bascule.error")
    return caplog


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bascule.error" and r.levelno == level]


async def ok(send: Any, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def recording_app(events: list[Any], *, on_startup: Callable[[Scope], None] | None = None) -> Any:
    """An app with full lifespan support that records every lifespan message and http request."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            events.append(("scope", {k: v for k, v in scope.items() if k != "state"}))
            while True:
                msg = await receive()
                events.append(msg["type"])
                if msg["type"] == "lifespan.startup":
                    if on_startup is not None:
                        on_startup(scope)
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        events.append(("http", scope["path"], dict(scope["state"])))
        await ok(send)

    return app


# -- the protocol ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_startup_then_requests_then_shutdown(serve: Any, mode: str) -> None:
    events: list[Any] = []

    def on_startup(scope: Scope) -> None:
        scope["state"]["pool"] = "connected"

    with serve(recording_app(events, on_startup=on_startup), lifespan=mode) as srv:
        assert events[1:] == ["lifespan.startup"]  # startup finished before the first request
        assert httpx.get(srv.url + "/a").text == "ok"
    assert events[0] == ("scope", {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}})
    assert events[1:] == ["lifespan.startup", ("http", "/a", {"pool": "connected"}), "lifespan.shutdown"]


def test_lifespan_scope_state_starts_empty_and_is_a_dict(serve: Any) -> None:
    seen: list[Any] = []

    def on_startup(scope: Scope) -> None:
        seen.append(dict(scope["state"]))

    with serve(recording_app([], on_startup=on_startup)):
        pass
    assert seen == [{}]


def test_off_never_sends_a_lifespan_scope(serve: Any) -> None:
    types: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        types.append(scope["type"])
        if scope["type"] == "lifespan":
            raise AssertionError("lifespan scope with lifespan=off")
        await ok(send)

    with serve(app, lifespan="off") as srv:
        assert httpx.get(srv.url).text == "ok"
        assert httpx.get(srv.url).text == "ok"
    assert types == ["http", "http"]


def test_on_with_app_that_raises_fails_to_start(serve: Any, errors: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")
        await ok(send)

    with pytest.raises(StartupError, match="lifespan startup failed: RuntimeError: no lifespan here"), \
            serve(app, lifespan="on"):
        pass  # pragma: no cover - never reached
    (record,) = records(errors, logging.ERROR)
    assert record.exc_info is not None  # the app's own traceback, logged once


def test_on_with_app_that_returns_fails_to_start(serve: Any) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        await ok(send)

    with pytest.raises(StartupError, match=r"returned without answering lifespan\.startup"), serve(app, lifespan="on"):
        pass  # pragma: no cover


def test_auto_with_app_that_raises_serves_anyway(serve: Any, errors: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"unsupported scope type {scope['type']!r}")
        await ok(send)

    with serve(app, lifespan="auto") as srv:
        assert httpx.get(srv.url).text == "ok"
    info = [r for r in records(errors, logging.INFO) if "lifespan" in r.getMessage()]
    assert len(info) == 1
    assert "does not support ASGI lifespan" in info[0].getMessage()
    assert "unsupported scope type" in info[0].getMessage()
    assert records(errors, logging.ERROR) == []  # not an error, and no traceback


def test_auto_with_app_that_returns_serves(serve: Any, errors: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        if scope["type"] == "lifespan":
            return
        await ok(send)

    with serve(app, lifespan="auto") as srv:
        assert httpx.get(srv.url).text == "ok"
    assert calls == ["lifespan", "http"]  # no shutdown attempted on an app that ignored startup
    assert records(errors, logging.ERROR) == []


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_startup_failed_message_is_a_startup_error(serve: Any, mode: str) -> None:
    served: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "database unreachable at db:5432"})
            return
        served.append(scope["path"])
        await ok(send)

    with pytest.raises(StartupError, match="lifespan startup failed: database unreachable at db:5432"), \
            serve(app, lifespan=mode):
        pass  # pragma: no cover
    assert served == []


def test_startup_failed_without_message_still_says_something(serve: Any) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed"})

    with pytest.raises(StartupError, match=r"lifespan startup failed: .+"), serve(app):
        pass  # pragma: no cover


def test_shutdown_failed_is_logged(serve: Any, errors: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.failed", "message": "could not flush the queue"})
            return
        await ok(send)

    with serve(app) as srv:
        assert httpx.get(srv.url).text == "ok"
    messages = [r.getMessage() for r in records(errors, logging.ERROR)]
    assert any("lifespan shutdown failed: could not flush the queue" in m for m in messages)


def test_exception_during_shutdown_is_logged_and_the_server_stops(serve: Any,
                                                                  errors: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            raise RuntimeError("shutdown exploded")
        await ok(send)

    with serve(app) as srv:
        assert httpx.get(srv.url).text == "ok"
    logged = [r for r in records(errors, logging.ERROR) if r.exc_info]
    assert len(logged) == 1
    assert "shutdown exploded" in str(logged[0].exc_info[1])  # type: ignore[index]


def test_shutdown_that_hangs_is_bounded(serve: Any, errors: pytest.LogCaptureFixture) -> None:
    import asyncio

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await asyncio.sleep(3600)
        await ok(send)

    with serve(app, timeout_graceful_shutdown=0.2) as srv:
        assert httpx.get(srv.url).text == "ok"
    assert any("did not finish" in r.getMessage() for r in records(errors, logging.ERROR))


# -- through the command line ---------------------------------------------------------------------------


def run_bascule(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m bascule ARGS`` to completion, stdout and stderr apart."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASCULE_")}
    return subprocess.run([sys.executable, "-m", "bascule", *args, "--port", str(free_port())], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=30)


def test_cli_startup_failed_message_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(textwrap.dedent("""
        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                await receive()
                await send({"type": "lifespan.startup.failed", "message": "database unreachable at db:5432"})
                return
    """))
    result = run_bascule(["failing:app"], tmp_path)
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("bascule: failing:app")
    assert lines[-1].endswith("lifespan startup failed: database unreachable at db:5432")
    assert [line for line in lines if line.startswith("bascule:")] == [lines[-1]]
    assert "Traceback" not in result.stderr + result.stdout
    assert "serving on" not in result.stderr


def test_cli_startup_exception_shows_the_apps_traceback_once(tmp_path: Path) -> None:
    (tmp_path / "raising.py").write_text(textwrap.dedent("""
        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                raise RuntimeError("cannot reach the database")
    """))
    result = run_bascule(["raising:app", "--lifespan", "on"], tmp_path)
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("bascule: raising:app")
    assert lines[-1].endswith("lifespan startup failed: RuntimeError: cannot reach the database")
    # the app's exception is logged (with its traceback) by the error log, once; bascule's own
    # StartupError is never dumped as a traceback
    assert result.stderr.count("Traceback") == 1
    assert 'raising.py", line' in result.stderr
    assert "StartupError" not in result.stderr
    assert "bascule/server.py" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_graceful_stop_runs_shutdown(cli_server: Any, tmp_path: Path, signum: int) -> None:
    record = tmp_path / "events.txt"
    (tmp_path / "life.py").write_text(textwrap.dedent(f"""
        RECORD = {str(record)!r}

        def note(word):
            with open(RECORD, "a") as f:
                f.write(word + "\\n")

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    msg = await receive()
                    if msg["type"] == "lifespan.startup":
                        note("startup")
                        scope["state"]["greeting"] = "hello"
                        await send({{"type": "lifespan.startup.complete"}})
                    else:
                        note("shutdown")
                        await send({{"type": "lifespan.shutdown.complete"}})
                        return
            note("request")
            await send({{"type": "http.response.start", "status": 200, "headers": []}})
            await send({{"type": "http.response.body", "body": scope["state"]["greeting"].encode()}})
    """))
    with cli_server(["life:app"], cwd=tmp_path) as srv:
        assert srv.proc is not None
        assert httpx.get(srv.url).text == "hello"
        srv.proc.send_signal(signum)
        assert srv.proc.wait(15) == 0, srv.log()
    assert record.read_text().split() == ["startup", "request", "shutdown"]
