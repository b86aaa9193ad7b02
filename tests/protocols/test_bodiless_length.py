"""Content-Length of responses sent without content (HEAD, 204, 304): one rule on HTTP/1.1 and HTTP/2.

The rule lives once, in ``protocols.exchange.bodiless_length`` (issue 12: HTTP/1.1 inferred a length for
every status but 304 while HTTP/2 did only for 200). Each case asks the same in-process server over a raw
HTTP/1.1 socket and over HTTP/2 (the ``h2`` library, prior knowledge) and expects the same answer on both.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, MutableMapping
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import Running, http_exchange

from bascule.protocols.exchange import bodiless_length

Serve = Callable[..., contextlib.AbstractContextManager[Running]]

ROUTES: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {
    "/ok": (200, [], b"hello"),
    "/missing": (404, [], b"not found"),
    "/not-modified": (304, [], b"stale body"),
    "/not-modified-declared": (304, [(b"content-length", b"13")], b""),
    "/no-content": (204, [(b"content-length", b"7")], b""),
}

# (method, path) -> the content-length expected on both wires (None: no such field)
CASES = {
    ("HEAD", "/ok"): b"5",
    ("HEAD", "/missing"): b"9",  # GET's 404 would say 9: HEAD says the same
    ("GET", "/not-modified"): None,  # never inferred on a 304
    ("HEAD", "/not-modified"): None,
    ("HEAD", "/not-modified-declared"): b"13",  # the app's own stands
    ("GET", "/no-content"): None,  # never on a 204 (RFC 9110 8.6)
}


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    status, headers, body = ROUTES[scope["path"]]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def h1_response(port: int, method: str, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        raw = http_exchange(sock, f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(),
                            until_close=True)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), fields, body


def h2_response(port: int, method: str, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn.initiate_connection()
        conn.send_headers(1, [(":method", method), (":scheme", "http"), (":path", path),
                              (":authority", "127.0.0.1")], end_stream=True)
        sock.sendall(conn.data_to_send())
        status, fields, body, ended = 0, {}, b"", False
        while not ended:
            data = sock.recv(65536)
            assert data, "connection closed before the stream ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    headers = dict(event.headers)
                    status = int(headers.pop(b":status"))
                    fields = headers
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
    return status, fields, body


@pytest.mark.parametrize(("method", "path"), sorted(CASES))
def test_bodiless_content_length_is_the_same_on_both_wires(serve: Serve, method: str, path: str) -> None:
    expected = CASES[(method, path)]
    with serve(app) as srv:
        answers = {"HTTP/1.1": h1_response(srv.port, method, path), "HTTP/2": h2_response(srv.port, method, path)}
    for wire, (status, fields, body) in answers.items():
        assert status == ROUTES[path][0], wire
        assert body == b"", f"{wire}: content sent on a {method} {status}"
        assert fields.get(b"content-length") == expected, f"{wire}: {fields}"


def test_bodiless_length_rule() -> None:
    assert bodiless_length(200, None, True, b"abc") == 3
    assert bodiless_length(404, None, True, b"abc") == 3
    assert bodiless_length(304, None, True, b"abc") is None
    assert bodiless_length(304, 13, True, b"") == 13
    assert bodiless_length(200, None, False, b"abc") is None  # streamed: the whole length is unknown
    assert bodiless_length(200, 7, True, b"abc") == 7
