"""protocols.http1x: HTTP/1.x response serialization, raw bytes (issue 13 item 2: one writer for every wire
that writes HTTP/1.x heads: HTTP/1.1 and the WebSocket handshake over it)."""

from __future__ import annotations

import pytest

from bascule.errors import AppProtocolError
from bascule.protocols import http1x
from bascule.protocols.http1x import (
    CONTINUE,
    LAST_CHUNK,
    SWITCH_TO_H2C,
    chunk_size,
    content_length_value,
    header_block,
    simple_response,
    status_line,
    trailer_section,
)


def test_status_lines() -> None:
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    assert status_line(101) == b"HTTP/1.1 101 Switching Protocols\r\n"
    assert status_line(599) == b"HTTP/1.1 599 \r\n"  # no reason phrase known: empty, as RFC 9112 4 allows
    assert http1x.STATUS_LINES[404] == b"HTTP/1.1 404 Not Found\r\n"  # cached for the fast path


def test_fixed_heads() -> None:
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert SWITCH_TO_H2C == b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"


def test_header_block_leaves_framing_to_the_writer() -> None:
    block, length, close = header_block([(b"content-type", b"text/plain"), (b"Content-Length", b"12"),
                                         (b"transfer-encoding", b"chunked"), (b"x-a", b"1"),
                                         (b"Connection", b"Close")])
    assert block == b"content-type: text/plain\r\nx-a: 1\r\n"
    assert length == 12
    assert close is True
    assert header_block([(b"connection", b"keep-alive")]) == (b"", None, False)


def test_header_block_is_cached_per_header_set_and_takes_list_pairs() -> None:
    headers = [(b"x-cached", b"1")]
    first = header_block(headers)
    # equal sets share one entry (its bytes: the compiled build boxes the returned tuple afresh each call)
    assert header_block(list(headers))[0] is first[0]
    assert header_block([[b"x-list", b"2"]]) == (b"x-list: 2\r\n", None, False)  # unhashable: not cached


@pytest.mark.parametrize("headers", [[(b"x-a", b"1\r\n2")], [(b"x a", b"1")], [(b"content-length", b"-1")],
                                     [(b"content-length", b"1, 1")], [(b"content-length", b" 1")]])
def test_header_block_refuses_what_cannot_be_written(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(AppProtocolError):
        header_block(headers)


def test_content_length_value() -> None:
    assert content_length_value(b"0") == 0
    assert content_length_value(b"007") == 7
    with pytest.raises(AppProtocolError, match="invalid content-length"):
        content_length_value(b"+7")


def test_chunked_framing() -> None:
    assert chunk_size(5) == b"5\r\n"
    assert chunk_size(255) == b"ff\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"
    assert trailer_section([(b"x-sum", b"abc")]) == b"0\r\nx-sum: abc\r\n\r\n"
    assert trailer_section([]) == LAST_CHUNK
    with pytest.raises(AppProtocolError, match="trailer"):
        trailer_section([(b"x-sum", b"a\nb")])


def test_simple_response() -> None:
    fixed = b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\nserver: bascule\r\n"
    assert simple_response(400, fixed, b"Bad Request: x\n") == (
        b"HTTP/1.1 400 Bad Request\r\n" + fixed
        + b"content-type: text/plain; charset=utf-8\r\ncontent-length: 15\r\nconnection: close\r\n\r\n"
        + b"Bad Request: x\n")
    assert simple_response(426, b"", b"", b"sec-websocket-version: 13\r\n") == (
        b"HTTP/1.1 426 Upgrade Required\r\nsec-websocket-version: 13\r\n"
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
