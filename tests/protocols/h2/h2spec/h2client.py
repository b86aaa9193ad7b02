"""A frame-level HTTP/2 test client: raw frames out, parsed frames in, and h2spec's verdicts on what comes back.

The client talks cleartext HTTP/2 with prior knowledge over a plain socket. Well-formed frames are built with
``hyperframe`` and header blocks with ``hpack``; malformed ones (the point of most cases) are written byte by
byte with :func:`raw_frame`. Every frame the server sends is parsed with ``hyperframe``.

The ``expect_*`` methods accept the same outcomes h2spec's verifiers accept:

- a *connection error* of code C: a GOAWAY carrying C, or the connection closed;
- a *stream error* of code C: a RST_STREAM or a GOAWAY carrying C, or the connection closed;
- *connection closed*: EOF or a reset, whatever frames come first;
- *stream closed*: a DATA or HEADERS frame with END_STREAM, or a RST_STREAM with NO_ERROR.

Other frames arriving in between are skipped (and remembered for the failure message), as h2spec does. Like
h2spec's client, this one returns flow-control credit (WINDOW_UPDATE) once a 65,535-octet window is used up.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar, cast

import hpack
from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535
WAIT = 2.0  # h2spec's default per-case timeout for anything the server must send

# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)

# error codes (RFC 7540 section 7)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9

ERROR_NAMES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM",
    0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}

# settings identifiers
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

MAX_HEADER_LEN = 4000  # h2spec's default --max-header-length: the size of each dummy header value

Header = tuple[str, str]
F = TypeVar("F", bound=Frame)
_HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


class Closed(Exception):
    """The server closed (or reset) the connection."""


class Verdict(AssertionError):
    """The server did not do what the case expects; the message says what it did instead."""


def raw_frame(frame_type: int, flags: int, stream_id: int, payload: bytes, *, length: int | None = None) -> bytes:
    """Frame header + payload, byte for byte; ``length`` overrides the length field (to lie about it)."""
    size = len(payload) if length is None else length
    return struct.pack(">I", size)[1:] + struct.pack(">BBI", frame_type, flags, stream_id) + payload


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"0x{code:x}")


def describe(frame: Frame | str | None) -> str:
    """One line for a failure message: the frame type, flags, stream and the fields that matter."""
    if frame is None:
        return "nothing (timeout)"
    if isinstance(frame, str):
        return frame
    name = type(frame).__name__.replace("Frame", "").upper()
    flags = ",".join(sorted(frame.flags)) or "-"
    text = f"{name}(stream={frame.stream_id}, flags={flags}"
    if isinstance(frame, GoAwayFrame):
        text += f", code={error_name(frame.error_code)}, last_stream={frame.last_stream_id}"
        if frame.additional_data:
            text += f", debug={bytes(frame.additional_data)[:80]!r}"
    elif isinstance(frame, RstStreamFrame):
        text += f", code={error_name(frame.error_code)}"
    elif isinstance(frame, DataFrame):
        text += f", length={len(frame.data)}"
    elif isinstance(frame, PingFrame):
        text += f", data={bytes(frame.opaque_data)!r}"
    elif isinstance(frame, SettingsFrame):
        text += f", settings={dict(frame.settings)}"
    elif isinstance(frame, WindowUpdateFrame):
        text += f", increment={frame.window_increment}"
    return text + ")"


def dummy_headers(count: int, length: int = MAX_HEADER_LEN) -> list[Header]:
    """h2spec's filler: ``x-dummy0: xxxx...`` and so on, each value ``length`` octets."""
    return [(f"x-dummy{i}", "x" * length) for i in range(count)]


def hpack_int(value: int, prefix_bits: int, first_byte_flags: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with the representation's flag bits or-ed into the first octet."""
    out = encode_integer(value, prefix_bits)
    out[0] |= first_byte_flags
    return bytes(out)


def hpack_string(value: bytes, *, huffman: bool = False) -> bytes:
    """An HPACK string literal (RFC 7541 5.2), Huffman-coded or raw."""
    data = _HUFFMAN.encode(value) if huffman else value
    return hpack_int(len(data), 7, 0x80 if huffman else 0x00) + data


class H2Client:
    """One connection to the server under test; ``handshake()`` first unless the case tests the preface."""

    def __init__(self, host: str, port: int, *, wait: float = WAIT) -> None:
        self.host = host
        self.port = port
        self.wait = wait
        self.sock = socket.create_connection((host, port), timeout=wait)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.closed = False
        self.encoder = hpack.Encoder()
        self.server_settings: dict[int, int] = {}
        self.received: list[Frame] = []  # every frame read, in order
        self.windows: dict[int, int] = {0: DEFAULT_WINDOW}

    # -- lifecycle -------------------------------------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def handshake(self) -> None:
        """Preface + SETTINGS(INITIAL_WINDOW_SIZE=65535); wait for the server's SETTINGS and its ACK of ours."""
        self.send(PREFACE)
        self.send_settings((INITIAL_WINDOW_SIZE, DEFAULT_WINDOW))
        got_settings = got_ack = False
        end = time.monotonic() + self.wait
        while not (got_settings and got_ack):
            frame = self.read_frame(end - time.monotonic())
            if frame is None:
                raise Verdict(f"handshake: no {'SETTINGS' if not got_settings else 'SETTINGS ACK'} "
                              f"from the server within {self.wait} s; got {self._seen()}")
            if isinstance(frame, SettingsFrame):
                if "ACK" in frame.flags:
                    got_ack = True
                else:
                    got_settings = True
                    self.server_settings.update(frame.settings)
                    self.send_settings_ack()

    # -- sending ---------------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Raw bytes; a server that already closed is not an error here (the verdict comes from reading)."""
        with contextlib.suppress(OSError):  # reset or closed: reading says so, after any GOAWAY still buffered
            self.sock.sendall(data)

    def send_frame(self, frame: Frame) -> None:
        self.send(frame.serialize())

    def request_headers(self, method: str = "GET", path: str = "/", extra: Sequence[Header] = ()) -> list[Header]:
        """h2spec's common request: :method, :scheme http, :path, :authority host:port, then ``extra``."""
        return [(":method", method), (":scheme", "http"), (":path", path), (":authority", self.authority),
                *extra]

    def encode(self, headers: Iterable[Header]) -> bytes:
        """A header block from the connection's encoder (its dynamic table stays in step with the server's)."""
        return bytes(self.encoder.encode([(n.encode(), v.encode()) for n, v in headers]))

    def send_headers(self, stream_id: int, block: bytes | Sequence[Header] | None = None, *, end_stream: bool = True,
                     end_headers: bool = True, pad_length: int = 0, priority: tuple[int, int, bool] | None = None,
                     ) -> None:
        """HEADERS; ``block`` is an encoded block or a header list (default: the common GET request).

        ``priority`` is (depends_on, weight 0-255 as on the wire, exclusive).
        """
        if block is None:
            block = self.request_headers()
        if not isinstance(block, bytes):
            block = self.encode(block)
        flags = (0x1 if end_stream else 0) | (0x4 if end_headers else 0)
        payload = block
        if priority is not None:
            depends_on, weight, exclusive = priority
            flags |= 0x20
            payload = struct.pack(">IB", depends_on | (0x80000000 if exclusive else 0), weight) + payload
        if pad_length:
            flags |= 0x8
            payload = bytes([pad_length]) + payload + b"\0" * pad_length
        self.send(raw_frame(HEADERS, flags, stream_id, payload))

    def send_continuation(self, stream_id: int, block: bytes | Sequence[Header], *, end_headers: bool = True) -> None:
        if not isinstance(block, bytes):
            block = self.encode(block)
        self.send(raw_frame(CONTINUATION, 0x4 if end_headers else 0, stream_id, block))

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = True, padding: bytes = b"") -> None:
        flags = 0x1 if end_stream else 0
        payload = data
        if padding:
            flags |= 0x8
            payload = bytes([len(padding)]) + data + padding
        self.send(raw_frame(DATA, flags, stream_id, payload))

    def send_settings(self, *settings: tuple[int, int]) -> None:
        payload = b"".join(struct.pack(">HI", ident, value) for ident, value in settings)
        self.send(raw_frame(SETTINGS, 0, 0, payload))

    def send_settings_ack(self) -> None:
        self.send_frame(SettingsFrame(0, flags=["ACK"]))

    def send_ping(self, data: bytes = b"\0" * 8, *, ack: bool = False) -> None:
        self.send_frame(PingFrame(0, opaque_data=data, flags=["ACK"] if ack else []))

    def send_priority(self, stream_id: int, depends_on: int = 0, weight: int = 255, exclusive: bool = False) -> None:
        payload = struct.pack(">IB", depends_on | (0x80000000 if exclusive else 0), weight)
        self.send(raw_frame(PRIORITY, 0, stream_id, payload))

    def send_rst_stream(self, stream_id: int, code: int = CANCEL) -> None:
        self.send(raw_frame(RST_STREAM, 0, stream_id, struct.pack(">I", code)))

    def send_window_update(self, stream_id: int, increment: int) -> None:
        self.send(raw_frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment)))

    def send_goaway(self, last_stream_id: int = 0, code: int = NO_ERROR, debug: bytes = b"") -> None:
        self.send_frame(GoAwayFrame(0, last_stream_id=last_stream_id, error_code=code, additional_data=debug))

    def send_push_promise(self, stream_id: int, promised_stream_id: int, block: bytes | Sequence[Header]) -> None:
        if not isinstance(block, bytes):
            block = self.encode(block)
        frame = PushPromiseFrame(stream_id, promised_stream_id=promised_stream_id, data=block, flags=["END_HEADERS"])
        self.send_frame(frame)

    def send_request(self, stream_id: int = 1, method: str = "GET", body: bytes | None = None,
                     extra: Sequence[Header] = ()) -> None:
        """A whole request: HEADERS (+ one DATA when ``body`` is given)."""
        self.send_headers(stream_id, self.request_headers(method, extra=extra), end_stream=body is None)
        if body is not None:
            self.send_data(stream_id, body)

    # -- receiving -------------------------------------------------------------------------------------------

    def read_frame(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None after ``timeout`` seconds (default: the client's wait); Closed on EOF/reset."""
        header = self._read_exact(9, timeout)
        if header is None:
            return None
        try:
            frame, length = Frame.parse_frame_header(memoryview(header))
        except HyperframeError as exc:
            raise Verdict(f"server sent an unparseable frame header {header.hex()}: {exc}") from None
        body = self._read_exact(length, self.wait) if length else b""
        if body is None:
            raise Verdict(f"server sent a frame header announcing {length} octets and then stalled")
        try:
            frame.parse_body(memoryview(body))
        except HyperframeError as exc:
            raise Verdict(f"server sent a malformed {type(frame).__name__}: {exc}") from None
        self.received.append(frame)
        if isinstance(frame, DataFrame):
            self._return_credit(frame)
        return frame

    def frames(self, timeout: float | None = None) -> Iterable[Frame | None]:
        """Frames until the deadline; yields None once on timeout; stops silently when the server closes."""
        end = time.monotonic() + (self.wait if timeout is None else timeout)
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                yield None
                return
            try:
                frame = self.read_frame(remaining)
            except Closed:
                return
            yield frame
            if frame is None:
                return

    def _read_exact(self, size: int, timeout: float | None) -> bytes | None:
        if self.closed and len(self.buffer) < size:
            raise Closed()
        end = time.monotonic() + (self.wait if timeout is None else timeout)
        while len(self.buffer) < size:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError:  # ECONNRESET and friends: h2spec counts these as "connection closed"
                chunk = b""
            if not chunk:
                self.closed = True
                raise Closed()
            self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def _return_credit(self, frame: DataFrame) -> None:
        size = frame.flow_controlled_length
        for key in (frame.stream_id, 0):
            self.windows[key] = self.windows.get(key, DEFAULT_WINDOW) - size
            if self.windows[key] <= 0:
                increment = DEFAULT_WINDOW - self.windows[key]
                self.send_window_update(key, increment)
                self.windows[key] += increment

    def _seen(self, limit: int = 6) -> str:
        if not self.received:
            return "no frames"
        shown = ", ".join(describe(f) for f in self.received[-limit:])
        return f"{len(self.received)} frame(s), last: {shown}"

    # -- verdicts --------------------------------------------------------------------------------------------

    def expect(self, predicate: Callable[[Frame], bool], what: str, timeout: float | None = None) -> Frame:
        """Read until a frame satisfies ``predicate``; fail on timeout or close."""
        for frame in self.frames(timeout):
            if frame is None:
                raise Verdict(f"expected {what}; timed out after {self._seen()}")
            if predicate(frame):
                return frame
        raise Verdict(f"expected {what}; the connection was closed after {self._seen()}")

    def expect_frame(self, frame_type: type[F], stream_id: int | None = None, timeout: float | None = None) -> F:
        """h2spec's VerifyEventType (any stream) or VerifyHeadersFrame (``stream_id`` given)."""
        what = frame_type.__name__ + (f" on stream {stream_id}" if stream_id is not None else "")
        frame = self.expect(lambda f: isinstance(f, frame_type) and (stream_id is None or f.stream_id == stream_id),
                            what, timeout)
        return cast(F, frame)

    def expect_headers(self, stream_id: int) -> HeadersFrame:
        return self.expect_frame(HeadersFrame, stream_id)

    def expect_settings_ack(self) -> Frame:
        return self.expect(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags, "SETTINGS with ACK")

    def expect_ping_ack(self, data: bytes) -> PingFrame:
        """h2spec's VerifyPingFrameWithAck: the *first* PING to arrive must be the ACK carrying ``data``."""
        frame = self.expect_frame(PingFrame)
        if "ACK" not in frame.flags or bytes(frame.opaque_data) != data:
            raise Verdict(f"expected PING(ACK, data={data!r}); got {describe(frame)}")
        return frame

    def expect_ping_ack_or_close(self, data: bytes) -> None:
        """h2spec's VerifyPingFrameOrConnectionClose."""
        for frame in self.frames():
            if frame is None:
                raise Verdict(f"expected PING(ACK, data={data!r}) or connection close; timed out after "
                              f"{self._seen()}")
            if isinstance(frame, PingFrame) and "ACK" in frame.flags and bytes(frame.opaque_data) == data:
                return

    def expect_connection_error(self, *codes: int) -> None:
        """GOAWAY with one of ``codes``, or the connection closed (h2spec's VerifyConnectionError)."""
        for frame in self.frames():
            if frame is None:
                raise Verdict(f"expected connection error {'/'.join(map(error_name, codes))} (GOAWAY or close); "
                              f"timed out after {self._seen()}")
            if isinstance(frame, GoAwayFrame) and frame.error_code in codes:
                return

    def expect_stream_error(self, *codes: int) -> None:
        """RST_STREAM or GOAWAY with one of ``codes``, or the connection closed (h2spec's VerifyStreamError)."""
        for frame in self.frames():
            if frame is None:
                raise Verdict(f"expected stream error {'/'.join(map(error_name, codes))} (RST_STREAM, GOAWAY or "
                              f"close); timed out after {self._seen()}")
            if isinstance(frame, GoAwayFrame | RstStreamFrame) and frame.error_code in codes:
                return

    def expect_connection_closed(self) -> None:
        """EOF or reset, whatever frames come first (h2spec's VerifyConnectionClose)."""
        for frame in self.frames():
            if frame is None:
                raise Verdict(f"expected the connection to be closed; timed out after {self._seen()}")

    def expect_stream_closed(self, stream_id: int) -> None:
        """END_STREAM on DATA/HEADERS, or RST_STREAM(NO_ERROR), for ``stream_id`` (h2spec's VerifyStreamClose)."""

        def done(f: Frame) -> bool:
            if f.stream_id != stream_id:
                return False
            if isinstance(f, DataFrame | HeadersFrame):
                return "END_STREAM" in f.flags
            return isinstance(f, RstStreamFrame) and f.error_code == NO_ERROR

        self.expect(done, f"stream {stream_id} closed by the server (END_STREAM or RST_STREAM NO_ERROR)")

    def expect_data_length(self, stream_id: int, length: int) -> DataFrame:
        """The first DATA frame must carry exactly ``length`` octets (the flow-control cases)."""
        frame = self.expect_frame(DataFrame)
        if frame.stream_id != stream_id or len(frame.data) != length:
            raise Verdict(f"expected DATA(stream={stream_id}, length={length}); got {describe(frame)}")
        return frame


__all__ = [
    "CONTINUATION", "DATA", "GOAWAY", "HEADERS", "PING", "PRIORITY", "PUSH_PROMISE", "RST_STREAM", "SETTINGS",
    "WINDOW_UPDATE", "ContinuationFrame", "DataFrame", "GoAwayFrame", "H2Client", "HeadersFrame", "PingFrame",
    "PriorityFrame", "RstStreamFrame", "SettingsFrame", "Verdict", "WindowUpdateFrame", "dummy_headers",
    "hpack_int", "hpack_string", "raw_frame",
]
