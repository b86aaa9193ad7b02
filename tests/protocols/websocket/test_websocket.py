"""Tests for bascule.protocols.websocket.connection: the handshake and frames as raw bytes over a real socket.

Requests are written by hand and frames built with masks by hand; the server's frames are parsed off the
wire by :func:`read_frame`, so a stray byte or an unmasked/masked mix-up fails the test.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest
from conftest import Running

from bascule.protocols.websocket.connection import CONTROL_PER_TICK

Serve = Callable[..., contextlib.AbstractContextManager[Running]]
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = base64.b64encode(b"0123456789abcdef")


async def echo_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
    elif scope["type"] == "http":
        body = b"plain http " + scope["path"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def serve(serve: Serve) -> Serve:
    """The conftest server, closing the test's sockets before it stops (a graceful stop would wait for them)."""

    @contextlib.contextmanager
    def start(app: Any, **options: Any) -> Iterator[Running]:
        with serve(app, **options) as srv:
            try:
                yield srv
            finally:
                for sock in srv.extra.get("socks", []):
                    sock.close()

    return start


def handshake(headers: dict[str, str] | None = None, *, drop: tuple[str, ...] = (), path: str = "/ws") -> bytes:
    fields = {"Host": "test", "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": KEY.decode(),
              "Sec-WebSocket-Version": "13"}
    fields.update(headers or {})
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in fields.items() if k not in drop]
    return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n"


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    maskbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([maskbit | n])
    elif n < 65536:
        head += bytes([maskbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([maskbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Conn:
    """A raw socket with a read buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return False
        self.buf += chunk
        return bool(chunk)

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            assert self._more(), f"closed before a response head: {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    def rest(self) -> bytes:
        while self._more():
            pass
        out, self.buf = self.buf, b""
        return out

    def read_frame(self) -> tuple[int, bool, bytes]:
        """(opcode, fin, payload) of the next server frame, which must be unmasked."""
        while len(self.buf) < 2:
            assert self._more(), "closed before a frame"
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames must not be masked"
        n, pos = b1 & 0x7F, 2
        if n == 126:
            while len(self.buf) < 4:
                assert self._more()
            n, pos = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            while len(self.buf) < 10:
                assert self._more()
            n, pos = struct.unpack("!Q", self.buf[2:10])[0], 10
        while len(self.buf) < pos + n:
            assert self._more(), "closed inside a frame"
        payload, self.buf = self.buf[pos:pos + n], self.buf[pos + n:]
        return b0 & 0x0F, bool(b0 & 0x80), payload

    def closed(self) -> bool:
        """True once the server has closed the TCP connection (after whatever is still buffered)."""
        return not self._more() and not self.buf


def connect(srv: Running, raw: bytes) -> tuple[Conn, bytes]:
    sock = srv.connect()
    srv.extra.setdefault("socks", []).append(sock)
    sock.settimeout(5)
    sock.sendall(raw)
    conn = Conn(sock)
    return conn, conn.head()


def header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def test_handshake_answers_101_with_the_accept_key(serve: Serve) -> None:
    with serve(echo_app) as srv:
        conn, head = connect(srv, handshake())
        assert head.startswith(b"HTTP/1.1 101 ")
        assert header(head, b"sec-websocket-accept") == base64.b64encode(hashlib.sha1(KEY + GUID).digest())
        assert header(head, b"upgrade") == b"websocket"
        assert header(head, b"connection") == b"Upgrade"
        assert header(head, b"server") == b"bascule"
        assert header(head, b"sec-websocket-extensions") is None  # not asked for
        conn.sock.sendall(frame(0x1, b"hello"))
        assert conn.read_frame() == (0x1, True, b"hello")


@pytest.mark.parametrize(("change", "drop", "status"), [
    ({"Sec-WebSocket-Version": "8"}, (), 426),
    ({}, ("Sec-WebSocket-Version",), 400),
    ({}, ("Sec-WebSocket-Key",), 400),
    ({"Sec-WebSocket-Key": "short"}, (), 400),
    ({"Sec-WebSocket-Key": "not base64 at all!!!!!!"}, (), 400),
    ({"Sec-WebSocket-Protocol": "chat, ,,\x01bad"}, (), 400),
    ({"Sec-WebSocket-Protocol": "caf\u00e9"}, (), 400),
    ({"Sec-WebSocket-Extensions": "permessage-deflate; =="}, (), 400),
    ({"Sec-WebSocket-Extensions": "d\u00e9flate"}, (), 400),
])
def test_bad_handshakes_are_refused_without_calling_the_app(serve: Serve, change: dict[str, str],
                                                             drop: tuple[str, ...], status: int) -> None:
    called: list[str] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        called.append(scope["type"])
        await echo_app(scope, receive, send)

    with serve(app) as srv:
        conn, head = connect(srv, handshake(change, drop=drop))
        assert head.split(b"\r\n")[0].startswith(b"HTTP/1.1 %d " % status)
        if status == 426:
            assert header(head, b"sec-websocket-version") == b"13"
        assert header(head, b"connection") == b"close"
        conn.rest()
        # the worker is fine: the next handshake works
        _, head2 = connect(srv, handshake())
        assert head2.startswith(b"HTTP/1.1 101 ")
    assert [kind for kind in called if kind != "lifespan"] == ["websocket"]  # only the valid handshake


def test_frames_sent_with_the_handshake_are_not_lost(serve: Serve) -> None:
    with serve(echo_app) as srv:
        conn, head = connect(srv, handshake() + frame(0x1, b"early") + frame(0x2, b"\x00\x01"))
        assert head.startswith(b"HTTP/1.1 101 ")
        assert conn.read_frame() == (0x1, True, b"early")
        assert conn.read_frame() == (0x2, True, b"\x00\x01")


def test_fragmented_text_and_ping_between_fragments(serve: Serve) -> None:
    with serve(echo_app) as srv:
        conn, _ = connect(srv, handshake())
        conn.sock.sendall(frame(0x1, "h\u00e9".encode()[:2], fin=False) + frame(0x9, b"p1")
                          + frame(0x0, "h\u00e9".encode()[2:], fin=False) + frame(0x0, b"llo"))
        assert conn.read_frame() == (0xA, True, b"p1")
        assert conn.read_frame() == (0x1, True, "h\u00e9llo".encode())


def test_close_is_echoed_and_the_server_closes_tcp(serve: Serve) -> None:
    with serve(echo_app) as srv:
        conn, _ = connect(srv, handshake())
        conn.sock.sendall(frame(0x8, struct.pack("!H", 4000) + b"bye"))
        assert conn.read_frame() == (0x8, True, struct.pack("!H", 4000) + b"bye")
        assert conn.closed()


@pytest.mark.parametrize(("data", "code"), [
    (frame(0x1, b"unmasked", mask=False), 1002),
    (frame(0x1, b"\xff\xfe invalid utf-8"), 1007),
    (frame(0x1, b"ok", rsv=0b100), 1002),
    (frame(0x3, b"reserved opcode"), 1002),
    (frame(0x0, b"continuation without a start"), 1002),
    (frame(0x9, b"x" * 126), 1002),  # control frames are at most 125 bytes
])
def test_protocol_errors_close_with_the_right_code(serve: Serve, data: bytes, code: int) -> None:
    with serve(echo_app) as srv:
        conn, _ = connect(srv, handshake())
        conn.sock.sendall(data)
        opcode, _, payload = conn.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == code
        assert conn.closed()


def test_invalid_utf8_fails_at_the_bad_fragment(serve: Serve) -> None:
    with serve(echo_app) as srv:
        conn, _ = connect(srv, handshake())
        conn.sock.sendall(frame(0x1, b"valid", fin=False) + frame(0x0, b"\xf4\x90\x80\x80", fin=False))
        opcode, _, payload = conn.read_frame()  # no final fragment needed to see it is invalid
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1007


def test_message_over_max_size_closes_1009(serve: Serve) -> None:
    with serve(echo_app, ws_max_size=1000) as srv:
        conn, _ = connect(srv, handshake())
        conn.sock.sendall(frame(0x2, b"x" * 1000))
        assert conn.read_frame() == (0x2, True, b"x" * 1000)
        conn.sock.sendall(frame(0x2, b"x" * 600, fin=False) + frame(0x0, b"x" * 600))
        opcode, _, payload = conn.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009


def test_close_in_the_middle_of_a_fragmented_message_is_a_clean_close(serve: Serve) -> None:
    with serve(echo_app) as srv:
        conn, _ = connect(srv, handshake())
        conn.sock.sendall(frame(0x1, b"frag", fin=False) + frame(0x8, struct.pack("!H", 1000)))
        assert conn.read_frame() == (0x8, True, struct.pack("!H", 1000))


def test_no_ws_serves_the_upgrade_request_as_plain_http(serve: Serve) -> None:
    with serve(echo_app, ws=False) as srv:
        conn, head = connect(srv, handshake())
        assert head.startswith(b"HTTP/1.1 200 ")
        assert conn.rest() == b"plain http /ws"


def test_other_upgrades_are_served_as_plain_http(serve: Serve) -> None:
    with serve(echo_app) as srv:
        raw = b"GET /h2 HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n"
        conn, head = connect(srv, raw)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert conn.rest() == b"plain http /h2"


def test_client_that_never_answers_pings_is_closed(serve: Serve) -> None:
    with serve(echo_app, ws_ping_interval=0.2, ws_ping_timeout=0.3) as srv:
        conn, _ = connect(srv, handshake())
        opcode, _, _ = conn.read_frame()
        assert opcode == 0x9  # a ping, which this client ignores
        opcode, _, payload = conn.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1011
        assert conn.closed()


def test_client_that_answers_pings_stays(serve: Serve) -> None:
    with serve(echo_app, ws_ping_interval=0.2, ws_ping_timeout=0.3) as srv:
        conn, _ = connect(srv, handshake())
        for _ in range(3):
            opcode, _, payload = conn.read_frame()
            assert opcode == 0x9
            conn.sock.sendall(frame(0xA, payload))
        conn.sock.sendall(frame(0x1, b"still here"))
        while (got := conn.read_frame())[0] == 0x9:
            conn.sock.sendall(frame(0xA, got[2]))
        assert got == (0x1, True, b"still here")


@pytest.mark.parametrize(("raw", "status"), [
    (handshake().replace(b"GET ", b"POST ", 1), 405),
    (handshake().replace(b"HTTP/1.1", b"HTTP/1.0", 1), 505),
])
def test_handshake_with_the_wrong_method_or_version(serve: Serve, raw: bytes, status: int) -> None:
    with serve(echo_app) as srv:
        _, head = connect(srv, raw)
        assert head.split(b"\r\n")[0].startswith(b"HTTP/1.1 %d " % status)


def close_code(conn: Conn) -> tuple[int, int]:
    """(pongs before it, code) of the first close frame the server sends."""
    pongs = 0
    while True:
        opcode, _, payload = conn.read_frame()
        if opcode == 0x8:
            return pongs, struct.unpack("!H", payload[:2])[0]
        assert opcode == 0xA, (opcode, payload)
        pongs += 1


@pytest.mark.parametrize("flood", [
    frame(0x9, b"flood") * (CONTROL_PER_TICK + 1),
    frame(0xA, b"unsolicited") * (CONTROL_PER_TICK + 1),
    frame(0x1, b"", fin=False) + frame(0x0, b"", fin=False) * CONTROL_PER_TICK,
], ids=["pings", "pongs", "empty-fragments"])
def test_frames_over_the_control_budget_close_1008(serve: Serve, flood: bytes) -> None:
    with serve(echo_app) as srv:
        conn, _ = connect(srv, handshake())
        conn.sock.sendall(flood + frame(0x1, b"never seen"))
        pongs, code = close_code(conn)
        assert code == 1008
        assert pongs <= CONTROL_PER_TICK  # the pongs owed for the chunk that broke the budget are not sent
        assert conn.closed()


def test_frames_within_the_control_budget_are_answered(serve: Serve) -> None:
    """A burst just under the budget, control frames between fragments, empty messages: all served."""
    n = CONTROL_PER_TICK // 2 - 10
    with serve(echo_app) as srv:
        conn, _ = connect(srv, handshake())
        conn.sock.sendall(frame(0x1, b"he", fin=False) + frame(0x9, b"p") * n + frame(0x0, b"", fin=False)
                          + frame(0xA, b"q") * n + frame(0x0, b"llo") + frame(0x1, b"") * (2 * CONTROL_PER_TICK))
        for _ in range(n):
            assert conn.read_frame() == (0xA, True, b"p")
        assert conn.read_frame() == (0x1, True, b"hello")
        for _ in range(2 * CONTROL_PER_TICK):  # empty final messages are messages: not counted
            assert conn.read_frame() == (0x1, True, b"")
        conn.sock.sendall(frame(0x9, b"still open"))
        assert conn.read_frame() == (0xA, True, b"still open")
