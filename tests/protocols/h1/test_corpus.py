"""Replays the request corpora of tests/corpus against a real server.

``bad/NAME.http`` is one raw request (or a request that tries to smuggle another) and ``bad/NAME.expect``
its expected status: the server must answer exactly that status once, close the connection, and never
call the app. ``good/NAME.http`` holds odd-but-legal requests (pipelined, leading zeros in chunk sizes,
quoted chunk extensions, absolute-form targets...); ``good/NAME.expect`` says how many requests the app
must see, each answered 200. The first line of an ``.expect`` file is ``status N`` or ``calls N``; the
rest says where the case comes from (RFC section or a peer's advisory).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from conftest import Running, serve_in_thread

CORPUS = Path(__file__).parents[2] / "corpus"
BAD = sorted(CORPUS.glob("bad/*.http"))
GOOD = sorted(CORPUS.glob("good/*.http"))
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


def expectation(path: Path) -> tuple[str, int]:
    key, value = path.with_suffix(".expect").read_text().split("\n", 1)[0].split()
    return key, int(value)


class Recorder:
    """An ASGI app that reads the whole body, answers 200 'ok', and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.headers: list[list[tuple[bytes, bytes]]] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[..., Any],
                       send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        with self.lock:
            self.calls.append(scope["path"])
            self.headers.append(list(scope["headers"]))
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def corpus_server() -> Iterator[tuple[Running, Recorder]]:
    app = Recorder()
    # http2=False: the corpus is HTTP/1.1's; with HTTP/2 on, the h2c preface (bad/pri-preface) is HTTP/2's to
    # answer, which tests/protocols/h2/h2spec covers
    with serve_in_thread(app, timeout_keep_alive=2.0, http2=False) as running:
        yield running, app


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    sock.settimeout(timeout)
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return out, False
            if not data:
                return out, True
            out += data
    return out, True


def test_corpus_is_big_enough() -> None:
    assert len(BAD) >= 150
    assert all(p.with_suffix(".expect").exists() for p in BAD + GOOD)


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_request_is_refused(corpus_server: tuple[Running, Recorder], path: Path) -> None:
    running, app = corpus_server
    key, status = expectation(path)
    assert key == "status"
    before = len(app.calls)
    with running.connect() as sock:
        sock.sendall(path.read_bytes())
        out, closed = read_until_closed(sock)
    statuses = [int(s) for s in _STATUS.findall(out)]
    assert statuses == [status], out[:300]
    assert closed, "the connection must be closed after a refused request"
    assert len(app.calls) == before, f"the app was called: {app.calls[before:]}"


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_request_is_served(corpus_server: tuple[Running, Recorder], path: Path) -> None:
    running, app = corpus_server
    key, calls = expectation(path)
    assert key == "calls"
    before = len(app.calls)
    with running.connect() as sock:
        sock.sendall(path.read_bytes())
        sock.settimeout(5.0)
        out = b""
        while out.count(b"\r\n\r\nok") < calls:
            data = sock.recv(65536)
            if not data:
                break
            out += data
    assert [int(s) for s in _STATUS.findall(out)] == [200] * calls, out[:300]
    assert len(app.calls) - before == calls


def test_refusals_log_one_info_line_and_no_traceback(corpus_server: tuple[Running, Recorder],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    running, _ = corpus_server
    caplog.set_level(logging.DEBUG, logger="bascule")
    for path in BAD[:40]:
        with running.connect() as sock:
            sock.sendall(path.read_bytes())
            read_until_closed(sock)
    records = [r for r in caplog.records if r.name.startswith("bascule")]
    assert not [r for r in records if r.levelno >= logging.WARNING or r.exc_info]
    assert sum("rejected a request" in r.getMessage() for r in records) == 40


@pytest.mark.parametrize("field", [b"X-Leak: 1", b"Host: evil.test", b"Authorization: Basic eA==", b"Cookie: a=b"])
def test_trailer_fields_never_reach_the_next_request(corpus_server: tuple[Running, Recorder], field: bytes) -> None:
    """Allowed or not (RFC 9110 6.5.1), a trailer field is dropped: it neither frames nor joins anything."""
    running, app = corpus_server
    with running.connect() as sock:
        sock.sendall(b"POST /first HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\n" + field + b"\r\n\r\nGET /second HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        out, closed = read_until_closed(sock)
    assert [int(s) for s in _STATUS.findall(out)] == [200, 200] and closed
    assert app.calls[-2:] == ["/first", "/second"]
    assert app.headers[-1] == [(b"host", b"t"), (b"connection", b"close")]


def test_a_host_trailer_does_not_give_the_next_request_a_host(corpus_server: tuple[Running, Recorder]) -> None:
    """Was bad/smuggle-trailer-host: the trailer is dropped now (not a 400), so the first request is served
    and the Host-less request behind it is the one refused."""
    running, app = corpus_server
    before = len(app.calls)
    with running.connect() as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\nHost: evil.test\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        out, closed = read_until_closed(sock)
    assert [int(s) for s in _STATUS.findall(out)] == [200, 400] and closed
    assert app.calls[before:] == ["/up"]
