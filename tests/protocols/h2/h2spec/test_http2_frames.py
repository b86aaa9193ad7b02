"""h2spec's http2 cases for RFC 7540 section 6: each frame type's rules, SETTINGS, flow control, CONTINUATION.

One test per h2spec case; the test name and the first docstring line carry h2spec's id (``http2/6.5.3/1`` is
``test_http2_6_5_3_1``) and its description. What is sent and what is accepted follow h2spec (a connection
error is a GOAWAY with the code or a close; a stream error is a RST_STREAM or GOAWAY with the code, or a
close); the code is our own, on :mod:`.h2client`.
"""

from __future__ import annotations

import pytest

from .h2client import (
    DATA,
    ENABLE_PUSH,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_FRAME_SIZE,
    PING,
    PRIORITY,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    DataFrame,
    GoAwayFrame,
    H2Client,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    Verdict,
    describe,
    dummy_headers,
    raw_frame,
)

pytestmark = pytest.mark.timeout(6)

PING_DATA = b"h2spec\0\0"
MAX_WINDOW = 2**31 - 1


def _post(h2: H2Client, stream_id: int = 1, extra: list[tuple[str, str]] | None = None, *,
          end_headers: bool = True) -> None:
    h2.send_headers(stream_id, h2.request_headers("POST", extra=extra or []), end_stream=False,
                    end_headers=end_headers)


# -- 6.1. DATA -------------------------------------------------------------------------------------------------


def test_http2_6_1_1(h2: H2Client) -> None:
    """http2/6.1/1: Sends a DATA frame with 0x0 stream identifier; connection error PROTOCOL_ERROR."""
    h2.send(raw_frame(DATA, 0x1, 0, b"test"))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_1_2(h2: H2Client) -> None:
    """http2/6.1/2: Sends a DATA frame on the stream that is not in "open" or "half-closed (local)" state.

    Stream error STREAM_CLOSED.
    """
    h2.send_headers(1, h2.request_headers("POST"), end_stream=True)
    h2.send_data(1, b"test")
    h2.expect_stream_error(STREAM_CLOSED)


def test_http2_6_1_3(h2: H2Client) -> None:
    """http2/6.1/3: Sends a DATA frame with invalid pad length (6 in a 5-octet payload): PROTOCOL_ERROR."""
    _post(h2, extra=[("content-length", "4")])
    h2.send(raw_frame(DATA, 0x09, 1, b"\x06Test"))  # PADDED | END_STREAM
    h2.expect_connection_error(PROTOCOL_ERROR)


# -- 6.2. HEADERS ----------------------------------------------------------------------------------------------


def test_http2_6_2_1(h2: H2Client) -> None:
    """http2/6.2/1: Sends a HEADERS frame without the END_HEADERS flag, and a PRIORITY frame: PROTOCOL_ERROR."""
    h2.send_headers(1, end_stream=False, end_headers=False)
    h2.send_priority(1, depends_on=0, weight=255)
    h2.send_continuation(1, dummy_headers(1))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_2_2(h2: H2Client) -> None:
    """http2/6.2/2: Sends a HEADERS frame to another stream while sending a HEADERS frame: PROTOCOL_ERROR."""
    h2.send_headers(1, end_stream=False, end_headers=False)
    h2.send_headers(3)
    h2.send_continuation(1, dummy_headers(1))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_2_3(h2: H2Client) -> None:
    """http2/6.2/3: Sends a HEADERS frame with 0x0 stream identifier; connection error PROTOCOL_ERROR."""
    h2.send(raw_frame(HEADERS, 0x05, 0, h2.encode(h2.request_headers())))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_2_4(h2: H2Client) -> None:
    """http2/6.2/4: Sends a HEADERS frame with invalid pad length (longer than the payload): PROTOCOL_ERROR."""
    block = h2.encode(h2.request_headers())
    h2.send(raw_frame(HEADERS, 0x0D, 1, bytes([len(block) + 2]) + block))  # PADDED | END_HEADERS | END_STREAM
    h2.expect_stream_error(PROTOCOL_ERROR)


# -- 6.3. PRIORITY ---------------------------------------------------------------------------------------------


def test_http2_6_3_1(h2: H2Client) -> None:
    """http2/6.3/1: Sends a PRIORITY frame with 0x0 stream identifier; connection error PROTOCOL_ERROR."""
    h2.send(raw_frame(PRIORITY, 0, 0, b"\x00\x00\x00\x00\xff"))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_3_2(h2: H2Client) -> None:
    """http2/6.3/2: Sends a PRIORITY frame with a length other than 5 octets; stream error FRAME_SIZE_ERROR."""
    h2.send_headers(1)
    h2.send(raw_frame(PRIORITY, 0, 1, b"\x80\x00\x00\x01"))
    h2.expect_stream_error(FRAME_SIZE_ERROR)


# -- 6.4. RST_STREAM -------------------------------------------------------------------------------------------


def test_http2_6_4_1(h2: H2Client) -> None:
    """http2/6.4/1: Sends a RST_STREAM frame with 0x0 stream identifier; connection error PROTOCOL_ERROR."""
    h2.send(raw_frame(RST_STREAM, 0, 0, b"\x00\x00\x00\x08"))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_4_2(h2: H2Client) -> None:
    """http2/6.4/2: Sends a RST_STREAM frame on a idle stream; connection error PROTOCOL_ERROR."""
    h2.send_rst_stream(1)
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_4_3(h2: H2Client) -> None:
    """http2/6.4/3: Sends a RST_STREAM frame with a length other than 4 octets: FRAME_SIZE_ERROR."""
    h2.send_headers(1)
    h2.send(raw_frame(RST_STREAM, 0, 1, b"\x00\x00\x00"))
    h2.expect_stream_error(FRAME_SIZE_ERROR)


# -- 6.5. SETTINGS ---------------------------------------------------------------------------------------------


def test_http2_6_5_1(h2: H2Client) -> None:
    """http2/6.5/1: Sends a SETTINGS frame with ACK flag and payload; connection error FRAME_SIZE_ERROR."""
    h2.send(raw_frame(SETTINGS, 0x1, 0, b"\x00"))
    h2.expect_connection_error(FRAME_SIZE_ERROR)


def test_http2_6_5_2(h2: H2Client) -> None:
    """http2/6.5/2: Sends a SETTINGS frame with a stream identifier other than 0x0; PROTOCOL_ERROR."""
    h2.send(raw_frame(SETTINGS, 0, 1, b"\x00\x03\x00\x00\x00\x64"))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_5_3(h2: H2Client) -> None:
    """http2/6.5/3: Sends a SETTINGS frame with a length other than a multiple of 6 octets: FRAME_SIZE_ERROR."""
    h2.send(raw_frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00\x64\x00\x02"))
    h2.expect_connection_error(FRAME_SIZE_ERROR)


# -- 6.5.2. Defined SETTINGS Parameters ------------------------------------------------------------------------


def test_http2_6_5_2_1(h2: H2Client) -> None:
    """http2/6.5.2/1: SETTINGS_ENABLE_PUSH (0x2): Sends the value other than 0 or 1; PROTOCOL_ERROR."""
    h2.send_settings((ENABLE_PUSH, 2))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_5_2_2(h2: H2Client) -> None:
    """http2/6.5.2/2: SETTINGS_INITIAL_WINDOW_SIZE (0x4): Sends the value above the maximum flow control window size.

    Connection error FLOW_CONTROL_ERROR.
    """
    h2.send_settings((INITIAL_WINDOW_SIZE, 2**31))
    h2.expect_connection_error(FLOW_CONTROL_ERROR)


def test_http2_6_5_2_3(h2: H2Client) -> None:
    """http2/6.5.2/3: SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value below the initial value; PROTOCOL_ERROR."""
    h2.send_settings((MAX_FRAME_SIZE, 16383))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_5_2_4(h2: H2Client) -> None:
    """http2/6.5.2/4: SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value above the maximum allowed frame size."""
    h2.send_settings((MAX_FRAME_SIZE, 2**24))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_5_2_5(h2: H2Client) -> None:
    """http2/6.5.2/5: Sends a SETTINGS frame with unknown identifier; the server must ignore that setting."""
    h2.send_settings((0xFF, 1))
    h2.send_ping(PING_DATA)
    h2.expect_ping_ack(PING_DATA)


# -- 6.5.3. Settings Synchronization ---------------------------------------------------------------------------


def test_http2_6_5_3_1(h2: H2Client) -> None:
    """http2/6.5.3/1: Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE (100 then 1); the last one applies."""
    h2.send_settings((INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 1))
    h2.expect_settings_ack()
    h2.send_headers(1)
    h2.expect_data_length(1, 1)


def test_http2_6_5_3_2(h2: H2Client) -> None:
    """http2/6.5.3/2: Sends a SETTINGS frame without ACK flag; the server must acknowledge it immediately."""
    h2.send_settings((ENABLE_PUSH, 0))
    h2.expect_settings_ack()


# -- 6.7. PING -------------------------------------------------------------------------------------------------


def test_http2_6_7_1(h2: H2Client) -> None:
    """http2/6.7/1: Sends a PING frame; the server must answer with a PING ACK carrying the same payload."""
    h2.send_ping(PING_DATA)
    h2.expect_ping_ack(PING_DATA)


def test_http2_6_7_2(h2: H2Client) -> None:
    """http2/6.7/2: Sends a PING frame with ACK; the server must not answer it (but answers the next PING)."""
    unexpected = b"invalid\0"
    h2.send_ping(unexpected, ack=True)
    h2.send_ping(PING_DATA)
    frame = h2.expect(lambda f: isinstance(f, PingFrame) and (bytes(f.opaque_data) == unexpected or
                                                            ("ACK" in f.flags and bytes(f.opaque_data) == PING_DATA)),
                      f"PING(ACK, data={PING_DATA!r})")
    if isinstance(frame, PingFrame) and bytes(frame.opaque_data) == unexpected:
        raise Verdict(f"the server answered a PING ACK: {describe(frame)}")


def test_http2_6_7_3(h2: H2Client) -> None:
    """http2/6.7/3: Sends a PING frame with a stream identifier field value other than 0x0: PROTOCOL_ERROR."""
    h2.send(raw_frame(PING, 0, 1, b"\0" * 8))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_7_4(h2: H2Client) -> None:
    """http2/6.7/4: Sends a PING frame with a length field value other than 8; connection error FRAME_SIZE_ERROR."""
    h2.send(raw_frame(PING, 0, 0, b"\0" * 6))
    h2.expect_connection_error(FRAME_SIZE_ERROR)


# -- 6.8. GOAWAY -----------------------------------------------------------------------------------------------


def test_http2_6_8_1(h2: H2Client) -> None:
    """http2/6.8/1: Sends a GOAWAY frame with a stream identifier other than 0x0; PROTOCOL_ERROR."""
    h2.send(raw_frame(GOAWAY, 0, 1, b"\0" * 8))
    h2.expect_connection_error(PROTOCOL_ERROR)


# -- 6.9. WINDOW_UPDATE ----------------------------------------------------------------------------------------


def test_http2_6_9_1(h2: H2Client) -> None:
    """http2/6.9/1: Sends a WINDOW_UPDATE frame with a flow control window increment of 0: PROTOCOL_ERROR."""
    h2.send_window_update(0, 0)
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_9_2(h2: H2Client) -> None:
    """http2/6.9/2: Sends a WINDOW_UPDATE frame with a flow control window increment of 0 on a stream.

    Stream error PROTOCOL_ERROR.
    """
    h2.send_headers(1, end_stream=False)
    h2.send_window_update(1, 0)
    h2.expect_stream_error(PROTOCOL_ERROR)


def test_http2_6_9_3(h2: H2Client) -> None:
    """http2/6.9/3: Sends a WINDOW_UPDATE frame with a length other than 4 octets; FRAME_SIZE_ERROR."""
    h2.send(raw_frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
    h2.expect_connection_error(FRAME_SIZE_ERROR)


# -- 6.9.1. The Flow-Control Window ----------------------------------------------------------------------------


def test_http2_6_9_1_1(h2: H2Client) -> None:
    """http2/6.9.1/1: Sends SETTINGS frame to set the initial window size to 1 and sends HEADERS frame.

    The server must not send more than the window allows: its first DATA frame carries 1 octet.
    """
    h2.send_settings((INITIAL_WINDOW_SIZE, 1))
    h2.expect_settings_ack()
    h2.send_headers(1)
    h2.expect_data_length(1, 1)


def test_http2_6_9_1_2(h2: H2Client) -> None:
    """http2/6.9.1/2: Sends multiple WINDOW_UPDATE frames increasing the flow control window to above 2^31-1.

    The server must send a GOAWAY with FLOW_CONTROL_ERROR (a bare close does not pass, as in h2spec).
    """
    h2.send_window_update(0, MAX_WINDOW)
    h2.send_window_update(0, MAX_WINDOW)
    frame = h2.expect_frame(GoAwayFrame)
    if frame.error_code != FLOW_CONTROL_ERROR:
        raise Verdict(f"expected GOAWAY(FLOW_CONTROL_ERROR); got {describe(frame)}")


def test_http2_6_9_1_3(h2: H2Client) -> None:
    """http2/6.9.1/3: Sends multiple WINDOW_UPDATE frames increasing the flow control window to above 2^31-1 on a stream."""  # noqa: E501
    # The server must send RST_STREAM with FLOW_CONTROL_ERROR on that stream.
    h2.send_headers(1, end_stream=False)
    h2.send_window_update(1, MAX_WINDOW)
    h2.send_window_update(1, MAX_WINDOW)
    frame = h2.expect_frame(RstStreamFrame)
    if frame.stream_id != 1 or frame.error_code != FLOW_CONTROL_ERROR:
        raise Verdict(f"expected RST_STREAM(stream=1, FLOW_CONTROL_ERROR); got {describe(frame)}")


# -- 6.9.2. Initial Flow-Control Window Size -------------------------------------------------------------------


def test_http2_6_9_2_1(h2: H2Client) -> None:
    """http2/6.9.2/1: Changes SETTINGS_INITIAL_WINDOW_SIZE after sending HEADERS frame (0, then 1).

    The server must adjust the open stream's window: one DATA frame of 1 octet follows.
    """
    h2.send_settings((INITIAL_WINDOW_SIZE, 0))
    h2.expect_settings_ack()
    h2.send_headers(1)
    h2.send_settings((INITIAL_WINDOW_SIZE, 1))
    h2.expect_settings_ack()
    h2.expect_data_length(1, 1)


def test_http2_6_9_2_2(h2: H2Client) -> None:
    """http2/6.9.2/2: Sends a SETTINGS frame for window size to be negative (3, DATA, then 2, then +2).

    The window goes to -1; after a WINDOW_UPDATE of 2 the server may send exactly 1 octet.
    """
    h2.send_settings((INITIAL_WINDOW_SIZE, 3))
    h2.expect_settings_ack()
    h2.send_headers(1)
    h2.expect_frame(DataFrame)
    h2.send_settings((INITIAL_WINDOW_SIZE, 2))
    h2.expect_settings_ack()
    h2.send_window_update(1, 2)
    h2.expect_data_length(1, 1)


def test_http2_6_9_2_3(h2: H2Client) -> None:
    """http2/6.9.2/3: Sends a SETTINGS_INITIAL_WINDOW_SIZE settings with an exceeded maximum window size value.

    Connection error FLOW_CONTROL_ERROR.
    """
    h2.send(raw_frame(SETTINGS, 0, 0, b"\x00\x04\x80\x00\x00\x00"))
    h2.expect_connection_error(FLOW_CONTROL_ERROR)


# -- 6.10. CONTINUATION ----------------------------------------------------------------------------------------


def test_http2_6_10_1(h2: H2Client) -> None:
    """http2/6.10/1: Sends multiple CONTINUATION frames preceded by a HEADERS frame; the server must accept them."""
    h2.send_headers(1, end_headers=False)
    h2.send_continuation(1, dummy_headers(1), end_headers=False)
    h2.send_continuation(1, dummy_headers(1))
    h2.expect_frame(HeadersFrame)


def test_http2_6_10_2(h2: H2Client) -> None:
    """http2/6.10/2: Sends a CONTINUATION frame followed by any frame other than CONTINUATION: PROTOCOL_ERROR."""
    _post(h2, end_headers=False)
    h2.send_continuation(1, dummy_headers(1), end_headers=False)
    h2.send_data(1, b"test")
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_10_3(h2: H2Client) -> None:
    """http2/6.10/3: Sends a CONTINUATION frame with 0x0 stream identifier; connection error PROTOCOL_ERROR."""
    h2.send_headers(1, end_headers=False)
    h2.send_continuation(0, dummy_headers(1))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_10_4(h2: H2Client) -> None:
    """http2/6.10/4: Sends a CONTINUATION frame preceded by a HEADERS frame with END_HEADERS flag: PROTOCOL_ERROR."""
    h2.send_headers(1)
    h2.send_continuation(1, dummy_headers(1))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_10_5(h2: H2Client) -> None:
    """http2/6.10/5: Sends a CONTINUATION frame preceded by a CONTINUATION frame with END_HEADERS flag.

    Connection error PROTOCOL_ERROR.
    """
    h2.send_headers(1, end_headers=False)
    h2.send_continuation(1, dummy_headers(1))
    h2.send_continuation(1, dummy_headers(1))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_10_6(h2: H2Client) -> None:
    """http2/6.10/6: Sends a CONTINUATION frame preceded by a DATA frame; connection error PROTOCOL_ERROR."""
    _post(h2, end_headers=False)
    h2.send_data(1, b"test")
    h2.send_continuation(1, dummy_headers(1), end_headers=False)
    h2.send_continuation(0, dummy_headers(1))
    h2.expect_connection_error(PROTOCOL_ERROR)
