"""protocols.semantics: the response rules of every wire, checked to give the same answers on HTTP/1.1 and HTTP/2.

Each case asks the same in-process server the same thing over a raw HTTP/1.1 socket and over HTTP/2 (the
``h2`` library as client, prior knowledge) and expects the same status, the same content-length and the same
body framing (complete, or cut) on both:

- Content-Length of responses sent without content (HEAD, 204, 304): ``bodiless_length`` (issue 12: HTTP/1.1
  inferred a length for every status but 304 while HTTP/2 did only for 200).
- The declared length: inferred for a whole body, kept when declared, and a body that breaks it is cut
  (HTTP/1.1 closes the connection, HTTP/2 resets the stream) after the bytes that kept to it; bytes past it
  are never sent, nor a head that came with them (issue 13: HTTP/2 sent that head, HTTP/1.1 did not).
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

from bascule.protocols.semantics import (
    bodiless,
    bodiless_length,
    body_over_limit,
    expected_length,
    length_excess,
    one_write,
)

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
    assert bodiless_length(204, 7, True, b"") is None  # never on a 204, whatever the app declared
    assert bodiless_length(103, None, True, b"abc") is None


def test_bodiless_statuses_and_methods() -> None:
    assert bodiless("HEAD", 200) and bodiless("GET", 204) and bodiless("GET", 304) and bodiless("HEAD", 404)
    assert not bodiless("GET", 200) and not bodiless("POST", 404) and not bodiless("GET", 205)


def test_declared_length_rules() -> None:
    assert expected_length(7, False, False, b"") == 7  # the app's own, whatever follows
    assert expected_length(None, True, False, b"abc") == 3  # whole in one message: its length
    assert expected_length(None, True, True, b"abc") is None  # trailers announced: streamed
    assert expected_length(None, False, False, b"abc") is None  # more to come: streamed
    assert one_write(True, False, 3, b"abc", False)
    assert not one_write(True, False, 3, b"abc", True)  # no content: the head alone
    assert not one_write(True, False, 4, b"abc", False)  # short: the wire cuts it
    assert not one_write(True, True, 3, b"abc", False)
    assert not one_write(False, False, 3, b"abc", False)
    assert length_excess(3, None, True) == 0
    assert length_excess(5, 10, False) == 0  # more may come
    assert length_excess(5, 10, True) == -5  # it ended short
    assert length_excess(12, 10, False) == 2  # too long as soon as it is sent
    assert length_excess(10, 10, True) == 0
    assert body_over_limit(1000) == "request body is over --limit-request-body (1000 bytes)"
    assert body_over_limit(1000, 2000) == "request body of 2000 bytes is over --limit-request-body (1000 bytes)"


# -- the declared length, across wires ---------------------------------------------------------------
LENGTH_ROUTES: dict[str, tuple[list[tuple[bytes, bytes]], list[bytes]]] = {
    "/inferred": ([], [b"hello"]),  # whole in one message: its length is declared for it
    "/declared": ([(b"content-length", b"10")], [b"01234", b"56789"]),
    "/streamed": ([], [b"ab", b"cde"]),  # no length: chunked / DATA frames until END_STREAM
    "/short": ([(b"content-length", b"10")], [b"12345"]),
    "/long-at-once": ([(b"content-length", b"3")], [b"hello"]),
    "/long-later": ([(b"content-length", b"10")], [b"xxxxxx", b"yyyyyyyyyyyyyy"]),
}

# path -> (status or None for no response head, content-length, body received, complete)
LENGTH_CASES: dict[str, tuple[int | None, bytes | None, bytes, bool]] = {
    "/inferred": (200, b"5", b"hello", True),
    "/declared": (200, b"10", b"0123456789", True),
    "/streamed": (200, None, b"abcde", True),
    "/short": (200, b"10", b"12345", False),  # what was sent arrives, then the cut
    "/long-at-once": (None, None, b"", False),  # nothing but the cut: no head, no wrong bytes
    "/long-later": (200, b"10", b"xxxxxx", False),  # the bytes that kept to it, then the cut
}


async def length_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers, chunks = LENGTH_ROUTES[scope["path"]]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i, chunk in enumerate(chunks):
        await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})


def h1_outcome(port: int, path: str) -> tuple[int | None, bytes | None, bytes, bool]:
    """(status, content-length, body, complete) of one GET over a raw HTTP/1.1 socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        raw = http_exchange(sock, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(),
                            until_close=True)
    if not raw:
        return None, None, b"", False
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
    status = int(lines[0].split()[1])
    length = fields.get(b"content-length")
    if fields.get(b"transfer-encoding") == b"chunked":
        body, complete = b"", False
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                complete = rest == b"\r\n"
                break
            body, rest = body + rest[:size], rest[size + 2:]
        return status, length, body, complete
    assert length is not None, head
    return status, length, rest, len(rest) == int(length)


def h2_outcome(port: int, path: str) -> tuple[int | None, bytes | None, bytes, bool]:
    """The same over HTTP/2: complete means END_STREAM, not a reset."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    status: int | None = None
    fields: dict[bytes, bytes] = {}
    body, complete, done = b"", False, False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":path", path),
                              (":authority", "127.0.0.1")], end_stream=True)
        sock.sendall(conn.data_to_send())
        while not done:
            data = sock.recv(65536)
            assert data, "connection closed before the stream ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    fields = dict(event.headers)
                    status = int(fields.pop(b":status"))
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded):
                    complete = done = True
                elif isinstance(event, h2.events.StreamReset):
                    done = True
            sock.sendall(conn.data_to_send())
    return status, fields.get(b"content-length"), body, complete


@pytest.mark.parametrize("path", sorted(LENGTH_CASES))
def test_declared_length_is_kept_or_cut_the_same_on_both_wires(serve: Serve, path: str) -> None:
    with serve(length_app) as srv:
        answers = {"HTTP/1.1": h1_outcome(srv.port, path), "HTTP/2": h2_outcome(srv.port, path)}
    for wire, outcome in answers.items():
        assert outcome == LENGTH_CASES[path], wire
