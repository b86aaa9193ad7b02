"""h2spec's http2 cases for RFC 7540 sections 3.5 (preface), 4 (frames, sizes, header blocks) and 5 (streams).

One test per h2spec case; the test name and the first docstring line carry h2spec's id (``http2/5.1.1/2`` is
``test_http2_5_1_1_2``) and its description. What is sent and what is accepted follow h2spec (a connection
error is a GOAWAY with the code or a close; a stream error is a RST_STREAM or GOAWAY with the code, or a
close); the code is our own, on :mod:`.h2client`.
"""

from __future__ import annotations

import pytest

from .h2client import (
    CANCEL,
    COMPRESSION_ERROR,
    FRAME_SIZE_ERROR,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_CLOSED,
    GoAwayFrame,
    H2Client,
    HeadersFrame,
    SettingsFrame,
    Verdict,
    describe,
    dummy_headers,
    raw_frame,
)

pytestmark = pytest.mark.timeout(6)

PING_DATA = b"h2spec\0\0"
ZERO8 = b"\0" * 8
UNKNOWN_FRAME = raw_frame(0x16, 0, 0, ZERO8)  # type 0x16 is not defined by RFC 7540


# -- 3.5. HTTP/2 Connection Preface ----------------------------------------------------------------------------


def test_http2_3_5_1(conn: H2Client) -> None:
    """http2/3.5/1: Sends client connection preface; the server's preface (SETTINGS) must follow."""
    conn.send(PREFACE)
    conn.send_settings((INITIAL_WINDOW_SIZE, 65535))
    frame = conn.expect_frame(SettingsFrame)
    if "ACK" in frame.flags:
        raise Verdict(f"expected the server's SETTINGS (no ACK) first; got {describe(frame)}")


def test_http2_3_5_2(conn: H2Client) -> None:
    """http2/3.5/2: Sends invalid connection preface; the server must close the TCP connection."""
    conn.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
    conn.expect_connection_closed()


# -- 4.1. Frame Format -----------------------------------------------------------------------------------------


def test_http2_4_1_1(h2: H2Client) -> None:
    """http2/4.1/1: Sends a frame with unknown type; the server must ignore and discard it."""
    h2.send(UNKNOWN_FRAME)
    h2.send_ping(ZERO8)
    h2.expect_ping_ack(ZERO8)


def test_http2_4_1_2(h2: H2Client) -> None:
    """http2/4.1/2: Sends a frame with undefined flag; the server must ignore the flags (answer the PING)."""
    h2.send(raw_frame(PING, 0x16, 0, ZERO8))
    h2.expect_ping_ack(ZERO8)


def test_http2_4_1_3(h2: H2Client) -> None:
    """http2/4.1/3: Sends a frame with reserved field bit; the server must ignore the bit (answer the PING)."""
    h2.send(raw_frame(PING, 0x16, 0x80000000, ZERO8))
    h2.expect_ping_ack(ZERO8)


# -- 4.2. Frame Size -------------------------------------------------------------------------------------------


def _max_frame_size(h2: H2Client) -> int:
    return h2.server_settings.get(MAX_FRAME_SIZE, 16384)


def test_http2_4_2_1(h2: H2Client) -> None:
    """http2/4.2/1: Sends a DATA frame with 2^14 octets in length; the server must process it."""
    h2.send_headers(1, h2.request_headers("POST"), end_stream=False)
    h2.send_data(1, b"x" * _max_frame_size(h2))
    h2.expect_frame(HeadersFrame)


def test_http2_4_2_2(h2: H2Client) -> None:
    """http2/4.2/2: Sends a large size DATA frame that exceeds the SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR."""
    h2.send_headers(1, h2.request_headers("POST"), end_stream=False)
    h2.send_data(1, b"x" * (_max_frame_size(h2) + 1))
    h2.expect_stream_error(FRAME_SIZE_ERROR)


def test_http2_4_2_3(h2: H2Client) -> None:
    """http2/4.2/3: Sends a large size HEADERS frame that exceeds the SETTINGS_MAX_FRAME_SIZE.

    A frame carrying a header block is a connection error of type FRAME_SIZE_ERROR.
    """
    block = h2.encode(h2.request_headers(extra=dummy_headers(5)))
    assert len(block) > _max_frame_size(h2), "test precondition: the header block must exceed the frame limit"
    h2.send_headers(1, block)
    h2.expect_connection_error(FRAME_SIZE_ERROR)


# -- 4.3. Header Compression and Decompression -----------------------------------------------------------------


def test_http2_4_3_1(h2: H2Client) -> None:
    """http2/4.3/1: Sends invalid header block fragment; connection error COMPRESSION_ERROR.

    The block is a lone 0x40: a literal with incremental indexing that has no name length and no value.
    """
    h2.send(raw_frame(HEADERS, 0x05, 1, b"\x40"))
    h2.expect_connection_error(COMPRESSION_ERROR)


def test_http2_4_3_2(h2: H2Client) -> None:
    """http2/4.3/2: Sends a PRIORITY frame while sending the header blocks; connection error PROTOCOL_ERROR."""
    h2.send_headers(1, end_stream=False, end_headers=False)
    h2.send_priority(1, depends_on=0, weight=255)
    h2.send_continuation(1, dummy_headers(1))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_4_3_3(h2: H2Client) -> None:
    """http2/4.3/3: Sends a HEADERS frame to another stream while sending the header blocks: PROTOCOL_ERROR."""
    h2.send_headers(1, end_stream=False, end_headers=False)
    h2.send_headers(3)
    h2.send_continuation(1, dummy_headers(1))
    h2.expect_connection_error(PROTOCOL_ERROR)


# -- 5.1. Stream States ----------------------------------------------------------------------------------------


def test_http2_5_1_1(h2: H2Client) -> None:
    """http2/5.1/1: idle: Sends a DATA frame; connection error PROTOCOL_ERROR."""
    h2.send_data(1, b"test")
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_5_1_2(h2: H2Client) -> None:
    """http2/5.1/2: idle: Sends a RST_STREAM frame; connection error PROTOCOL_ERROR."""
    h2.send_rst_stream(1, CANCEL)
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_5_1_3(h2: H2Client) -> None:
    """http2/5.1/3: idle: Sends a WINDOW_UPDATE frame; connection error PROTOCOL_ERROR."""
    h2.send_window_update(1, 100)
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_5_1_4(h2: H2Client) -> None:
    """http2/5.1/4: idle: Sends a CONTINUATION frame; connection error PROTOCOL_ERROR."""
    h2.send_continuation(1, h2.request_headers())
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_5_1_5(h2: H2Client) -> None:
    """http2/5.1/5: half closed (remote): Sends a DATA frame; stream error STREAM_CLOSED."""
    h2.send_headers(1)
    h2.send_data(1, b"test")
    h2.expect_stream_error(STREAM_CLOSED)


def test_http2_5_1_6(h2: H2Client) -> None:
    """http2/5.1/6: half closed (remote): Sends a HEADERS frame; stream error STREAM_CLOSED."""
    h2.send_headers(1)
    h2.send_headers(1)
    h2.expect_stream_error(STREAM_CLOSED)


def test_http2_5_1_7(h2: H2Client) -> None:
    """http2/5.1/7: half closed (remote): Sends a CONTINUATION frame; stream error STREAM_CLOSED or PROTOCOL_ERROR."""
    block = h2.encode(h2.request_headers())
    h2.send_headers(1, block)
    h2.send_continuation(1, block)
    h2.expect_stream_error(STREAM_CLOSED, PROTOCOL_ERROR)


def test_http2_5_1_8(h2: H2Client) -> None:
    """http2/5.1/8: closed: Sends a DATA frame after sending RST_STREAM frame; stream error STREAM_CLOSED."""
    h2.send_headers(1, end_stream=False)
    h2.send_rst_stream(1, CANCEL)
    h2.send_data(1, b"test")
    h2.expect_stream_error(STREAM_CLOSED)


def test_http2_5_1_9(h2: H2Client) -> None:
    """http2/5.1/9: closed: Sends a HEADERS frame after sending RST_STREAM frame; stream error STREAM_CLOSED."""
    h2.send_headers(1, end_stream=False)
    h2.send_rst_stream(1, CANCEL)
    h2.send_headers(1)
    h2.expect_stream_error(STREAM_CLOSED)


def test_http2_5_1_10(h2: H2Client) -> None:
    """http2/5.1/10: closed: Sends a CONTINUATION frame after sending RST_STREAM frame.

    Stream error STREAM_CLOSED or PROTOCOL_ERROR.
    """
    h2.send_headers(1, end_stream=False)
    h2.send_rst_stream(1, CANCEL)
    h2.send_continuation(1, dummy_headers(1))
    h2.expect_stream_error(STREAM_CLOSED, PROTOCOL_ERROR)


def test_http2_5_1_11(h2: H2Client) -> None:
    """http2/5.1/11: closed: Sends a DATA frame; connection error STREAM_CLOSED."""
    h2.send_headers(1)
    h2.expect_stream_closed(1)
    h2.send_data(1, b"test")
    h2.expect_connection_error(STREAM_CLOSED)


def test_http2_5_1_12(h2: H2Client) -> None:
    """http2/5.1/12: closed: Sends a HEADERS frame; connection error STREAM_CLOSED."""
    block = h2.encode(h2.request_headers())
    h2.send_headers(1, block)
    h2.expect_stream_closed(1)
    h2.send_headers(1, block)
    h2.expect_connection_error(STREAM_CLOSED)


def test_http2_5_1_13(h2: H2Client) -> None:
    """http2/5.1/13: closed: Sends a CONTINUATION frame; connection error STREAM_CLOSED or PROTOCOL_ERROR."""
    h2.send_headers(1)
    h2.expect_stream_closed(1)
    h2.send_continuation(1, dummy_headers(1))
    h2.expect_connection_error(STREAM_CLOSED, PROTOCOL_ERROR)


# -- 5.1.1. Stream Identifiers ---------------------------------------------------------------------------------


def test_http2_5_1_1_1(h2: H2Client) -> None:
    """http2/5.1.1/1: Sends even-numbered stream identifier; connection error PROTOCOL_ERROR."""
    h2.send_headers(2)
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_5_1_1_2(h2: H2Client) -> None:
    """http2/5.1.1/2: Sends stream identifier that is numerically smaller than previous: PROTOCOL_ERROR."""
    h2.send_headers(5)
    h2.send_headers(3)
    h2.expect_connection_error(PROTOCOL_ERROR)


# -- 5.1.2. Stream Concurrency ---------------------------------------------------------------------------------


def test_http2_5_1_2_1(h2: H2Client) -> None:
    """http2/5.1.2/1: Sends HEADERS frames that causes their advertised concurrent stream limit to be exceeded.

    Stream error PROTOCOL_ERROR or REFUSED_STREAM. With SETTINGS_INITIAL_WINDOW_SIZE 0 no response can finish,
    so every stream stays open. h2spec skips the case when the server advertises no limit.
    """
    limit = h2.server_settings.get(MAX_CONCURRENT_STREAMS)
    if limit is None:
        pytest.skip("the server advertises no SETTINGS_MAX_CONCURRENT_STREAMS (h2spec skips this case)")
    h2.send_settings((INITIAL_WINDOW_SIZE, 0))
    block = h2.encode(h2.request_headers())
    h2.send(b"".join(raw_frame(HEADERS, 0x05, 1 + 2 * i, block) for i in range(limit + 1)))
    h2.expect_stream_error(PROTOCOL_ERROR, REFUSED_STREAM)


# -- 5.3.1. Stream Dependencies --------------------------------------------------------------------------------


def test_http2_5_3_1_1(h2: H2Client) -> None:
    """http2/5.3.1/1: Sends HEADERS frame that depends on itself; stream error PROTOCOL_ERROR."""
    h2.send_headers(1, priority=(1, 255, False))
    h2.expect_stream_error(PROTOCOL_ERROR)


def test_http2_5_3_1_2(h2: H2Client) -> None:
    """http2/5.3.1/2: Sends PRIORITY frame that depend on itself; stream error PROTOCOL_ERROR."""
    h2.send_priority(1, depends_on=1, weight=255)
    h2.expect_stream_error(PROTOCOL_ERROR)


# -- 5.4.1. Connection Error Handling --------------------------------------------------------------------------


def test_http2_5_4_1_1(h2: H2Client) -> None:
    """http2/5.4.1/1: Sends an invalid PING frame for connection close; the server must close the TCP connection."""
    h2.send(raw_frame(PING, 0, 3, ZERO8))
    h2.expect_connection_closed()


def test_http2_5_4_1_2(h2: H2Client) -> None:
    """http2/5.4.1/2: Sends an invalid PING frame to receive GOAWAY frame (a SHOULD; h2spec's strict mode)."""
    h2.send(raw_frame(PING, 0, 3, ZERO8))
    h2.expect_frame(GoAwayFrame)


# -- 5.5. Extending HTTP/2 -------------------------------------------------------------------------------------


def test_http2_5_5_1(h2: H2Client) -> None:
    """http2/5.5/1: Sends an unknown extension frame; the server must ignore it."""
    h2.send(UNKNOWN_FRAME)
    h2.send_ping(ZERO8)
    h2.expect_ping_ack(ZERO8)


def test_http2_5_5_2(h2: H2Client) -> None:
    """http2/5.5/2: Sends an unknown extension frame in the middle of a header block; PROTOCOL_ERROR."""
    h2.send_headers(1, end_headers=False)
    h2.send(UNKNOWN_FRAME)
    h2.expect_connection_error(PROTOCOL_ERROR)
