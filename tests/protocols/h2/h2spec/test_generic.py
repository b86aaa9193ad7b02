"""h2spec's generic server cases (sections 1-5): the frames and exchanges every HTTP/2 server must accept.

One test per h2spec case; the test name and the first docstring line carry h2spec's id (``generic/3.1/1``
is ``test_generic_3_1_1``) and its description. What is sent and what is accepted follow h2spec; the code is
our own, on :mod:`.h2client`.
"""

from __future__ import annotations

import pytest

from .h2client import (
    CANCEL,
    ENABLE_PUSH,
    HEADER_TABLE_SIZE,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    NO_ERROR,
    PREFACE,
    DataFrame,
    H2Client,
    SettingsFrame,
    Verdict,
    describe,
    hpack_int,
    hpack_string,
)

pytestmark = pytest.mark.timeout(6)

PING_DATA = b"h2spec\0\0"
USER_AGENT = 58  # static table index of "user-agent" (RFC 7541 appendix A)


# -- 1. Starting HTTP/2 ----------------------------------------------------------------------------------------


def test_generic_1_1(conn: H2Client) -> None:
    """generic/1/1: Sends a client connection preface; the server's first frame must be a SETTINGS frame."""
    conn.send(PREFACE)
    conn.send_settings((INITIAL_WINDOW_SIZE, 65535))
    frame = conn.read_frame()
    if not isinstance(frame, SettingsFrame) or "ACK" in frame.flags:
        raise Verdict(f"expected SETTINGS (no ACK) as the first frame; got {describe(frame)}")


# -- 2. Streams and Multiplexing -------------------------------------------------------------------------------


def test_generic_2_1(h2: H2Client) -> None:
    """generic/2/1: Sends a PRIORITY frame on idle stream; the server must accept it."""
    h2.send_priority(1, depends_on=0, weight=255)
    h2.send_ping(PING_DATA)
    h2.expect_ping_ack(PING_DATA)


def test_generic_2_2(h2: H2Client) -> None:
    """generic/2/2: Sends a WINDOW_UPDATE frame on half-closed (remote) stream; the server must accept it."""
    h2.send_settings((INITIAL_WINDOW_SIZE, 0))  # no DATA until we open the stream's window
    h2.send_headers(1)
    h2.send_window_update(1, 1)
    h2.expect_frame(DataFrame)


def test_generic_2_3(h2: H2Client) -> None:
    """generic/2/3: Sends a PRIORITY frame on half-closed (remote) stream; the server must accept it."""
    h2.send_settings((INITIAL_WINDOW_SIZE, 0))
    h2.send_headers(1)
    h2.send_priority(1, depends_on=0, weight=255)
    h2.send_window_update(1, 1)
    h2.expect_frame(DataFrame)


def test_generic_2_4(h2: H2Client) -> None:
    """generic/2/4: Sends a RST_STREAM frame on half-closed (remote) stream; the server must accept it."""
    h2.send_headers(1)
    h2.send_rst_stream(1, CANCEL)
    h2.send_ping(PING_DATA)
    h2.expect_ping_ack_or_close(PING_DATA)


def test_generic_2_5(h2: H2Client) -> None:
    """generic/2/5: Sends a PRIORITY frame on closed stream; the server must accept it."""
    h2.send_headers(1)
    h2.expect_stream_closed(1)
    h2.send_priority(1, depends_on=0, weight=255)
    h2.send_ping(PING_DATA)
    h2.expect_ping_ack(PING_DATA)


# -- 3. Frame Definitions --------------------------------------------------------------------------------------


def _post(h2: H2Client, stream_id: int = 1) -> None:
    h2.send_headers(stream_id, h2.request_headers("POST"), end_stream=False)


def test_generic_3_1_1(h2: H2Client) -> None:
    """generic/3.1/1: Sends a DATA frame; the server must accept it and answer."""
    _post(h2)
    h2.send_data(1, b"test")
    h2.expect_headers(1)


def test_generic_3_1_2(h2: H2Client) -> None:
    """generic/3.1/2: Sends multiple DATA frames; the server must accept them and answer."""
    _post(h2)
    h2.send_data(1, b"test", end_stream=False)
    h2.send_data(1, b"test")
    h2.expect_headers(1)


def test_generic_3_1_3(h2: H2Client) -> None:
    """generic/3.1/3: Sends a DATA frame with padding; the server must accept it and answer."""
    _post(h2)
    h2.send_data(1, b"test", padding=b"padded")
    h2.expect_headers(1)


def test_generic_3_2_1(h2: H2Client) -> None:
    """generic/3.2/1: Sends a HEADERS frame; the server must accept it and answer."""
    h2.send_headers(1)
    h2.expect_headers(1)


def test_generic_3_2_2(h2: H2Client) -> None:
    """generic/3.2/2: Sends a HEADERS frame with padding; the server must accept it and answer."""
    h2.send_headers(1, pad_length=8)
    h2.expect_headers(1)


def test_generic_3_2_3(h2: H2Client) -> None:
    """generic/3.2/3: Sends a HEADERS frame with priority; the server must accept it and answer."""
    h2.send_headers(1, priority=(0, 255, False))
    h2.expect_headers(1)


def test_generic_3_3_1(h2: H2Client) -> None:
    """generic/3.3/1: Sends a PRIORITY frame with priority 1 (weight field 0); the server must accept it."""
    h2.send_priority(1, depends_on=0, weight=0)
    h2.send_headers(1)
    h2.expect_headers(1)


def test_generic_3_3_2(h2: H2Client) -> None:
    """generic/3.3/2: Sends a PRIORITY frame with priority 256 (weight field 255); the server must accept it."""
    h2.send_priority(1, depends_on=0, weight=255)
    h2.send_headers(1)
    h2.expect_headers(1)


def test_generic_3_3_3(h2: H2Client) -> None:
    """generic/3.3/3: Sends a PRIORITY frame with stream dependency; the server must accept it."""
    h2.send_priority(3, depends_on=1, weight=0)
    h2.send_headers(1)
    h2.expect_headers(1)


def test_generic_3_3_4(h2: H2Client) -> None:
    """generic/3.3/4: Sends a PRIORITY frame with exclusive; the server must accept it."""
    h2.send_priority(1, depends_on=0, weight=0, exclusive=True)
    h2.send_headers(1)
    h2.expect_headers(1)


def test_generic_3_3_5(h2: H2Client) -> None:
    """generic/3.3/5: Sends a PRIORITY frame for an idle stream, then send a HEADER frame for a lower stream ID.

    The same exchange is h2spec's strict-mode http2/6.3/3; the server must answer stream 1.
    """
    h2.send_priority(3, depends_on=0, weight=255)
    h2.send_headers(1)
    h2.expect_headers(1)


def test_generic_3_4_1(h2: H2Client) -> None:
    """generic/3.4/1: Sends a RST_STREAM frame; the server must accept it."""
    h2.send_headers(1, end_stream=False)
    h2.send_rst_stream(1, CANCEL)
    h2.send_ping(PING_DATA)
    h2.expect_ping_ack(PING_DATA)


def test_generic_3_5_1(h2: H2Client) -> None:
    """generic/3.5/1: Sends a SETTINGS frame; the server must acknowledge it."""
    h2.send_settings((HEADER_TABLE_SIZE, 4096), (ENABLE_PUSH, 1), (MAX_CONCURRENT_STREAMS, 100),
                     (INITIAL_WINDOW_SIZE, 65535), (MAX_FRAME_SIZE, 16384), (MAX_HEADER_LIST_SIZE, 100))
    h2.expect_settings_ack()


def test_generic_3_7_1(h2: H2Client) -> None:
    """generic/3.7/1: Sends a PING frame; the server must answer with a PING ACK carrying the same data."""
    h2.send_ping(PING_DATA)
    h2.expect_ping_ack(PING_DATA)


def test_generic_3_8_1(h2: H2Client) -> None:
    """generic/3.8/1: Sends a GOAWAY frame; the server must accept it (answer a PING, or close)."""
    h2.send_goaway(0, NO_ERROR, b"h2spec")
    h2.send_ping(PING_DATA)
    h2.expect_ping_ack_or_close(PING_DATA)


def test_generic_3_9_1(h2: H2Client) -> None:
    """generic/3.9/1: Sends a WINDOW_UPDATE frame with stream ID 0; the server must accept it."""
    h2.send_window_update(0, 1)
    h2.send_ping(PING_DATA)
    h2.expect_ping_ack(PING_DATA)


def test_generic_3_9_2(h2: H2Client) -> None:
    """generic/3.9/2: Sends a WINDOW_UPDATE frame with stream ID 1; the server must accept it."""
    h2.send_headers(1)
    h2.send_window_update(1, 1)
    h2.expect_headers(1)


def test_generic_3_10_1(h2: H2Client) -> None:
    """generic/3.10/1: Sends a CONTINUATION frame; the server must accept it."""
    block = h2.encode(h2.request_headers())
    h2.send_headers(1, block[:5], end_headers=False)
    h2.send_continuation(1, block[5:])
    h2.expect_headers(1)


def test_generic_3_10_2(h2: H2Client) -> None:
    """generic/3.10/2: Sends multiple CONTINUATION frames; the server must accept them."""
    block = h2.encode(h2.request_headers())
    h2.send_headers(1, block[:5], end_headers=False)
    h2.send_continuation(1, block[5:10], end_headers=False)
    h2.send_continuation(1, block[10:])
    h2.expect_headers(1)


# -- 4. HTTP Message Exchanges ---------------------------------------------------------------------------------


def test_generic_4_1(h2: H2Client) -> None:
    """generic/4/1: Sends a GET request; the server must respond."""
    h2.send_request(1, "GET")
    h2.expect_headers(1)


def test_generic_4_2(h2: H2Client) -> None:
    """generic/4/2: Sends a HEAD request; the server must respond."""
    h2.send_request(1, "HEAD")
    h2.expect_headers(1)


def test_generic_4_3(h2: H2Client) -> None:
    """generic/4/3: Sends a POST request; the server must respond."""
    h2.send_request(1, "POST", body=b"test")
    h2.expect_headers(1)


def test_generic_4_4(h2: H2Client) -> None:
    """generic/4/4: Sends a POST request with trailers; the server must respond."""
    h2.send_headers(1, h2.request_headers("POST", extra=[("trailer", "x-test")]), end_stream=False)
    h2.send_data(1, b"test", end_stream=False)
    h2.send_headers(1, [("x-test", "ok")], end_stream=True)
    h2.expect_headers(1)


# -- 5. HPACK --------------------------------------------------------------------------------------------------
# Each case appends one representation (RFC 7541 section 6) to the common request's header block.


def _with_field(h2: H2Client, representation: bytes, *, prefix: bytes = b"") -> None:
    h2.send_headers(1, prefix + h2.encode(h2.request_headers()) + representation)
    h2.expect_headers(1)


def _literal(kind: int, prefix_bits: int, *, indexed_name: bool, huffman: bool) -> bytes:
    """``user-agent: h2spec`` (indexed name) or ``x-test: h2spec`` (new name) in the given literal form."""
    if indexed_name:
        return hpack_int(USER_AGENT, prefix_bits, kind) + hpack_string(b"h2spec", huffman=huffman)
    return bytes([kind]) + hpack_string(b"x-test", huffman=huffman) + hpack_string(b"h2spec", huffman=huffman)


INCREMENTAL, WITHOUT, NEVER = (0x40, 6), (0x00, 4), (0x10, 4)


def test_generic_5_1(h2: H2Client) -> None:
    """generic/5/1: Sends a indexed header field representation; the server must accept it."""
    _with_field(h2, hpack_int(USER_AGENT, 7, 0x80))


def test_generic_5_2(h2: H2Client) -> None:
    """generic/5/2: Sends a literal header field with incremental indexing - indexed name."""
    _with_field(h2, _literal(*INCREMENTAL, indexed_name=True, huffman=False))


def test_generic_5_3(h2: H2Client) -> None:
    """generic/5/3: Sends a literal header field with incremental indexing - indexed name (with Huffman coding)."""
    _with_field(h2, _literal(*INCREMENTAL, indexed_name=True, huffman=True))


def test_generic_5_4(h2: H2Client) -> None:
    """generic/5/4: Sends a literal header field with incremental indexing - new name."""
    _with_field(h2, _literal(*INCREMENTAL, indexed_name=False, huffman=False))


def test_generic_5_5(h2: H2Client) -> None:
    """generic/5/5: Sends a literal header field with incremental indexing - new name (with Huffman coding)."""
    _with_field(h2, _literal(*INCREMENTAL, indexed_name=False, huffman=True))


def test_generic_5_6(h2: H2Client) -> None:
    """generic/5/6: Sends a literal header field without indexing - indexed name."""
    _with_field(h2, _literal(*WITHOUT, indexed_name=True, huffman=False))


def test_generic_5_7(h2: H2Client) -> None:
    """generic/5/7: Sends a literal header field without indexing - indexed name (with Huffman coding)."""
    _with_field(h2, _literal(*WITHOUT, indexed_name=True, huffman=True))


def test_generic_5_8(h2: H2Client) -> None:
    """generic/5/8: Sends a literal header field without indexing - new name."""
    _with_field(h2, _literal(*WITHOUT, indexed_name=False, huffman=False))


def test_generic_5_9(h2: H2Client) -> None:
    """generic/5/9: Sends a literal header field without indexing - new name (huffman encoded)."""
    _with_field(h2, _literal(*WITHOUT, indexed_name=False, huffman=True))


def test_generic_5_10(h2: H2Client) -> None:
    """generic/5/10: Sends a literal header field never indexed - indexed name."""
    _with_field(h2, _literal(*NEVER, indexed_name=True, huffman=False))


def test_generic_5_11(h2: H2Client) -> None:
    """generic/5/11: Sends a literal header field never indexed - indexed name (huffman encoded)."""
    _with_field(h2, _literal(*NEVER, indexed_name=True, huffman=True))


def test_generic_5_12(h2: H2Client) -> None:
    """generic/5/12: Sends a literal header field never indexed - new name."""
    _with_field(h2, _literal(*NEVER, indexed_name=False, huffman=False))


def test_generic_5_13(h2: H2Client) -> None:
    """generic/5/13: Sends a literal header field never indexed - new name (huffman encoded)."""
    _with_field(h2, _literal(*NEVER, indexed_name=False, huffman=True))


def test_generic_5_14(h2: H2Client) -> None:
    """generic/5/14: Sends a dynamic table size update (to 0, at the start of the block)."""
    _with_field(h2, b"", prefix=hpack_int(0, 5, 0x20))


def test_generic_5_15(h2: H2Client) -> None:
    """generic/5/15: Sends multiple dynamic table size update (0 then 4096, at the start of the block)."""
    _with_field(h2, b"", prefix=hpack_int(0, 5, 0x20) + hpack_int(4096, 5, 0x20))
