"""--request-id on WebSocket handshakes: over HTTP/1.1 the 101, a denial the app sends, and a handshake the
server refuses echo the id as every other response does; over HTTP/2 (extended CONNECT) the 200 and a denial
did already. On both, an app that sets the field itself keeps its value, once (as on HTTP).
"""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import MutableMapping
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import serve_in_thread

KEY = base64.b64encode(b"0123456789abcdef").decode()
HEX32 = re.compile(rb"[0-9a-f]{32}")


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()
    path = scope["path"]
    seen = scope["extensions"]["bascule.request_id"]["id"].encode()
    if path == "/deny":
        await send({"type": "websocket.http.response.start", "status": 403,
                    "headers": [(b"x-seen", seen), (b"content-length", b"2")]})
        await send({"type": "websocket.http.response.body", "body": b"no"})
        return
    if path == "/close":
        await send({"type": "websocket.close"})  # before accepting: 403 from the server
        return
    headers = [(b"x-seen", seen)]
    if path == "/own":
        headers.append((b"X-Request-ID", b"the-apps-own"))
    await send({"type": "websocket.accept", "headers": headers})
    await send({"type": "websocket.close"})


Fields = dict[bytes, list[bytes]]


def head_of(port: int, path: str, rid: str | None = None, *, version: str = "13") -> tuple[bytes, Fields]:
    """The status line and fields of the response to a WebSocket handshake written by hand."""
    lines = [f"GET {path} HTTP/1.1", "Host: test", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {KEY}", f"Sec-WebSocket-Version: {version}"]
    if rid is not None:
        lines.append(f"X-Request-ID: {rid}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status, *fields = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    found: Fields = {}
    for field in fields:
        name, _, value = field.partition(b":")
        found.setdefault(name.strip().lower(), []).append(value.strip())
    return status, found


@pytest.mark.parametrize("path, status", [("/ws", b"101"), ("/deny", b"403"), ("/close", b"403")])
def test_the_handshakes_answer_echoes_the_request_id(path: str, status: bytes) -> None:
    with serve_in_thread(app, request_id="on") as srv:
        line, fields = head_of(srv.port, path, "ws-7")  # loopback is trusted: the id is kept
        assert line.split()[1] == status
        assert fields[b"x-request-id"] == [b"ws-7"]
        line, fields = head_of(srv.port, path)  # none sent: one is made, the one the app saw
        assert line.split()[1] == status
        (made,) = fields[b"x-request-id"]
        assert HEX32.fullmatch(made)
        if path != "/close":
            assert fields[b"x-seen"] == [made]


def test_the_apps_own_field_replaces_the_echo() -> None:
    with serve_in_thread(app, request_id="on") as srv:
        line, fields = head_of(srv.port, "/own", "ws-8")
        assert line.split()[1] == b"101"
        assert fields[b"x-request-id"] == [b"the-apps-own"]


def test_a_handshake_refused_by_the_server_echoes_it_too() -> None:
    with serve_in_thread(app, request_id="on") as srv:
        line, fields = head_of(srv.port, "/ws", "ws-9", version="8")
        assert line.split()[1] == b"426"
        assert fields[b"x-request-id"] == [b"ws-9"]


def test_no_field_when_ids_are_off() -> None:
    with serve_in_thread(app) as srv:
        for path in ("/ws", "/deny"):
            _, fields = head_of(srv.port, path, "ws-10")
            assert b"x-request-id" not in fields


def h2_head_of(port: int, path: str, rid: str) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The status and fields of the answer to an extended CONNECT (RFC 8441) sent with the ``h2`` library."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        sent = False
        for _ in range(50):  # bounded: a few reads at most
            if not sent and conn.remote_settings.get(8) == 1:  # SETTINGS_ENABLE_CONNECT_PROTOCOL
                conn.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                                      (":path", path), (":authority", "test"), ("sec-websocket-version", "13"),
                                      ("x-request-id", rid)], end_stream=False)
                sent = True
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            data = sock.recv(65536)
            assert data, "the server closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                    fields = list(event.headers)
                    status = int(dict(fields)[b":status"])
                    return status, [(n, v) for n, v in fields if not n.startswith(b":")]
    raise AssertionError("no response")


@pytest.mark.parametrize("path, status, echoed", [("/ws", 200, b"ws-11"), ("/deny", 403, b"ws-11"),
                                                  ("/own", 200, b"the-apps-own")])
def test_over_http2_the_id_is_echoed_once(path: str, status: int, echoed: bytes) -> None:
    with serve_in_thread(app, request_id="on") as srv:
        got, fields = h2_head_of(srv.port, path, "ws-11")
        assert got == status
        assert [v for n, v in fields if n == b"x-request-id"] == [echoed]
