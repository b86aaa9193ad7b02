"""Tests for bascule.protocols.h2.connection: HTTP/2 semantics end to end, through a strict client.

The client is the ``h2`` library's state machine (an independent implementation that raises on any frame
we get wrong) over a real loopback socket to an in-process server. Frame-by-frame conformance lives in
tests/protocols/h2/h2spec; here: requests and responses, bodies both ways under flow control, trailers, 1xx,
resets, GOAWAY on shutdown, WSGI apps, WebSockets over extended CONNECT, h2c upgrade and the limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hyperframe.frame
import pytest
from conftest import Running
from fakes import Reply

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Serve = Callable[..., contextlib.AbstractContextManager[Running]]




class Client:
    """A strict HTTP/2 client over one socket (h2c with prior knowledge unless given a connected socket)."""

    def __init__(self, port: int, *, window: int | None = None, sock: socket.socket | None = None,
                 upgraded: h2.connection.H2Connection | None = None) -> None:
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=5)
        self.replies: dict[int, Reply] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.auto_ack = True
        if upgraded is not None:  # after an h2c upgrade: its preface is queued already, stream 1 is open
            self.conn = upgraded
            self.replies[1] = Reply()
        else:
            self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                             header_encoding=None))
            if window is not None:  # sent with the preface (update_settings would queue it before the preface)
                self.conn.local_settings = h2.settings.Settings(
                    client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def request(self, path: str = "/", method: str = "GET", headers: list[tuple[str, str]] | None = None,
                body: bytes = b"", end: bool = True, extra_pseudo: list[tuple[str, str]] | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1"),
                  *(extra_pseudo or []), *(headers or [])]
        self.conn.send_headers(sid, fields, end_stream=end and not body)
        self.replies[sid] = Reply()
        self.flush()
        if body:
            self.send_body(sid, body, end)
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True, timeout: float = 10) -> None:
        view = memoryview(body)
        deadline = time.monotonic() + timeout
        while view:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.pump(deadline - time.monotonic())
                continue
            self.conn.send_data(sid, bytes(view[:room]), end_stream=end and len(view) <= room)
            view = view[room:]
            self.flush()
        if end and not body:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout: float = 5.0) -> list[h2.events.Event]:
        self.sock.settimeout(max(timeout, 0.01))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return []
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for ev in events:
            self._note(ev)
        self.flush()
        return events

    def _note(self, ev: h2.events.Event) -> None:
        sid = getattr(ev, "stream_id", None)
        reply = self.replies.setdefault(sid, Reply()) if sid else None
        if isinstance(ev, h2.events.InformationalResponseReceived) and reply is not None:
            reply.informational.append(int(dict(ev.headers)[b":status"]))
        elif isinstance(ev, h2.events.ResponseReceived) and reply is not None:
            reply.status = int(dict(ev.headers)[b":status"])
            reply.headers = [(n, v) for n, v in ev.headers if not n.startswith(b":")]
        elif isinstance(ev, h2.events.DataReceived) and reply is not None:
            reply.body += ev.data
            if self.auto_ack:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived) and reply is not None:
            reply.trailers = list(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded) and reply is not None:
            reply.ended = True
        elif isinstance(ev, h2.events.StreamReset) and reply is not None:
            reply.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError("timed out waiting for the server")
            self.pump(min(left, 0.05))  # short: the predicate may depend on the server's state, not on frames

    def response(self, sid: int, timeout: float = 5.0) -> Reply:
        reply = self.replies[sid]
        self.wait(lambda: reply.ended or reply.reset is not None, timeout)
        return reply

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def client(srv: Running, **kwargs: Any) -> Iterator[Client]:
    c = Client(srv.port, **kwargs)
    try:
        yield c
    finally:
        c.close()


class App:
    """An ASGI app with one route per behaviour under test; it records what it saw."""

    def __init__(self) -> None:
        self.calls = 0
        self.disconnects = 0
        self.scopes: list[Scope] = []
        self.gate = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
            return
        self.calls += 1
        self.scopes.append(scope)
        path = scope["path"]
        start: dict[str, Any] = {"type": "http.response.start", "status": 200,
                                 "headers": [(b"content-type", b"text/plain")]}
        if path == "/echo":
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            await send(start)
            await send({"type": "http.response.body", "body": body})
        elif path == "/big":
            await send(start)
            chunk = b"z" * 65536
            for i in range(32):
                await send({"type": "http.response.body", "body": chunk, "more_body": i < 31})
        elif path == "/trailers":
            await send({**start, "trailers": True})
            await send({"type": "http.response.body", "body": b"data"})
            await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")]})
        elif path == "/wait-disconnect":
            msg = await receive()
            while msg["type"] != "http.disconnect":
                msg = await receive()
            self.disconnects += 1
        elif path == "/slow":
            await asyncio.sleep(0.3)
            await send(start)
            await send({"type": "http.response.body", "body": b"slow"})
        elif path == "/error":
            raise RuntimeError("boom")
        elif path == "/continue":
            await receive()
            await send(start)
            await send({"type": "http.response.body", "body": b"read"})
        else:
            await send(start)
            await send({"type": "http.response.body", "body": b"Hello, world!"})

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        if scope["path"] == "/deny":
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo:" + msg["text"]})


@pytest.fixture
def app() -> App:
    return App()


def test_get_response_fields_and_body(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv) as c:
        reply = c.response(c.request("/"))
    assert reply.status == 200 and reply.body == b"Hello, world!"
    assert reply.header(b"content-length") == b"13" and reply.header(b"server") == b"bascule"
    assert reply.header(b"date") is not None
    scope = app.scopes[0]
    assert scope["http_version"] == "2" and scope["scheme"] == "http"
    assert (b"host", b"127.0.0.1") in scope["headers"]


def test_upload_and_download_under_flow_control(serve: Serve, app: App) -> None:
    payload = os.urandom(1_500_000)  # far beyond the 64 KiB default windows, both ways
    with serve(app) as srv, client(srv) as c:
        sid = c.request("/echo", "POST", body=payload)
        reply = c.response(sid, timeout=20)
        big = c.response(c.request("/big"), timeout=20)
    assert reply.body == payload
    assert big.body == b"z" * 65536 * 32


def test_many_concurrent_streams_on_one_connection(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv) as c:
        sids = [c.request("/slow") for _ in range(50)]
        started = time.monotonic()
        replies = [c.response(sid, timeout=10) for sid in sids]
        elapsed = time.monotonic() - started
    assert all(r.body == b"slow" for r in replies)
    assert elapsed < 3.0  # concurrent (50 x 0.3 s would be 15 s one after another)


def test_a_stalled_stream_does_not_block_the_others(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv, window=1024) as c:
        c.auto_ack = False  # stream windows of 1 KiB are never reopened: /big stalls
        stalled = c.request("/big")
        c.wait(lambda: len(c.replies[stalled].body) >= 1024)
        quick = c.request("/")
        assert c.response(quick).body == b"Hello, world!"
        assert not c.replies[stalled].ended
        c.auto_ack = True
        c.conn.increment_flow_control_window(4 << 20, stalled)
        c.flush()
        assert len(c.response(stalled, timeout=20).body) == 65536 * 32


def test_response_trailers(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv) as c:
        reply = c.response(c.request("/trailers"))
    assert reply.body == b"data" and reply.trailers == [(b"grpc-status", b"0")]


def test_head_has_length_and_no_body(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv) as c:
        reply = c.response(c.request("/", "HEAD"))
    assert reply.status == 200 and reply.body == b"" and reply.header(b"content-length") == b"13"


def test_expect_100_continue_is_answered_when_the_app_reads(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv) as c:
        sid = c.request("/continue", "POST", headers=[("expect", "100-continue")], end=False)
        c.wait(lambda: bool(c.replies[sid].informational))
        c.send_body(sid, b"body")
        reply = c.response(sid)
    assert reply.informational == [100] and reply.body == b"read"


def test_request_trailers_are_accepted(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv) as c:
        sid = c.request("/echo", "POST", body=b"abc", end=False)
        c.conn.send_headers(sid, [("x-checksum", "1")], end_stream=True)
        c.flush()
        assert c.response(sid).body == b"abc"


def test_reset_stream_is_an_http_disconnect_and_the_connection_goes_on(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv) as c:
        sid = c.request("/wait-disconnect", "POST", end=False)
        c.wait(lambda: app.calls == 1)
        c.conn.reset_stream(sid)
        c.flush()
        deadline = time.monotonic() + 5
        while app.disconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.disconnects == 1
        assert c.response(c.request("/")).status == 200


def test_app_error_is_a_500_on_its_stream_only(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv) as c:
        assert c.response(c.request("/error")).status == 500
        assert c.response(c.request("/")).status == 200


def test_graceful_shutdown_sends_goaway_and_finishes_streams_in_flight(serve: Serve, app: App) -> None:
    # Read as raw frames: the h2 library stops taking frames once it has seen GOAWAY, where RFC 9113 6.8
    # has the streams below its last-stream-id finish normally, which is what this checks.
    frames: list[Any] = []
    with serve(app) as srv, client(srv) as c:
        sid = c.request("/slow")
        c.wait(lambda: app.calls == 1)
        assert srv.server is not None
        srv.server.request_exit()
        buf = b""
        deadline = time.monotonic() + 5
        c.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                data = c.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            buf += data
        while len(buf) >= 9:
            frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(buf[:9]))
            frame.parse_body(memoryview(buf[9:9 + length]))
            frames.append(frame)
            buf = buf[9 + length:]
    kinds = [type(f).__name__ for f in frames]
    goaway = next(f for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame))
    assert goaway.error_code == 0 and goaway.last_stream_id == sid
    data = [f for f in frames if isinstance(f, hyperframe.frame.DataFrame) and f.stream_id == sid]
    assert b"".join(f.data for f in data) == b"slow" and "END_STREAM" in data[-1].flags, kinds
    assert kinds.index("GoAwayFrame") < kinds.index("DataFrame")  # GOAWAY first, then the stream finished


def test_idle_connection_gets_goaway_then_close_on_shutdown(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv) as c:
        assert c.response(c.request("/")).status == 200
        assert srv.server is not None
        started = time.monotonic()
        srv.server.request_exit()
        c.sock.settimeout(5)
        data = b""
        while chunk := c.sock.recv(65536):
            data += chunk
        elapsed = time.monotonic() - started
    frames = []
    while len(data) >= 9:
        frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        frames.append(frame)
        data = data[9 + length:]
    goaway = [f for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame)]
    assert len(goaway) == 1 and goaway[0].error_code == 0 and goaway[0].last_stream_id == 1
    assert elapsed < 2.0  # a short grace after the GOAWAY, then closed (not held until the graceful timeout)


def test_malformed_request_is_reset_and_never_reaches_the_app(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv) as c:
        c.conn.config.validate_outbound_headers = c.conn.config.normalize_outbound_headers = False
        sid = c.request("/", headers=[("connection", "keep-alive")])
        assert c.response(sid).reset == 1  # PROTOCOL_ERROR
        assert app.calls == 0
        assert c.response(c.request("/")).status == 200


def test_request_body_over_the_limit_is_413(serve: Serve, app: App) -> None:
    with serve(app, limit_request_body=1000) as srv, client(srv) as c:
        declared = c.response(c.request("/echo", "POST", headers=[("content-length", "2000")], body=b"x" * 2000))
        assert declared.status == 413
        assert app.calls == 0  # a declared length over the limit never reaches the app
        streamed = c.response(c.request("/echo", "POST", body=b"x" * 2000))
        assert streamed.status == 413  # answered (and the rest of the upload refused with RST_STREAM)


def test_413_names_limit_request_body_in_its_text_and_log_line(serve: Serve, app: App,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bascule.error")
    with serve(app, limit_request_body=1000) as srv, client(srv) as c:
        declared = c.response(c.request("/echo", "POST", headers=[("content-length", "2000")], body=b"x" * 2000))
        streamed = c.response(c.request("/echo", "POST", body=b"x" * 2000))
    assert declared.body == b"Payload Too Large: request body of 2000 bytes is over --limit-request-body (1000 bytes)\n"
    assert streamed.body == b"Payload Too Large: request body is over --limit-request-body (1000 bytes)\n"
    lines = [r.getMessage() for r in caplog.records if "--limit-request-body" in r.getMessage()]
    assert len(lines) == 2 and all(line.startswith("rejected a request from 127.0.0.1:") for line in lines), lines
    assert lines[0].endswith("request body of 2000 bytes is over --limit-request-body (1000 bytes) (413)")


def test_timeout_request_is_504(serve: Serve, app: App) -> None:
    with serve(app, timeout_request=0.2) as srv, client(srv) as c:
        reply = c.response(c.request("/wait-disconnect"), timeout=5)
    assert reply.status == 504


def test_wsgi_app_over_http2(serve: Serve) -> None:
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["SERVER_PROTOCOL"].encode(), b" ", body, b" ", b"x" * 100_000]

    with serve(wsgi) as srv, client(srv) as c:
        reply = c.response(c.request("/", "POST", body=b"in"), timeout=10)
    assert reply.status == 200
    assert reply.body == b"HTTP/2 in " + b"x" * 100_000


def _ws_frame(text: str) -> bytes:
    data = text.encode()
    mask = os.urandom(4)
    return bytes((0x81, 0x80 | len(data))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_websocket_over_extended_connect(serve: Serve, app: App) -> None:
    with serve(app) as srv, client(srv) as c:
        c.wait(lambda: c.conn.remote_settings.get(8) == 1)  # SETTINGS_ENABLE_CONNECT_PROTOCOL
        sid = c.request("/ws", "CONNECT", headers=[("sec-websocket-version", "13")], end=False,
                        extra_pseudo=[(":protocol", "websocket")])
        c.wait(lambda: c.replies[sid].status != 0)
        assert c.replies[sid].status == 200
        c.conn.send_data(sid, _ws_frame("hi"))
        c.flush()
        c.wait(lambda: len(c.replies[sid].body) >= 9)
        assert c.replies[sid].body == b"\x81\x07echo:hi"
        c.conn.send_data(sid, bytes((0x88, 0x82)) + b"\0\0\0\0" + struct.pack(">H", 1000))
        c.flush()
        c.wait(lambda: c.replies[sid].ended or c.replies[sid].reset is not None)
        assert c.replies[sid].body.endswith(b"\x88\x02\x03\xe8")  # our close, echoing 1000
        denied = c.request("/deny", "CONNECT", headers=[("sec-websocket-version", "13")], end=False,
                           extra_pseudo=[(":protocol", "websocket")])
        assert c.response(denied).status == 403


def test_h2c_upgrade_from_http11(serve: Serve, app: App) -> None:
    settings = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with serve(app) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=5)
        header = settings.initiate_upgrade_connection()
        sock.sendall(b"GET /?up=1 HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
                     b"http2-settings: " + header + b"\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        c = Client(srv.port, sock=sock, upgraded=settings)
        try:
            reply = c.response(1)
        finally:
            c.close()
    assert reply.status == 200 and reply.body == b"Hello, world!"
    assert app.scopes[0]["http_version"] == "2" and app.scopes[0]["query_string"] == b"up=1"


def test_h2c_upgrade_answers_after_the_client_preface(serve: Serve, app: App) -> None:
    """Nothing of stream 1's response may follow the 101 before the client's preface: curl --http2 reads
    the 101 and what comes after it in one 32 KiB buffer and fails when more arrived (seen with /big)."""
    settings = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with serve(app) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=5)
        header = settings.initiate_upgrade_connection()
        sock.sendall(b"GET /big HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
                     b"http2-settings: " + header + b"\r\n\r\n")
        early = b""
        sock.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            while len(early) < 1 << 20:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                early += chunk
        head, _, frames = early.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        kinds = []
        while len(frames) >= 9:
            length = int.from_bytes(frames[:3], "big")
            kinds.append(frames[3])
            frames = frames[9 + length:]
        assert set(kinds) <= {0x4, 0x8}, f"frames before the preface: {kinds}"  # SETTINGS, WINDOW_UPDATE only
        settings.receive_data(early[len(head) + 4:])
        c = Client(srv.port, sock=sock, upgraded=settings)
        try:
            reply = c.response(1, timeout=20)
        finally:
            c.close()
    assert reply.status == 200 and len(reply.body) == 65536 * 32


def test_no_http2_refuses_the_preface(serve: Serve, app: App) -> None:
    with serve(app, http2=False) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=5)
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        answer = sock.recv(4096)
        sock.close()
    assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 505")
    assert app.calls == 0
