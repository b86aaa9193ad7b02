"""HTTP/2 frame constants, serialisation (RFC 9113 4 and 6) and the two kinds of error: no state.

Frames are parsed inline by the connection (one ``struct.unpack_from`` per frame header) and built here.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">BHBBL")  # length (24 bits, split 8 + 16), type, flags, stream id (with the R bit)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6
SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x8

DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1
DEFAULT_MAX_FRAME = 16384
MAX_FRAME_LIMIT = 2**24 - 1

_pack = HEADER.pack


class ConnectionError_(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with this code, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamError(Exception):
    """A stream error (RFC 9113 5.4.2): RST_STREAM with this code; the connection goes on."""

    def __init__(self, stream_id: int, code: int, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.code = code


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One whole frame."""
    n = len(payload)
    return _pack(n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


def frame_header(ftype: int, flags: int, stream_id: int, length: int) -> bytes:
    """The 9-byte header of a frame whose payload is written separately (large DATA, no copy)."""
    return _pack(length >> 16, length & 0xFFFF, ftype, flags, stream_id)


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HL", key, value) for key, value in values.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">L", increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">L", code))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">LL", last_stream_id, code) + debug)


def header_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """HEADERS (plus CONTINUATION frames if the block is larger than the peer's frame size)."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, stream_id, block)
    out = [frame(HEADERS, flags, stream_id, block[:max_frame])]
    rest = block[max_frame:]
    while rest:
        piece, rest = rest[:max_frame], rest[max_frame:]
        out.append(frame(CONTINUATION, 0 if rest else END_HEADERS, stream_id, piece))
    return b"".join(out)


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    return [struct.unpack_from(">HL", payload, offset) for offset in range(0, len(payload), 6)]


def peer_settings(payload: bytes) -> tuple[int | None, int | None]:
    """A SETTINGS frame's payload checked against RFC 9113 6.5.2: (the initial window size, the max frame
    size), each None when the frame does not set it (the last value in the frame wins). ConnectionError_
    for a value out of range. HEADER_TABLE_SIZE needs nothing (our encoder never uses the dynamic table);
    the other settings are advisory for a server."""
    window: int | None = None
    max_frame: int | None = None
    for key, value in parse_settings(payload):
        if key == SETTINGS_INITIAL_WINDOW_SIZE:
            if value > MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
            window = value
        elif key == SETTINGS_MAX_FRAME_SIZE:
            if not DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LIMIT:
                raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
            max_frame = value
        elif key == SETTINGS_ENABLE_PUSH:
            if value > 1:
                raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH other than 0 or 1")
        elif key == SETTINGS_ENABLE_CONNECT_PROTOCOL and value > 1:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS_ENABLE_CONNECT_PROTOCOL other than 0 or 1")
    return window, max_frame


def unpad(payload: bytes) -> bytes:
    """A PADDED frame's content: the pad length byte and the padding removed (RFC 9113 6.1, 6.2)."""
    if not payload:
        raise ConnectionError_(PROTOCOL_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ConnectionError_(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1:len(payload) - pad]


def check_control(kind: int, sid: int, payload: bytes, flags: int = 0) -> None:
    """The shape rules of a SETTINGS, PING or PRIORITY frame (RFC 9113 6.3, 6.5, 6.7): ConnectionError_, or
    StreamError for PRIORITY's own (whose stream 0 the caller refuses first, before charging the frame)."""
    if kind == SETTINGS:
        if sid != 0:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK and payload:
            raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS ack with a payload")
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
    elif kind == PING:
        if sid != 0:
            raise ConnectionError_(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionError_(FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
    elif kind == PRIORITY:
        if len(payload) != 5:
            raise StreamError(sid, FRAME_SIZE_ERROR, "PRIORITY of the wrong size")
        if struct.unpack_from(">L", payload)[0] & 0x7FFFFFFF == sid:
            raise StreamError(sid, PROTOCOL_ERROR, "stream depends on itself")
