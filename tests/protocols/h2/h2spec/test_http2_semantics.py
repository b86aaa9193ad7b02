"""h2spec's http2 cases for RFC 7540 sections 7 (error codes) and 8 (HTTP semantics: malformed requests, push).

One test per h2spec case; the test name and the first docstring line carry h2spec's id (``http2/8.1.2.3/4`` is
``test_http2_8_1_2_3_4``) and its description. What is sent and what is accepted follow h2spec (a connection
error is a GOAWAY with the code or a close; a stream error is a RST_STREAM or GOAWAY with the code, or a
close); the code is our own, on :mod:`.h2client`.
"""

from __future__ import annotations

import pytest

from .h2client import PROTOCOL_ERROR, H2Client

pytestmark = pytest.mark.timeout(6)

PING_DATA = b"h2spec\0\0"
Header = tuple[str, str]


def _malformed(h2: H2Client, headers: list[Header]) -> None:
    """Send ``headers`` as a complete request on stream 1; expect a stream error PROTOCOL_ERROR."""
    h2.send_headers(1, headers)
    h2.expect_stream_error(PROTOCOL_ERROR)


def _common(h2: H2Client) -> list[Header]:
    return h2.request_headers()


# -- 7. Error Codes --------------------------------------------------------------------------------------------


def test_http2_7_1(h2: H2Client) -> None:
    """http2/7/1: Sends a GOAWAY frame with unknown error code; no special behaviour (answer a PING, or close)."""
    h2.send_goaway(0, 0xFF)
    h2.send_ping(PING_DATA)
    h2.expect_ping_ack_or_close(PING_DATA)


def test_http2_7_2(h2: H2Client) -> None:
    """http2/7/2: Sends a RST_STREAM frame with unknown error code; no special behaviour (answer a PING)."""
    h2.send_headers(1, h2.request_headers("POST"), end_stream=False)
    h2.send_rst_stream(1, 0xFF)
    h2.send_ping(PING_DATA)
    h2.expect_ping_ack(PING_DATA)


# -- 8.1. HTTP Request/Response Exchange -----------------------------------------------------------------------


def test_http2_8_1_1(h2: H2Client) -> None:
    """http2/8.1/1: Sends a second HEADERS frame without the END_STREAM flag; stream error PROTOCOL_ERROR."""
    h2.send_headers(1, h2.request_headers("POST"), end_stream=False)
    h2.send_data(1, b"test", end_stream=False)
    h2.send_headers(1, [("x-test", "ok")], end_stream=False)
    h2.expect_stream_error(PROTOCOL_ERROR)


# -- 8.1.2. HTTP Header Fields ---------------------------------------------------------------------------------


def test_http2_8_1_2_1(h2: H2Client) -> None:
    """http2/8.1.2/1: Sends a HEADERS frame that contains the header field name in uppercase letters."""
    _malformed(h2, [*_common(h2), ("X-TEST", "ok")])


# -- 8.1.2.1. Pseudo-Header Fields -----------------------------------------------------------------------------


def test_http2_8_1_2_1_1(h2: H2Client) -> None:
    """http2/8.1.2.1/1: Sends a HEADERS frame that contains a unknown pseudo-header field."""
    _malformed(h2, [*_common(h2), (":test", "ok")])


def test_http2_8_1_2_1_2(h2: H2Client) -> None:
    """http2/8.1.2.1/2: Sends a HEADERS frame that contains the pseudo-header field defined for response."""
    _malformed(h2, [*_common(h2), (":status", "200")])


def test_http2_8_1_2_1_3(h2: H2Client) -> None:
    """http2/8.1.2.1/3: Sends a HEADERS frame that contains a pseudo-header field as trailers.

    h2spec leaves END_STREAM off the trailers (which 8.1/1 already forbids); here the trailers end the stream,
    so only the pseudo-header makes them malformed.
    """
    h2.send_headers(1, h2.request_headers("POST"), end_stream=False)
    h2.send_data(1, b"test", end_stream=False)
    h2.send_headers(1, [(":method", "POST")], end_stream=True)
    h2.expect_stream_error(PROTOCOL_ERROR)


def test_http2_8_1_2_1_4(h2: H2Client) -> None:
    """http2/8.1.2.1/4: Sends a HEADERS frame that contains a pseudo-header field that appears in a header block after a regular header field."""  # noqa: E501
    _malformed(h2, [("x-test", "ok"), *_common(h2)])


# -- 8.1.2.2. Connection-Specific Header Fields ----------------------------------------------------------------


def test_http2_8_1_2_2_1(h2: H2Client) -> None:
    """http2/8.1.2.2/1: Sends a HEADERS frame that contains the connection-specific header field."""
    _malformed(h2, [*_common(h2), ("connection", "keep-alive")])


def test_http2_8_1_2_2_2(h2: H2Client) -> None:
    """http2/8.1.2.2/2: Sends a HEADERS frame that contains the TE header field with any value other than "trailers"."""
    _malformed(h2, [*_common(h2), ("trailers", "test"), ("te", "trailers, deflate")])


# -- 8.1.2.3. Request Pseudo-Header Fields ---------------------------------------------------------------------


def test_http2_8_1_2_3_1(h2: H2Client) -> None:
    """http2/8.1.2.3/1: Sends a HEADERS frame with empty ":path" pseudo-header field."""
    _malformed(h2, h2.request_headers(path=""))


def test_http2_8_1_2_3_2(h2: H2Client) -> None:
    """http2/8.1.2.3/2: Sends a HEADERS frame that omits ":method" pseudo-header field."""
    _malformed(h2, [h for h in _common(h2) if h[0] != ":method"])


def test_http2_8_1_2_3_3(h2: H2Client) -> None:
    """http2/8.1.2.3/3: Sends a HEADERS frame that omits ":scheme" pseudo-header field."""
    _malformed(h2, [h for h in _common(h2) if h[0] != ":scheme"])


def test_http2_8_1_2_3_4(h2: H2Client) -> None:
    """http2/8.1.2.3/4: Sends a HEADERS frame that omits ":path" pseudo-header field."""
    _malformed(h2, [h for h in _common(h2) if h[0] != ":path"])


def test_http2_8_1_2_3_5(h2: H2Client) -> None:
    """http2/8.1.2.3/5: Sends a HEADERS frame with duplicated ":method" pseudo-header field."""
    headers = _common(h2)
    _malformed(h2, [*headers, (":method", "GET")])


def test_http2_8_1_2_3_6(h2: H2Client) -> None:
    """http2/8.1.2.3/6: Sends a HEADERS frame with duplicated ":scheme" pseudo-header field."""
    _malformed(h2, [*_common(h2), (":scheme", "http")])


def test_http2_8_1_2_3_7(h2: H2Client) -> None:
    """http2/8.1.2.3/7: Sends a HEADERS frame with duplicated ":path" pseudo-header field."""
    _malformed(h2, [*_common(h2), (":path", "/")])


# -- 8.1.2.6. Malformed Requests and Responses -----------------------------------------------------------------


def test_http2_8_1_2_6_1(h2: H2Client) -> None:
    """http2/8.1.2.6/1: Sends a HEADERS frame with the "content-length" header field which does not equal the DATA frame payload length."""  # noqa: E501
    h2.send_headers(1, h2.request_headers("POST", extra=[("content-length", "1")]), end_stream=False)
    h2.send_data(1, b"test")
    h2.expect_stream_error(PROTOCOL_ERROR)


def test_http2_8_1_2_6_2(h2: H2Client) -> None:
    """http2/8.1.2.6/2: Sends a HEADERS frame with the "content-length" header field which does not equal the sum of the multiple DATA frames payload length."""  # noqa: E501
    h2.send_headers(1, h2.request_headers("POST", extra=[("content-length", "1")]), end_stream=False)
    h2.send_data(1, b"test", end_stream=False)
    h2.send_data(1, b"test")
    h2.expect_stream_error(PROTOCOL_ERROR)


# -- 8.2. Server Push ------------------------------------------------------------------------------------------


def test_http2_8_2_1(h2: H2Client) -> None:
    """http2/8.2/1: Sends a PUSH_PROMISE frame; a client cannot push: connection error PROTOCOL_ERROR."""
    h2.send_push_promise(1, 3, h2.request_headers())
    h2.expect_connection_error(PROTOCOL_ERROR)
