"""Tests for bascule.gateways.asgi: the send state machine, the http scope, receive, send, and app errors.

The state machine is driven pair by pair through :class:`HTTPCycle` with a fake :class:`Exchange` that
records every call (h2's test_state_machines.py style); everything else goes through a real server on a
loopback socket, with httpx for ordinary requests and raw sockets where the bytes matter.
"""

from __future__ import annotations

import asyncio
import http
import logging
import queue
import socket
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import httpx
import pytest
from conftest import http_exchange

from bascule.errors import AppProtocolError
from bascule.gateways.asgi import TRANSITIONS, HTTPCycle, SendState
from bascule.gateways.eager import start_task
from bascule.protocols.exchange import ClientDisconnected, Exchange, Headers

Scope = dict[str, Any]
Message = dict[str, Any]
App = Callable[..., Any]

START = "http.response.start"
BODY = "http.response.body"
TRAILERS = "http.response.trailers"
PATHSEND = "http.response.pathsend"
ZEROCOPY = "http.response.zerocopysend"
EARLY_HINT = "http.response.early_hint"
INFORMATIONAL = "http.response.informational"
MESSAGE_TYPES = (START, BODY, TRAILERS, PATHSEND, ZEROCOPY, EARLY_HINT, INFORMATIONAL, "http.request", "bogus")

EXPECTED_TRANSITIONS = {
    (SendState.START, START): {SendState.BODY},
    (SendState.BODY, BODY): {SendState.BODY, SendState.TRAILERS, SendState.DONE},
    (SendState.TRAILERS, TRAILERS): {SendState.TRAILERS, SendState.DONE},
    (SendState.BODY, PATHSEND): {SendState.TRAILERS, SendState.DONE},
    (SendState.BODY, ZEROCOPY): {SendState.BODY, SendState.TRAILERS, SendState.DONE},
    (SendState.START, EARLY_HINT): {SendState.START},
    (SendState.START, INFORMATIONAL): {SendState.START},
}
"""The ASGI HTTP response order, written out independently of the code under test."""


# -- a fake exchange ------------------------------------------------------------------------------------


class FakeExchange(Exchange):
    """An in-memory exchange that records every call the gateway makes on it."""

    def __init__(self, body_pieces: list[bytes] | None = None, *, buffered: bool = True) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.method = "GET"
        self.http_version = "1.1"
        self.scheme = "http"
        self.raw_path = b"/"
        self.query_string = b""
        self.headers = []
        self.client = ("127.0.0.1", 40000)
        self.server = ("127.0.0.1", 8000)
        self.root_path = ""
        self.start_time = 0.0
        self.disconnected = False
        self.response_started = False
        self.status = 0
        self.writable_hook = None
        self.write_paused = False
        self.loop: Any = None  # an app that never suspends schedules nothing on it
        self.pieces = list(body_pieces or [])
        self.buffered = buffered

    @property
    def body_done(self) -> bool:
        return not self.pieces

    async def receive_body(self) -> bytes:
        self.calls.append(("receive_body",))
        return self.pieces.pop(0) if self.pieces else b""

    def take_buffered_body(self) -> bytes | None:
        if not self.buffered:
            return None
        data, self.pieces = b"".join(self.pieces), []
        return data

    def send_head(self, status: int, headers: Headers, body: bytes = b"", end: bool = False,
                  trailers: bool = False) -> None:
        self.calls.append(("send_head", status, headers, body, end, trailers))
        self.response_started = True
        self.status = status

    def send_body(self, data: bytes, end: bool = False) -> None:
        self.calls.append(("send_body", data, end))

    def send_informational(self, status: int, headers: Headers) -> None:
        super().send_informational(status, headers)  # the seam's checks
        self.calls.append(("send_informational", status, headers))

    def send_trailers(self, trailers: Headers) -> None:
        self.calls.append(("send_trailers", trailers))

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        self.calls.append(("send_file", offset, count))

    def send_simple(self, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> None:
        self.calls.append(("send_simple", status, body))
        self.response_started = True

    async def drain(self) -> None:
        self.calls.append(("drain",))

    async def wait_disconnect(self) -> None:
        self.calls.append(("wait_disconnect",))

    def abort(self) -> None:
        self.calls.append(("abort",))

    @property
    def can_sendfile(self) -> bool:
        return False

    def send_file_blocking(self, file: IO[bytes], offset: int, count: int) -> int:
        raise NotImplementedError


def run(coro: Any) -> Any:
    return asyncio.run(coro)


_THIS_FILE = open(__file__, "rb")  # noqa: SIM115 - zerocopysend's file, open for the whole session


def message(mtype: str, **fields: Any) -> Message:
    """A valid message of each type (unknown types get only their 'type')."""
    defaults: dict[str, Message] = {
        START: {"status": 200, "headers": [(b"content-type", b"text/plain")], "trailers": True},
        BODY: {"body": b"x", "more_body": False},
        TRAILERS: {"headers": [(b"x-checksum", b"1")], "more_trailers": False},
        "http.request": {"body": b"", "more_body": False},
        PATHSEND: {"path": __file__},
        ZEROCOPY: {"file": _THIS_FILE, "offset": 0, "count": 10},
        EARLY_HINT: {"links": [b"</a.css>; rel=preload; as=style"]},
        INFORMATIONAL: {"status": 103, "headers": [(b"link", b"</a.js>; rel=preload; as=script")]},
    }
    return {"type": mtype, **defaults.get(mtype, {}), **fields}


async def cycle_in(state: SendState, ex: FakeExchange | None = None) -> HTTPCycle:
    """An HTTPCycle brought to ``state`` by real messages (trailers announced, so every state is reachable)."""
    cycle = HTTPCycle(ex or FakeExchange())
    path = {
        SendState.START: [],
        SendState.BODY: [message(START)],
        SendState.TRAILERS: [message(START), message(BODY)],
        SendState.DONE: [message(START), message(BODY), message(TRAILERS)],
    }[state]
    for msg in path:
        await cycle.send(msg)
    assert cycle.state is state
    return cycle


# -- the state machine ----------------------------------------------------------------------------------


def test_transition_table_is_the_asgi_order() -> None:
    assert {key: set(targets) for key, targets in TRANSITIONS.items()} == EXPECTED_TRANSITIONS


def test_every_state_has_a_way_forward_or_is_done() -> None:
    sources = {state for state, _ in TRANSITIONS}
    assert sources == set(SendState) - {SendState.DONE}
    reachable = {SendState.START} | {target for targets in TRANSITIONS.values() for target in targets}
    assert reachable == set(SendState)


@pytest.mark.parametrize("mtype", MESSAGE_TYPES)
@pytest.mark.parametrize("state", list(SendState), ids=lambda s: s.value)
def test_every_state_and_message_pair(state: SendState, mtype: str) -> None:
    async def go() -> None:
        ex = FakeExchange()
        cycle = await cycle_in(state, ex)
        calls_before = list(ex.calls)
        if (state, mtype) in TRANSITIONS:
            await cycle.send(message(mtype))
            assert cycle.state in TRANSITIONS[state, mtype]
        else:
            with pytest.raises(AppProtocolError, match="not allowed"):
                await cycle.send(message(mtype))
            assert cycle.state is state
            assert ex.calls == calls_before  # nothing reached the exchange

    run(go())


@pytest.mark.parametrize("mtype", MESSAGE_TYPES)
@pytest.mark.parametrize("state", list(SendState), ids=lambda s: s.value)
def test_order_is_checked_before_the_connection(state: SendState, mtype: str) -> None:
    """On a gone client an allowed message raises ClientDisconnected (an OSError), a forbidden one stays an
    AppProtocolError: the app's bug is reported either way."""

    async def go() -> None:
        ex = FakeExchange()
        cycle = await cycle_in(state, ex)
        ex.disconnected = True
        expected = ClientDisconnected if (state, mtype) in TRANSITIONS else AppProtocolError
        with pytest.raises(expected):
            await cycle.send(message(mtype))
        assert cycle.state is state

    run(go())


def test_start_goes_to_body_and_is_held_back() -> None:
    async def go() -> None:
        ex = FakeExchange()
        cycle = HTTPCycle(ex)
        await cycle.send({"type": START, "status": 201, "headers": [(b"x-a", b"1")]})
        assert cycle.state is SendState.BODY
        assert ex.calls == []  # held back until the first body message
        await cycle.send({"type": BODY, "body": b"hello"})
        assert cycle.state is SendState.DONE
        assert ex.calls == [("send_head", 201, [(b"x-a", b"1")], b"hello", True, False)]

    run(go())


def test_body_with_more_body_stays_in_body() -> None:
    async def go() -> None:
        ex = FakeExchange()
        cycle = HTTPCycle(ex)
        await cycle.send({"type": START, "status": 200})
        await cycle.send({"type": BODY, "body": b"a", "more_body": True})
        assert cycle.state is SendState.BODY
        await cycle.send({"type": BODY, "body": b"b", "more_body": True})
        assert cycle.state is SendState.BODY
        await cycle.send({"type": BODY})
        assert cycle.state is SendState.DONE
        assert ex.calls == [("send_head", 200, [], b"a", False, False), ("send_body", b"b", False),
                            ("send_body", b"", True)]

    run(go())


def test_trailers_announced_then_sent() -> None:
    async def go() -> None:
        ex = FakeExchange()
        cycle = HTTPCycle(ex)
        await cycle.send({"type": START, "status": 200, "trailers": True})
        await cycle.send({"type": BODY, "body": b"data"})
        assert cycle.state is SendState.TRAILERS
        await cycle.send({"type": TRAILERS, "headers": [(b"x-a", b"1")], "more_trailers": True})
        assert cycle.state is SendState.TRAILERS
        await cycle.send({"type": TRAILERS, "headers": [(b"x-b", b"2")]})
        assert cycle.state is SendState.DONE
        assert ex.calls == [("send_head", 200, [], b"data", True, True),
                            ("send_trailers", [(b"x-a", b"1"), (b"x-b", b"2")])]

    run(go())


def test_body_after_last_body_is_an_error() -> None:
    async def go() -> None:
        cycle = HTTPCycle(FakeExchange())
        await cycle.send({"type": START, "status": 200})
        await cycle.send({"type": BODY, "body": b"done", "more_body": False})
        with pytest.raises(AppProtocolError):
            await cycle.send({"type": BODY, "body": b"more"})

    run(go())


def test_trailers_without_announcing_them_is_an_error() -> None:
    async def go() -> None:
        cycle = HTTPCycle(FakeExchange())
        await cycle.send({"type": START, "status": 200})
        await cycle.send({"type": BODY, "body": b"done"})
        assert cycle.state is SendState.DONE
        with pytest.raises(AppProtocolError):
            await cycle.send({"type": TRAILERS, "headers": []})

    run(go())


@pytest.mark.parametrize("bad", [{}, {"status": 200}, None, "http.response.start"], ids=repr)
def test_message_without_type_is_an_error(bad: Any) -> None:
    async def go() -> None:
        cycle = HTTPCycle(FakeExchange())
        with pytest.raises(AppProtocolError, match="type"):
            await cycle.send(bad)
        assert cycle.state is SendState.START

    run(go())


@pytest.mark.parametrize("status", ["200", 200.0, None, b"200"], ids=repr)
def test_status_must_be_an_int(status: Any) -> None:
    async def go() -> None:
        ex = FakeExchange()
        cycle = HTTPCycle(ex)
        with pytest.raises(AppProtocolError, match="status"):
            await cycle.send({"type": START, "status": status})
        assert cycle.state is SendState.START
        assert ex.calls == []

    run(go())


def test_start_without_status_is_an_error() -> None:
    async def go() -> None:
        cycle = HTTPCycle(FakeExchange())
        with pytest.raises(AppProtocolError):
            await cycle.send({"type": START})
        assert cycle.state is SendState.START

    run(go())


@pytest.mark.parametrize("body", ["text", 1, None, [b"a"]], ids=repr)
def test_body_must_be_bytes(body: Any) -> None:
    async def go() -> None:
        ex = FakeExchange()
        cycle = HTTPCycle(ex)
        await cycle.send({"type": START, "status": 200})
        with pytest.raises(AppProtocolError, match="bytes"):
            await cycle.send({"type": BODY, "body": body})
        assert cycle.state is SendState.BODY
        assert ex.calls == []

    run(go())


@pytest.mark.parametrize("body", [bytearray(b"abc"), memoryview(b"abc")], ids=lambda b: type(b).__name__)
def test_bytes_like_body_is_sent_as_bytes(body: Any) -> None:
    async def go() -> None:
        ex = FakeExchange()
        cycle = HTTPCycle(ex)
        await cycle.send({"type": START, "status": 200})
        await cycle.send({"type": BODY, "body": body})
        sent = ex.calls[0][3]
        assert type(sent) is bytes and sent == b"abc"

    run(go())


# -- receive and run, against the fake ------------------------------------------------------------------


def test_receive_buffered_body_then_disconnect() -> None:
    async def go() -> None:
        ex = FakeExchange([b"ab", b"cd"])
        cycle = HTTPCycle(ex)
        assert await cycle.receive() == {"type": "http.request", "body": b"abcd", "more_body": False}
        assert await cycle.receive() == {"type": "http.disconnect"}
        assert ("wait_disconnect",) in ex.calls

    run(go())


def test_receive_streamed_body() -> None:
    async def go() -> None:
        ex = FakeExchange([b"ab", b"cd"], buffered=False)
        cycle = HTTPCycle(ex)
        assert await cycle.receive() == {"type": "http.request", "body": b"ab", "more_body": True}
        assert await cycle.receive() == {"type": "http.request", "body": b"cd", "more_body": False}
        assert await cycle.receive() == {"type": "http.disconnect"}

    run(go())


def test_run_exception_before_start_sends_500() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def go() -> None:
        ex = FakeExchange()
        cycle = HTTPCycle(ex)
        await start_task(asyncio.get_running_loop(), cycle.run(app({}, cycle.receive, cycle.send)))
        assert cycle.ended
        assert [call[:2] for call in ex.calls] == [("send_simple", 500)]

    run(go())


def test_run_exception_after_start_aborts() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": START, "status": 200})
        await send({"type": BODY, "body": b"partial", "more_body": True})
        raise RuntimeError("boom")

    async def go() -> None:
        ex = FakeExchange()
        cycle = HTTPCycle(ex)
        await start_task(asyncio.get_running_loop(), cycle.run(app({}, cycle.receive, cycle.send)))
        assert ex.calls[-1] == ("abort",)
        assert not any(call[0] == "send_simple" for call in ex.calls)

    run(go())


# -- a real server: helpers -----------------------------------------------------------------------------


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """caplog on bascule.error at DEBUG, even if another test installed bascule's non-propagating handler."""
    monkeypatch.setattr(logging.getLogger("bascule.error"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="bascule.error")
    return caplog


def error_records(caplog: pytest.LogCaptureFixture, *, with_traceback: bool | None = None) -> list[logging.LogRecord]:
    records = [r for r in caplog.records if r.name == "bascule.error" and r.levelno >= logging.ERROR]
    if with_traceback is not None:
        records = [r for r in records if bool(r.exc_info) == with_traceback]
    return records


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


async def respond(send: Any, body: bytes = b"ok", status: int = 200, headers: Any = ()) -> None:
    await send({"type": START, "status": status, "headers": [(b"content-type", b"text/plain"), *headers]})
    await send({"type": BODY, "body": body})


def read_until_close(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything until the server closes; fails (rather than returning) if it never does."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def split_response(raw: bytes) -> tuple[str, dict[str, list[str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return lines[0], headers, body


# -- the scope ------------------------------------------------------------------------------------------


@pytest.fixture
def scope_server(serve: Any) -> Iterator[tuple[Any, list[Scope]]]:
    """A server whose app records every http scope; its lifespan startup puts values into the state."""
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["from_startup"] = "db-pool"
            scope["state"]["shared_list"] = []
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        scopes.append(scope)
        scope["state"]["set_by_request"] = len(scopes)
        await respond(send)

    with serve(app) as srv:
        yield srv, scopes


def test_scope_is_complete(scope_server: tuple[Any, list[Scope]]) -> None:
    srv, scopes = scope_server
    with srv.connect() as sock:
        raw = http_exchange(sock, b"GET /caf%C3%A9/a%2Fb?q=%20x&q=2 HTTP/1.1\r\nHost: example.test\r\n"
                                  b"X-Dup: one\r\nX-Mixed-CASE: VaLuE\r\nX-Dup: two\r\n\r\n")
        client = sock.getsockname()
    assert raw.startswith(b"HTTP/1.1 200 ")
    (scope,) = scopes
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    major, minor = scope["asgi"]["spec_version"].split(".")
    assert major == "2" and int(minor) >= 1
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a/b"
    assert scope["raw_path"] == b"/caf%C3%A9/a%2Fb"
    assert scope["query_string"] == b"q=%20x&q=2"
    assert scope["root_path"] == ""
    assert scope["headers"] == [(b"host", b"example.test"), (b"x-dup", b"one"), (b"x-mixed-case", b"VaLuE"),
                                (b"x-dup", b"two")]
    assert all(type(n) is bytes and type(v) is bytes for n, v in scope["headers"])
    assert tuple(scope["client"]) == client
    assert tuple(scope["server"]) == ("127.0.0.1", srv.port)
    assert "http.response.trailers" in scope["extensions"]
    assert scope["state"]["from_startup"] == "db-pool"


def test_scope_of_http_10_request_and_other_method(scope_server: tuple[Any, list[Scope]]) -> None:
    srv, scopes = scope_server
    with srv.connect() as sock:
        raw = http_exchange(sock, b"DELETE /item HTTP/1.0\r\n\r\n", until_close=True)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert scopes[0]["http_version"] == "1.0"
    assert scopes[0]["method"] == "DELETE"
    assert scopes[0]["query_string"] == b""


def test_path_with_invalid_utf8_is_replaced_not_rejected(scope_server: tuple[Any, list[Scope]]) -> None:
    srv, scopes = scope_server
    assert httpx.get(srv.url + "/%FF%41").status_code == 200
    assert scopes[0]["path"] == "/\ufffdA"
    assert scopes[0]["raw_path"] == b"/%FF%41"


def test_state_is_a_shallow_copy_per_request(scope_server: tuple[Any, list[Scope]]) -> None:
    srv, scopes = scope_server
    with httpx.Client() as client:
        client.get(srv.url + "/one")
        client.get(srv.url + "/two")
    first, second = scopes
    assert first["state"]["set_by_request"] == 1
    assert second["state"]["set_by_request"] == 2  # request 1's write did not leak into request 2
    assert first["state"] is not second["state"]
    assert second["state"]["from_startup"] == "db-pool"
    assert first["state"]["shared_list"] is second["state"]["shared_list"]  # shallow: values are shared


def test_state_copy_is_not_the_lifespan_state(serve: Any) -> None:
    seen: list[dict[str, Any]] = []
    lifespan_state: dict[str, Any] = {}

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            lifespan_state.update(id=id(scope["state"]))
            await receive()
            scope["state"]["key"] = "value"
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(dict(scope["state"]))
        scope["state"]["key"] = "changed"
        scope["state"].clear()
        await respond(send)

    with serve(app) as srv:
        httpx.get(srv.url)
        httpx.get(srv.url)
    assert seen == [{"key": "value"}, {"key": "value"}]


# -- receive --------------------------------------------------------------------------------------------


def test_streamed_request_body_arrives_in_pieces(serve: Any) -> None:
    got: queue.Queue[Message] = queue.Queue()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            msg = await receive()
            got.put(msg)
            if not msg.get("more_body"):
                break
        await respond(send, b"thanks")

    with serve(app, lifespan="off") as srv, srv.connect() as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        pieces = [b"hello ", b"streamed ", b"world"]
        messages = []
        for piece in pieces:
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            messages.append(got.get(timeout=5))
        raw = http_exchange(sock, b"0\r\n\r\n")
        messages.append(got.get(timeout=5))
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"thanks")
    assert all(m["type"] == "http.request" for m in messages)
    assert [m["body"] for m in messages[:3]] == pieces
    assert [m["more_body"] for m in messages] == [True, True, True, False]
    assert b"".join(m["body"] for m in messages) == b"".join(pieces)


def test_large_streamed_body_is_complete_and_in_order(serve: Any) -> None:
    received: list[Message] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            msg = await receive()
            received.append(msg)
            if not msg.get("more_body"):
                break
        body = b"".join(m["body"] for m in received)
        await respond(send, str(len(body)).encode())

    payload = bytes(range(256)) * 4096  # 1 MiB, more than the server buffers before pausing

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 65536):
            yield payload[i:i + 65536]

    with serve(app, lifespan="off") as srv:
        response = httpx.post(srv.url, content=chunks())
    assert response.text == str(len(payload))
    assert b"".join(m["body"] for m in received) == payload
    assert all(m["more_body"] for m in received[:-1]) and received[-1]["more_body"] is False
    assert all(m["type"] == "http.request" for m in received)


def test_receive_after_full_response_is_disconnect(serve: Any) -> None:
    after: queue.Queue[tuple[Message, float]] = queue.Queue()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        assert (await receive())["more_body"] is False
        await respond(send)
        t0 = time.monotonic()
        msg = await receive()
        after.put((msg, time.monotonic() - t0))

    with serve(app, lifespan="off") as srv:
        assert httpx.post(srv.url, content=b"body").text == "ok"
        msg, waited = after.get(timeout=5)
    assert msg == {"type": "http.disconnect"}
    assert waited < 1.0


def test_receive_after_full_response_is_disconnect_even_if_body_unread(serve: Any) -> None:
    after: queue.Queue[Message] = queue.Queue()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await respond(send)
        after.put(await receive())

    with serve(app, lifespan="off") as srv:
        assert httpx.get(srv.url).text == "ok"
        msg = after.get(timeout=5)
    assert msg == {"type": "http.disconnect"}


def test_receive_returns_disconnect_when_client_goes(serve: Any, errors: pytest.LogCaptureFixture) -> None:
    events: queue.Queue[Any] = queue.Queue()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        events.put(await receive())  # the (empty) body
        events.put(await receive())  # long poll: blocks until the client goes
        try:
            await respond(send)
        except OSError as exc:
            events.put(exc)

    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
        assert events.get(timeout=5) == {"type": "http.request", "body": b"", "more_body": False}
        time.sleep(0.05)
        assert events.empty()  # still waiting: the client is there
        sock.close()
        assert events.get(timeout=5) == {"type": "http.disconnect"}
        assert isinstance(events.get(timeout=5), ClientDisconnected)
    assert error_records(errors) == []


def test_receive_returns_disconnect_when_client_goes_mid_body(serve: Any) -> None:
    got: queue.Queue[Message] = queue.Queue()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            msg = await receive()
            got.put(msg)
            if msg["type"] == "http.disconnect" or not msg["more_body"]:
                return

    with serve(app, lifespan="off") as srv:
        sock = srv.connect()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        first = got.get(timeout=5)
        assert first["type"] == "http.request" and first["more_body"] is True
        sock.close()
        rest = [got.get(timeout=5)]
        while rest[-1]["type"] != "http.disconnect":
            rest.append(got.get(timeout=5))
    assert b"".join([first["body"], *(m.get("body", b"") for m in rest)]) == b"0123456789"


# -- send -----------------------------------------------------------------------------------------------


def test_streamed_response_is_chunked(serve: Any) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": START, "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one", b"two", b""):
            await send({"type": BODY, "body": part, "more_body": True})
        await send({"type": BODY, "body": b"three", "more_body": False})

    with serve(app, lifespan="off") as srv, srv.connect() as sock:
        raw = http_exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = split_response(raw)
        assert status == "HTTP/1.1 200 OK"
        assert headers["transfer-encoding"] == ["chunked"]
        assert "content-length" not in headers
        assert body == b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"
        # and the connection is still good for the next request
        assert http_exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    with serve(app, lifespan="off") as srv:
        assert httpx.get(srv.url).text == "onetwothree"


def test_single_body_gets_content_length(serve: Any) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await respond(send, b"hello")

    with serve(app, lifespan="off") as srv, srv.connect() as sock:
        _, headers, body = split_response(http_exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert headers["content-length"] == ["5"] and body == b"hello"


def test_trailers_are_sent_after_the_chunked_body(serve: Any) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": START, "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum, x-count")]})
        await send({"type": BODY, "body": b"data", "more_body": True})
        await send({"type": BODY, "body": b"more", "more_body": False})
        await send({"type": TRAILERS, "headers": [(b"x-checksum", b"abc123")], "more_trailers": True})
        await send({"type": TRAILERS, "headers": [(b"x-count", b"2")], "more_trailers": False})

    with serve(app, lifespan="off") as srv, srv.connect() as sock:
        raw = http_exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
                            until_close=True)
    _, headers, body = split_response(raw)
    assert headers["transfer-encoding"] == ["chunked"]
    assert "content-length" not in headers
    assert body == b"4\r\ndata\r\n4\r\nmore\r\n0\r\nx-checksum: abc123\r\nx-count: 2\r\n\r\n"


def test_trailers_with_single_body_message(serve: Any) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": START, "status": 200, "trailers": True})
        await send({"type": BODY, "body": b"all"})
        await send({"type": TRAILERS, "headers": [(b"grpc-status", b"0")]})

    with serve(app, lifespan="off") as srv, srv.connect() as sock:
        raw = http_exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
                            until_close=True)
    _, headers, body = split_response(raw)
    assert headers["transfer-encoding"] == ["chunked"]
    assert body == b"3\r\nall\r\n0\r\ngrpc-status: 0\r\n\r\n"


@pytest.mark.parametrize("headers", [
    [[b"x-list", b"1"], [b"x-other", b"2"]],
    [(b"x-list", b"1"), (b"x-other", b"2")],
    ((b"x-list", b"1"), [b"x-other", b"2"]),
], ids=["lists", "tuples", "mixed-in-tuple"])
def test_headers_as_lists_or_tuples(serve: Any, headers: Any) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": START, "status": 200, "headers": headers})
        await send({"type": BODY, "body": b"ok"})

    with serve(app, lifespan="off") as srv:
        response = httpx.get(srv.url)
    assert response.headers["x-list"] == "1" and response.headers["x-other"] == "2"


def test_bytes_like_header_names_and_values_are_sent(serve: Any) -> None:
    """ASGI asks for bytes; bytearray and memoryview are taken as well (as they were before the hot path
    was compiled, where a tuple[bytes, bytes] annotation is checked at runtime)."""
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": START, "status": 200,
                        "headers": [(bytearray(b"x-a"), b"1"), (b"x-b", memoryview(b"2"))]})
            await send({"type": BODY, "body": b"ok"})

    with serve(app, lifespan="off") as srv:
        response = httpx.get(srv.url)
    assert (response.status_code, response.headers["x-a"], response.headers["x-b"]) == (200, "1", "2")


@pytest.mark.parametrize("headers", [[(b"x-a", "text")], [(b"x-a", 1)], [(b"x-a", b"1", b"extra")]],
                         ids=["str-value", "int-value", "three-items"])
def test_header_pairs_that_are_not_bytes_pairs_are_500(serve: Any, errors: pytest.LogCaptureFixture,
                                                       headers: Any) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": START, "status": 200, "headers": headers})
            await send({"type": BODY, "body": b"ok"})

    with serve(app, lifespan="off") as srv:
        assert httpx.get(srv.url).status_code == 500
    [record] = error_records(errors, with_traceback=True)
    assert isinstance(record.exc_info[1], AppProtocolError)  # type: ignore[index]


def test_an_intenum_status_is_its_value(serve: Any) -> None:
    """Starlette passes ``status_code`` through as given, so ``HTTPStatus.CREATED`` reaches the server."""
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": START, "status": http.HTTPStatus.CREATED, "headers": []})
            await send({"type": BODY, "body": b"ok"})

    with serve(app, lifespan="off") as srv:
        assert httpx.get(srv.url).status_code == 201


def test_repeated_response_headers_are_kept(serve: Any) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await respond(send, headers=[(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")])

    with serve(app, lifespan="off") as srv:
        response = httpx.get(srv.url)
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]


def test_head_request_gets_no_body(serve: Any) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await respond(send, b"hello")

    with serve(app, lifespan="off") as srv, srv.connect() as sock:
        raw = http_exchange(sock, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", until_close=True)
    status, headers, body = split_response(raw)
    assert status == "HTTP/1.1 200 OK" and body == b""
    assert "transfer-encoding" not in headers


# -- app errors -----------------------------------------------------------------------------------------


async def misbehaving_app(scope: Scope, receive: Any, send: Any) -> None:
    """One route per way an app can break the rules; /ok works."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/ok":
        await respond(send, b"fine")
    elif path == "/raise-before-start":
        raise RuntimeError("boom before start")
    elif path == "/raise-after-start-only":
        await send({"type": START, "status": 200})
        raise RuntimeError("boom after a held-back start")
    elif path == "/raise-after-body":
        await send({"type": START, "status": 200})
        await send({"type": BODY, "body": b"partial", "more_body": True})
        raise RuntimeError("boom mid-body")
    elif path == "/raise-after-complete":
        await respond(send, b"complete")
        raise RuntimeError("boom after the response")
    elif path == "/return-without-response":
        return
    elif path == "/return-after-start-only":
        await send({"type": START, "status": 200})
    elif path == "/return-mid-body":
        await send({"type": START, "status": 200})
        await send({"type": BODY, "body": b"partial", "more_body": True})
    elif path == "/body-before-start":
        await send({"type": BODY, "body": b"x"})
    elif path == "/two-starts":
        await send({"type": START, "status": 200})
        await send({"type": START, "status": 201})
    elif path == "/trailers-before-start":
        await send({"type": TRAILERS, "headers": []})
    elif path == "/request-message":
        await send({"type": "http.request", "body": b""})
    elif path == "/no-type":
        await send({"status": 200})
    elif path == "/status-str":
        await send({"type": START, "status": "200"})
    elif path == "/body-str":
        await send({"type": START, "status": 200})
        await send({"type": BODY, "body": "text"})
    elif path == "/header-injection":
        await send({"type": START, "status": 200, "headers": [(b"x-evil", b"a\r\nx-injected: 1")]})
        await send({"type": BODY, "body": b"x"})


@pytest.fixture
def misbehaving(serve: Any) -> Iterator[Any]:
    with serve(misbehaving_app, lifespan="off") as srv:
        yield srv


def get(srv: Any, path: str) -> bytes:
    """GET over a fresh connection; every byte until the server closes or the response is complete."""
    with srv.connect() as sock:
        return http_exchange(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def assert_still_serving(srv: Any) -> None:
    response = httpx.get(srv.url + "/ok")
    assert response.status_code == 200 and response.text == "fine"


ORDER_VIOLATIONS = ["/body-before-start", "/two-starts", "/trailers-before-start", "/request-message",
                    "/no-type", "/status-str", "/body-str", "/header-injection"]


@pytest.mark.parametrize("path", ["/raise-before-start", "/raise-after-start-only", *ORDER_VIOLATIONS])
def test_error_before_anything_was_written_is_a_500(misbehaving: Any, errors: pytest.LogCaptureFixture,
                                                    path: str) -> None:
    with misbehaving.connect() as sock:
        raw = http_exchange(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, body = split_response(raw)
        assert status == "HTTP/1.1 500 Internal Server Error"
        assert headers["content-type"][0].startswith("text/plain")
        assert body == b"Internal Server Error\n"  # small, and nothing of the app's internals
        assert b"injected" not in raw
        # the connection stays usable after a clean 500
        assert http_exchange(sock, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"fine")
    logged = error_records(errors, with_traceback=True)
    assert len(logged) == 1
    assert path in logged[0].getMessage()
    assert error_records(errors, with_traceback=False) == []
    assert_still_serving(misbehaving)


def test_order_violation_is_logged_as_app_protocol_error(misbehaving: Any, errors: pytest.LogCaptureFixture) -> None:
    get(misbehaving, "/two-starts")
    (record,) = error_records(errors)
    assert record.exc_info is not None and record.exc_info[0] is AppProtocolError


def test_exception_after_body_started_closes_the_connection(misbehaving: Any,
                                                            errors: pytest.LogCaptureFixture) -> None:
    with misbehaving.connect() as sock:
        sock.sendall(b"GET /raise-after-body HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = read_until_close(sock)
    status, headers, body = split_response(raw)
    assert status == "HTTP/1.1 200 OK"
    assert headers["transfer-encoding"] == ["chunked"]
    assert body == b"7\r\npartial\r\n"  # no last chunk: the client can tell the response is broken
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(misbehaving.url + "/raise-after-body")
    wait_for(lambda: len(error_records(errors)) == 2)
    assert all(r.exc_info for r in error_records(errors))
    assert_still_serving(misbehaving)


def test_exception_after_complete_response_is_logged_once(misbehaving: Any,
                                                         errors: pytest.LogCaptureFixture) -> None:
    response = httpx.get(misbehaving.url + "/raise-after-complete")
    assert response.status_code == 200 and response.text == "complete"
    wait_for(lambda: len(error_records(errors)) >= 1)
    time.sleep(0.05)
    assert len(error_records(errors, with_traceback=True)) == 1
    assert_still_serving(misbehaving)


def test_return_without_response_is_a_logged_500(misbehaving: Any, errors: pytest.LogCaptureFixture) -> None:
    for path in ("/return-without-response", "/return-after-start-only"):
        status, _, body = split_response(get(misbehaving, path))
        assert status == "HTTP/1.1 500 Internal Server Error"
        assert body == b"Internal Server Error\n"
    logged = error_records(errors)
    assert len(logged) == 2
    assert all("without sending a response" in r.getMessage() for r in logged)
    assert_still_serving(misbehaving)


def test_return_mid_body_closes_the_connection(misbehaving: Any, errors: pytest.LogCaptureFixture) -> None:
    with misbehaving.connect() as sock:
        sock.sendall(b"GET /return-mid-body HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = read_until_close(sock)
    status, _, body = split_response(raw)
    assert status == "HTTP/1.1 200 OK"
    assert body == b"7\r\npartial\r\n"
    wait_for(lambda: len(error_records(errors)) == 1)
    assert "without completing the response" in error_records(errors)[0].getMessage()
    assert_still_serving(misbehaving)


def test_client_gone_is_not_an_error(serve: Any, errors: pytest.LogCaptureFixture) -> None:
    """An app that ignores the disconnect and keeps sending gets ClientDisconnected; nothing is logged as an
    error for it."""
    done: queue.Queue[str] = queue.Queue()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/gone":
            await respond(send)
            return
        await receive()
        try:
            await send({"type": START, "status": 200})
            await send({"type": BODY, "body": b"first", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            await send({"type": BODY, "body": b"too late", "more_body": True})
        finally:
            done.put("finished")

    with serve(app, lifespan="off") as srv:
        with srv.connect() as sock:
            sock.sendall(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert done.get(timeout=5) == "finished"
        time.sleep(0.05)
        assert error_records(errors) == []
        assert httpx.get(srv.url).status_code == 200
