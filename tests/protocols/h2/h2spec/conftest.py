"""Fixtures for the h2spec-derived suite: one bascule server (HTTP/2, cleartext) shared by every case.

Each case opens its own connection with :class:`H2Client`; the server stays up for the whole session. The
terminal summary reports how many h2spec cases ran and passed, for the issue's closing note.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Running, serve_in_thread

from .h2client import H2Client

BODY = b"bascule h2spec response body\n" * 700  # ~20 KiB: two DATA frames at the default SETTINGS_MAX_FRAME_SIZE

Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """GET/HEAD/POST on any path: read and discard the request body, then 200 with ``BODY`` (or 404 off "/")."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if not message.get("more_body", False):
            break
    status, body = (200, BODY) if scope["path"] == "/" else (404, b"not found\n")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


@pytest.fixture(scope="session")
def h2_server() -> Iterator[Running]:
    """One in-process bascule server with HTTP/2 on, serving :func:`app` on a free loopback port.

    ``H2SPEC_TARGET=host:port`` points the suite at another server instead (to compare with a peer).
    """
    target = os.environ.get("H2SPEC_TARGET")
    if target:
        host, _, port = target.rpartition(":")
        yield Running(host=host, port=int(port))
        return
    with serve_in_thread(app, host="127.0.0.1", http2=True, label="h2spec:app") as running:
        yield running


@pytest.fixture
def conn(h2_server: Running) -> Iterator[H2Client]:
    """A fresh connection, not yet past the preface (cases that test the preface start here)."""
    client = H2Client(h2_server.host, h2_server.port)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def h2(conn: H2Client) -> H2Client:
    """A connection after the handshake: both SETTINGS exchanged and acknowledged."""
    conn.handshake()
    return conn


_H2SPEC_DIR = "protocols/h2spec/"


def _is_case(nodeid: str) -> bool:
    return _H2SPEC_DIR in nodeid and "/test_count.py" not in nodeid


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """``h2spec-derived cases: N passed of M`` after any run that included the suite's cases."""
    outcome_of: dict[str, str] = {}  # a case's worst outcome over setup, call and teardown
    order = ("passed", "xpassed", "xfailed", "skipped", "failed", "error")
    for outcome in order:
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if nodeid and _is_case(nodeid):
                outcome_of[nodeid] = outcome  # later (worse) outcomes overwrite earlier ones
    if not outcome_of:
        return
    counts = {outcome: sum(1 for o in outcome_of.values() if o == outcome) for outcome in order}
    line = f"h2spec-derived cases: {counts['passed']} passed of {len(outcome_of)}"
    rest = ", ".join(f"{n} {k}" for k, n in counts.items() if n and k != "passed")
    terminalreporter.write_sep("=", line + (f" ({rest})" if rest else ""))
