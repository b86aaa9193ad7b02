"""Review of the HTTP/2 engine: tests that pin bugs found in review (and a few subtle behaviours checked right)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import h2.settings
import hpack
import pytest
from conftest import Running
from test_http2 import _ws_frame, client

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Serve = Callable[..., contextlib.AbstractContextManager[Running]]


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_bodiless_response_with_trailers_ends_the_stream(serve: Serve, method: str, status: int) -> None:
    """A response that carries no body (HEAD, 204, 304) whose app announced trailers must still end its stream."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": status, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b""})
        await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")]})

    with serve(app) as srv, client(srv) as c:
        reply = c.response(c.request("/", method), timeout=2)
    assert reply.status == status
    assert reply.ended


def test_streams_we_reset_keep_their_slot_while_their_app_runs(serve: Serve) -> None:
    """"MadeYouReset": a stream error we are made to send frees the stream slot, but its app still runs.

    A client reset (RST_STREAM) keeps the slot until the app returns (_orphans); a stream error we send
    (here: more DATA than content-length) must do the same, or SETTINGS_MAX_CONCURRENT_STREAMS no longer
    bounds the apps one connection runs.
    """
    running = 0
    peak = 0
    started = threading.Semaphore(0)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal running, peak
        if scope["type"] != "http":
            return
        running += 1
        peak = max(peak, running)
        started.release()
        try:
            await asyncio.sleep(1.5)  # never reads the body, never answers: work the client made us do
        finally:
            running -= 1

    with serve(app, h2_max_concurrent_streams=2) as srv, client(srv) as c:
        for _ in range(6):
            sid = c.request("/", "POST", headers=[("content-length", "1")], end=False)
            if not started.acquire(timeout=1):  # refused (REFUSED_STREAM), as it should be once two apps run
                c.wait(lambda sid=sid: c.replies[sid].reset is not None, 2)
                continue
            c.conn.send_data(sid, b"xx")  # one byte more than declared: a stream error (PROTOCOL_ERROR)
            c.flush()
            c.wait(lambda sid=sid: c.replies[sid].reset is not None, 2)
        c.pump(0.2)
    assert peak <= 2, f"{peak} apps ran at once on a connection limited to 2 streams"


def test_websocket_app_sees_disconnect_when_the_connection_drops(serve: Serve) -> None:
    """An HTTP/2 connection lost under an open WebSocket stream: the app must get websocket.disconnect.

    H2Connection.connection_lost calls on_disconnect on every stream, but H2WSStream._lose only hands the
    loss to the WebSocket when the client had also ended its side (remote_closed), which an open WebSocket
    has not: the app waits (until a keepalive ping times out, if pings are on) and the session stays in
    ctx.connections.
    """
    disconnected = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                disconnected.set()
                return
            await send({"type": "websocket.send", "text": "echo:" + msg["text"]})

    with serve(app, ws_ping_interval=0, timeout_graceful_shutdown=1) as srv:
        with client(srv) as c:
            c.wait(lambda: c.conn.remote_settings.get(8) == 1)
            sid = c.request("/ws", "CONNECT", headers=[("sec-websocket-version", "13")], end=False,
                            extra_pseudo=[(":protocol", "websocket")])
            c.wait(lambda: c.replies[sid].status != 0)
            c.conn.send_data(sid, _ws_frame("hi"))
            c.flush()
            c.wait(lambda: len(c.replies[sid].body) >= 9)
        # the socket is closed: no END_STREAM, no RST_STREAM, just a lost connection
        assert disconnected.wait(3), "the WebSocket app never saw websocket.disconnect"


def test_websocket_traffic_is_not_a_request_body(serve: Serve) -> None:
    """limit_request_body bounds a request body, not the lifetime traffic of a WebSocket over HTTP/2.

    _on_data applies the limit to st.received for every stream, H2WSStream included, so a WebSocket is
    reset (CANCEL) once its client has sent limit_request_body bytes in total (100 MiB by default), in
    messages each far below ws_max_size. Over HTTP/1.1 the same session lives on.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "ok"})

    with serve(app, limit_request_body=1000) as srv, client(srv) as c:
        c.wait(lambda: c.conn.remote_settings.get(8) == 1)
        sid = c.request("/ws", "CONNECT", headers=[("sec-websocket-version", "13")], end=False,
                        extra_pseudo=[(":protocol", "websocket")])
        c.wait(lambda: c.replies[sid].status != 0)
        for i in range(20):  # 20 messages of ~106 bytes: 2 KB in all, each one small
            c.conn.send_data(sid, _ws_frame("x" * 100))
            c.flush()
            c.wait(lambda i=i: len(c.replies[sid].body) >= 4 * (i + 1) or c.replies[sid].reset is not None)
            assert c.replies[sid].reset is None, f"WebSocket reset after {i + 1} small messages"


def _frames(sock: socket.socket, until: Callable[[list[tuple[int, int, int]]], bool], timeout: float) -> list[
        tuple[int, int, int]]:
    """Read raw frames (type, flags, stream id) until ``until`` holds or the time is up."""
    buf = b""
    frames: list[tuple[int, int, int]] = []
    deadline = time.monotonic() + timeout
    while not until(frames) and time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        buf += data
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            length = int.from_bytes(buf[:3], "big")
            frames.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF))
            buf = buf[9 + length:]
    return frames


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 10, 16, 18, 22])
def test_prior_knowledge_preface_split_anywhere(serve: Serve, cut: int) -> None:
    """The client preface may arrive in pieces; _h2_prior_knowledge rebuilds it from the chunk that made
    llhttp stop, dropping "SM\\r\\n" (and whatever else) that came in an earlier chunk, so the
    connection hangs until timeout_request_head instead of answering the client's SETTINGS."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    with serve(app) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=5)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(preface[:cut])
            time.sleep(0.2)  # two reads on the server
            sock.sendall(preface[cut:] + settings)
            frames = _frames(sock, lambda fs: any(t == 4 and f & 1 for t, f, _ in fs), 2)
        finally:
            sock.close()
    assert any(t == 4 and f & 1 for t, f, _ in frames), f"no SETTINGS ack, frames: {frames}"


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + sid.to_bytes(4, "big") + payload


def test_last_response_after_goaway_survives_client_traffic(serve: Serve) -> None:
    """After GOAWAY, _note_idle closes the socket the moment the last stream ends (plain close, no linger).

    A client still sending (here WINDOW_UPDATEs, as any client acking DATA does) has bytes in flight, so the
    kernel answers them with RST and the tail of the last response is lost - the very thing the lingering
    close of _connection_error exists to prevent.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 200_000})

    with serve(app) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                        (":authority", "x")])
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, struct.pack(">HL", 4, 1 << 30))
                     + _frame(8, 0, 0, struct.pack(">L", 1 << 30)) + _frame(1, 5, 1, block)
                     + _frame(7, 0, 0, bytes(8)))  # the client's GOAWAY: stream 1 is still to be answered
        sock.setblocking(False)
        buf = b""
        deadline = time.monotonic() + 1.5
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                sock.sendall(_frame(8, 0, 0, struct.pack(">L", 1)))  # acking what it reads
                with contextlib.suppress(BlockingIOError):
                    data = sock.recv(1 << 20)
                    if not data:
                        break
                    buf += data
                time.sleep(0.003)
        sock.close()
    got, ended, pos = 0, False, 0
    while pos + 9 <= len(buf):
        length, ftype, flags, sid = int.from_bytes(buf[pos:pos + 3], "big"), buf[pos + 3], buf[pos + 4], \
            int.from_bytes(buf[pos + 5:pos + 9], "big")
        if ftype == 0 and sid == 1:
            got += length
            ended = ended or bool(flags & 1)
        pos += 9 + length
    assert (got, ended) == (200_000, True)


def test_streaming_head_response_app_sees_disconnect(serve: Serve) -> None:
    """HEAD (or 204/304) with a streamed body: the HEADERS carry END_STREAM at once, so _end_local drops the
    stream from conn.streams while the app is still "sending". When the connection is then lost,
    connection_lost no longer finds it: no on_disconnect (the app waits for http.disconnect forever) and
    no ctx.release (its --limit-concurrency slot is never given back).
    """
    disconnected = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "HEAD":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    with serve(app, limit_concurrency=1, timeout_graceful_shutdown=1) as srv:
        with client(srv) as c:
            sid = c.request("/events", "HEAD")
            c.wait(lambda: c.replies[sid].status != 0)
            assert c.replies[sid].status == 200
        seen = disconnected.wait(3)
        with client(srv) as c:
            status = c.response(c.request("/")).status
    assert seen, "the app never saw http.disconnect after the connection closed"
    assert status == 200, f"the lost HEAD stream still holds the only --limit-concurrency slot ({status})"


def test_drain_of_a_finished_stream_returns_after_the_connection_resumes(serve: Serve) -> None:
    """pause_writing marks every stream write_paused; a stream that then finishes (END_STREAM, forgotten by
    _end_local) is no longer in conn.streams when resume_writing (or connection_lost) wakes the streams, so
    the app's ``await ex.drain()`` after its last body never returns: the app task hangs for good.
    """
    sent = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/big":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"z" * (16 << 20)})
            return
        await asyncio.sleep(0.5)  # answers while the connection is paused by /big's unread bytes
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"small"})
        sent.set()

    with serve(app, timeout_graceful_shutdown=1) as srv, client(srv, window=2**31 - 1) as c:
        c.conn.increment_flow_control_window(2**30)
        c.flush()
        small = c.request("/small")
        big = c.request("/big")
        time.sleep(1.0)  # the client does not read: our transport pauses writing
        c.response(big, timeout=20)
        c.response(small, timeout=5)
        assert sent.wait(3), "the app's last send() never returned (drain never woken)"


def test_wsgi_streams_reset_by_the_client_keep_their_slot(serve: Serve) -> None:
    """Rapid reset against a WSGI app: the WSGI gateway never sets ex.app_task, so _on_rst_stream does not
    keep a reset stream in _orphans; every HEADERS+RST_STREAM pair queues one more app run on the (unbounded)
    thread-pool queue, and SETTINGS_MAX_CONCURRENT_STREAMS never refuses a stream. With an ASGI app the
    third stream is refused (test_client_resets_keep_their_slot_while_their_app_runs)."""
    calls = 0
    lock = threading.Lock()

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(1.0)
        start_response("200 OK", [])
        return [b"ok"]

    with serve(wsgi, h2_max_concurrent_streams=2, timeout_graceful_shutdown=1) as srv, client(srv) as c:
        resets = []
        for _ in range(6):
            sid = c.request("/", "POST", headers=[("content-length", "1")], end=False)
            c.pump(0.1)  # dispatched (or refused) by now
            if c.replies[sid].reset is not None:
                resets.append(c.replies[sid].reset)
                continue
            c.conn.reset_stream(sid)
            c.flush()
        c.pump(0.1)
    assert resets, f"no stream refused: {calls} WSGI runs started or queued on a 2-stream connection"


def test_no_content_length_on_204(serve: Serve) -> None:
    """RFC 9110 8.6: "A server MUST NOT send a Content-Length header field in any response with a status code
    of 1xx or 204". HTTP/1.1 (http1_exchange.send_head) drops it; H2Stream.send_head passes the app's on."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})

    with serve(app) as srv, client(srv) as c:
        reply = c.response(c.request("/"))
    assert reply.status == 204 and reply.header(b"content-length") is None


def test_goaway_last_stream_id_never_grows(serve: Serve) -> None:
    """RFC 9113 6.8: "Endpoints MUST NOT increase the value they send in the last stream identifier".

    _header_block sets last_stream_id = sid before it sees goaway_sent, so a stream that crossed our GOAWAY
    (ignored, never processed) raises the id the next GOAWAY reports: here a connection error's GOAWAY says
    stream 3 may have been processed, and the client will not retry it.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    encoder = hpack.Encoder()
    fields = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")]
    with serve(app) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=5)
        try:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0)
                         + _frame(1, 4, 1, encoder.encode(fields)))  # stream 1, still open (no END_STREAM)
            _frames(sock, lambda fs: any(t == 1 and sid == 1 for t, _, sid in fs), 2)
            sock.sendall(_frame(7, 0, 0, bytes(8)))  # the client's GOAWAY: we answer GOAWAY(last=1)
            sock.sendall(_frame(1, 5, 3, encoder.encode(fields)))  # crossed our GOAWAY: ignored
            sock.sendall(_frame(6, 0, 1, b"12345678"))  # PING on a stream: connection error
            buf = b""
            sock.settimeout(2)
            with contextlib.suppress(OSError):
                while data := sock.recv(65536):
                    buf += data
        finally:
            sock.close()
    last_ids = []
    pos = 0
    while pos + 9 <= len(buf):
        length = int.from_bytes(buf[pos:pos + 3], "big")
        if buf[pos + 3] == 7:
            last_ids.append(int.from_bytes(buf[pos + 9:pos + 13], "big") & 0x7FFFFFFF)
        pos += 9 + length
    assert len(last_ids) == 2 and last_ids[1] <= last_ids[0], f"GOAWAY last stream ids: {last_ids}"


# -- behaviour checked and found right (pinned) -----------------------------------------------------------

def test_client_resets_keep_their_slot_while_their_app_runs(serve: Serve) -> None:
    """The counterpart of the MadeYouReset test: RST_STREAM from the client keeps the slot (_orphans)."""
    started = threading.Semaphore(0)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            started.release()
            await asyncio.sleep(1.5)

    with serve(app, h2_max_concurrent_streams=2) as srv, client(srv) as c:
        resets = []
        for _ in range(4):
            sid = c.request("/", "POST", headers=[("content-length", "1")], end=False)
            if started.acquire(timeout=1):
                c.conn.reset_stream(sid)
                c.flush()
            else:
                c.wait(lambda sid=sid: c.replies[sid].reset is not None, 2)
                resets.append(c.replies[sid].reset)
    assert resets and all(code == 7 for code in resets)  # REFUSED_STREAM once two apps run


def test_window_raised_by_settings_releases_pending_data_then_trailers(serve: Serve) -> None:
    """DATA queued on a window of 1000 goes out when SETTINGS_INITIAL_WINDOW_SIZE grows (delta applied to the
    open stream), in order, before the trailers, with END_STREAM once (on the trailers)."""
    body = bytes(range(256)) * 400

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": body})
        await send({"type": "http.response.trailers", "headers": [(b"x-end", b"1")]})

    with serve(app) as srv, client(srv, window=1000) as c:
        c.conn.increment_flow_control_window(1 << 20)
        c.flush()
        c.auto_ack = False  # the stream window stays shut until the SETTINGS below
        sid = c.request("/")
        c.wait(lambda: len(c.replies[sid].body) >= 1000)
        c.pump(0.2)
        assert len(c.replies[sid].body) == 1000 and not c.replies[sid].ended
        c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        c.flush()
        reply = c.response(sid)
    assert reply.body == body and reply.trailers == [(b"x-end", b"1")] and reply.ended


def test_padded_upload_larger_than_the_windows(serve: Serve) -> None:
    """Padding counts against both windows and is given back at once (never buffered, never read)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        data = b""
        while True:
            msg = await receive()
            data += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(data)})

    with serve(app, h2_initial_window_size=16384) as srv, client(srv) as c:
        sid = c.request("/", "POST", end=False)
        sent = 0
        while sent < 400_000:
            room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size) - 256
            if room <= 0:
                c.pump(0.05)
                continue
            c.conn.send_data(sid, b"p" * room, pad_length=255)
            c.flush()
            sent += room
        c.conn.end_stream(sid)
        c.flush()
        reply = c.response(sid, timeout=10)
    assert reply.body == b"%d" % sent


@pytest.mark.parametrize("upgrade", [b"foo", b"h2c\r\nhttp2-settings: AAMAAABkAAQAoAAAAAIAAAAA"])
def test_not_taken_upgrade_reads_its_body_and_nothing_after(serve: Serve, upgrade: bytes) -> None:
    """An upgrade not taken (unknown protocol, or h2c with a body) is served as HTTP/1.1: its Content-Length
    body is read raw across reads (llhttp stops at the upgrade), the pipelined request after it is not
    served, and the connection closes."""
    calls: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        calls.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"got:" + body})

    with serve(app) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=5)
        sock.sendall(b"POST /x HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: " + upgrade
                     + b"\r\ncontent-length: 10\r\n\r\n0123")
        time.sleep(0.1)
        sock.sendall(b"456789GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        out = b""
        with contextlib.suppress(OSError):
            while data := sock.recv(4096):
                out += data
        sock.close()
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\ngot:0123456789")
    assert out.count(b"HTTP/1.1") == 1 and calls == [b"0123456789"]


def test_websocket_ping_flood_over_http2_closes_that_stream_1008(serve: Serve) -> None:
    """The WebSocket control-frame budget holds over an extended CONNECT stream too (h2_websocket reuses
    WSConnection): the flooding stream gets close 1008, and the HTTP/2 connection serves on."""
    from bascule.protocols.websocket.connection import CONTROL_PER_TICK

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    ping = bytes((0x89, 0x80 | 5)) + b"\0\0\0\0" + b"flood"
    with serve(app, ws_ping_interval=0) as srv, client(srv) as c:
        c.wait(lambda: c.conn.remote_settings.get(8) == 1)
        sid = c.request("/ws", "CONNECT", headers=[("sec-websocket-version", "13")], end=False,
                        extra_pseudo=[(":protocol", "websocket")])
        c.wait(lambda: c.replies[sid].status != 0)
        c.send_body(sid, ping * (CONTROL_PER_TICK + 1), end=False)
        c.wait(lambda: c.replies[sid].ended or c.replies[sid].reset is not None)
        body = c.replies[sid].body
        assert c.replies[sid].ended, "closed with a frame the client can read, then the stream ended"
        assert body.count(b"\x8a\x05flood") <= CONTROL_PER_TICK
        close = body[body.rindex(b"\x88"):]
        assert close[1] == len(close) - 2 and struct.unpack("!H", close[2:4])[0] == 1008, body[-40:]
        assert c.response(c.request("/")).status == 200  # the connection itself is fine
