"""aioquic's QuicConnection with receive windows the app's reading opens and a stream limit that can withhold
slots, and its H3Connection without a QPACK dynamic table or oversized HEADERS frames: what bascule needs of it.

aioquic raises a stream's receive limit (MAX_STREAM_DATA) on its own, doubling it whenever the peer has sent
more than half of it, whatever the application did with the bytes: a client could then push a request body
(or an endless HEADERS frame, which the HTTP/3 layer keeps until it is whole) as fast as it likes, and the
server would buffer it all. HTTP/2 in bascule gives window back only as the app reads (protocols/h2/stream.py);
this does the same for QUIC. :class:`PacedQuic` overrides the one method that writes MAX_STREAM_DATA (a
private aioquic method, ``_write_stream_limits``: aioquic has no public hook for it, so this is tied to its
internals and checked by tests/protocols/h3): a peer-opened stream's limit is what the connection has taken
off the stream (bytes delivered, less those still held: frame pieces in the HTTP/3 layer, body bytes the app
has not read) plus one window, raised only when that moves by half a window (not a frame per read).

The connection-level limit (MAX_DATA) is left to aioquic: it only grows as stream data arrives, and what can
arrive is bounded by the streams' limits times their number (MAX_STREAMS).

:class:`StaticQpackH3` advertises SETTINGS_QPACK_MAX_TABLE_CAPACITY 0 (and no blocked streams) instead of
aioquic's 4096. aioquic decodes a whole HEADERS frame before anything can look at the result, and a field
line that references a dynamic-table entry costs the client one byte while the entry may be 4 KB: a HEADERS
frame within the header limits would decode to gigabytes (a QPACK bomb; HTTP/2's HPACK decoder in bascule
stops at --limit-request-header-size, pylsqpack has no such bound). With the static table only, a field
line expands at most 69-fold (a two-byte reference to the longest static entry), so the 2x
--limit-request-header-size a partial HEADERS frame may declare (connection.py) decodes to a bounded list.
Clients then send literals (RFC 9204 permits a capacity of 0).

Both classes also answer what the connection (protocols/h3/connection.py) needs to know of aioquic's state and
that aioquic has no public call for (unacknowledged bytes, a stream's partial HEADERS frame, its GOAWAY): every
read of aioquic's internals the connection makes is here, next to the overrides tied to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pylsqpack
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import ErrorCode, FrameType, H3Connection, HeadersState, ProtocolError, encode_frame
from aioquic.h3.events import Headers
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, Limit, QuicConnection
from aioquic.quic.packet import QuicFrameType
from cryptography.hazmat.primitives.serialization import Encoding


def _nothing_held(stream_id: int) -> int:
    return 0


class PacedQuic(QuicConnection):
    """A server-side QuicConnection whose peer streams' receive windows follow the consumer (``held``)."""

    def __init__(self, *, window: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window = window
        self.credit = self._local_max_streams_bidi = StreamCredit(self._local_max_streams_bidi)
        self.held: Callable[[int], int] = _nothing_held
        """Bytes delivered on a stream and not consumed yet (set by the HTTP/3 connection)."""

    def limit_streams(self, bidi: int, uni: int) -> None:
        """The peer's stream limits, before the transport parameters are written; "sent" too, which aioquic
        compares with the value to decide when to raise the limit (MAX_STREAMS) as streams end."""
        for limit, value in ((self._local_max_streams_bidi, bidi), (self._local_max_streams_uni, uni)):
            limit.value = limit.sent = value

    @property
    def closing(self) -> bool:
        """Whether closing has begun (the peer's CONNECTION_CLOSE, or aioquic's own on a protocol error): its
        ConnectionTerminated event comes only once the closing period is over."""
        return self._close_event is not None

    def max_streams_due(self) -> bool:
        """Whether a raise of the request-stream limit waits to be written. aioquic frees a finished stream's
        slot while it writes packets, after it wrote MAX_STREAMS: without a second pass the new limit would
        wait for the next packet of ours, maybe never (the test is aioquic's own for writing MAX_STREAMS)."""
        streams = self._local_max_streams_bidi
        return streams.value > streams.sent and streams.sent - streams.used < streams.value - streams.sent

    def unacked(self, stream_id: int) -> int:
        """Bytes queued on our side of a stream that the peer has not acknowledged yet."""
        stream = self._streams.get(stream_id)
        return len(stream.sender._buffer) if stream is not None else 0

    def all_acknowledged(self) -> bool:
        """Whether the peer acknowledged every byte (and FIN) we queued on every stream: only then may a graceful
        close go out. A stream leaves the connection's table when its FIN is queued, and the packets follow at the
        end of the loop pass, later still if congestion control or the peer's window holds them; once
        CONNECTION_CLOSE is queued aioquic sends nothing else, and nothing lost is sent again, so closing on an
        empty table alone cut off the last response (or the GOAWAY) now and then. A peer that never
        acknowledges is bounded by the drain's --timeout-graceful-shutdown, or by the QUIC idle timeout."""
        for stream in self._streams.values():
            sender = stream.sender
            if sender._reset_error_code is not None:
                continue  # a reset stream's bytes are given up; RESET_STREAM itself need not arrive
            if sender._buffer or (sender._buffer_fin is not None and not sender._acked_fin):
                return False
        return True

    def peer_chain(self) -> tuple[list[bytes], int | None]:
        """The client's certificate chain (DER; empty without one) and the cipher suite, once negotiated."""
        tls = self.tls
        certs = [tls._peer_certificate] if tls._peer_certificate is not None else []
        chain = [cert.public_bytes(Encoding.DER) for cert in certs + list(tls._peer_certificate_chain)]
        schedule = tls.key_schedule
        return chain, int(schedule.cipher_suite) if schedule else None

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        # called for every stream in every packet aioquic writes: the common case costs two tests
        stream_id = stream.stream_id
        local = stream.max_stream_data_local
        if stream_id is None or not local or stream_id & 1:  # ours (or a crypto stream): aioquic's own way
            super()._write_stream_limits(builder, space, stream)
            return
        window = self.window
        offset = stream.receiver.starting_offset()
        if offset + window - local >= window // 2:  # worth raising if nothing were held: ask what is
            target = offset - self.held(stream_id) + window
            if target - local >= window // 2:
                stream.max_stream_data_local = local = target
        if stream.max_stream_data_local_sent != local:  # raised, or the last frame was lost
            buf = builder.start_frame(QuicFrameType.MAX_STREAM_DATA, capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                                      handler=self._on_max_stream_data_delivery, handler_args=(stream,))
            buf.push_uint_var(stream_id)
            buf.push_uint_var(local)
            stream.max_stream_data_local_sent = local


class StreamCredit(Limit):
    """The peer's request-stream limit (MAX_STREAMS), with slots withheld (protocols/h3/slots.py).

    aioquic raises the limit by one as each peer stream is discarded. A slot held for an app still running on
    a stream that is over on the wire must not be lowered from ``value`` directly: what was sent cannot be taken
    back (RFC 9000 4.6), and aioquic checks new streams against ``value``, so a client opening the streams it
    was granted would be closed with STREAM_LIMIT_ERROR. A withheld slot takes the next raise instead, and
    :meth:`give_back` returns it (or cancels the withholding, if no raise came yet).
    """

    def __init__(self, limit: Limit) -> None:
        self._value = limit.value
        self.withheld = 0  # raises still to take
        self.taken = 0  # raises taken, owed back
        super().__init__(limit.frame_type, limit.name, limit.value)
        self.sent, self.used = limit.sent, limit.used

    @property
    def value(self) -> int:
        return self._value

    @value.setter
    def value(self, value: int) -> None:
        if self.withheld and value > self._value:
            take = min(self.withheld, value - self._value)
            self.withheld -= take
            self.taken += take
            value -= take
        self._value = value

    def withhold(self) -> None:
        self.withheld += 1

    def give_back(self) -> None:
        if self.withheld:
            self.withheld -= 1
        elif self.taken:
            self.taken -= 1
            self._value += 1


class HeadersFrameTooLarge(ProtocolError):
    error_code = ErrorCode.H3_EXCESSIVE_LOAD


class StaticQpackH3(H3Connection):
    """aioquic's HTTP/3 layer with a QPACK decoder that keeps no dynamic table (see the module docstring), and
    that decodes no HEADERS frame over ``max_headers_frame`` bytes.

    The connection refuses a stream whose HEADERS frame is declared too large while it is incomplete; one that
    arrives whole (in one packet, or in pieces sent out of order) reaches the decoder at once, and was decoded
    up to the stream window. Here it ends the connection (H3_EXCESSIVE_LOAD) before decoding.
    """

    max_headers_frame = 0  # 0: no bound (the connection sets it)

    def _decode_headers(self, stream_id: int, frame_data: bytes | None) -> Headers:
        limit = self.max_headers_frame
        if limit and frame_data is not None and len(frame_data) > limit:
            raise HeadersFrameTooLarge(f"a HEADERS frame of {len(frame_data)} bytes")
        return super()._decode_headers(stream_id, frame_data)

    def _init_connection(self) -> None:
        # called at the end of H3Connection.__init__, before the SETTINGS frame is written from these
        self._max_table_capacity = 0
        self._blocked_streams = 0
        self._decoder = pylsqpack.Decoder(0, 0)
        super()._init_connection()

    def pending_head(self, stream_id: int) -> int | None:
        """For a request stream whose first HEADERS frame has not arrived whole: the size that frame declares
        (0 while unknown). None once it has arrived, or without a record of the stream (reset, or answered)."""
        stream = self._stream.get(stream_id)
        if stream is None or stream.headers_recv_state is not HeadersState.INITIAL:
            return None
        return (stream.frame_size or 0) if stream.frame_type == FrameType.HEADERS else 0

    def first_headers(self, stream_id: int) -> bool:
        """Whether the HEADERS just decoded on a stream are its request head (not trailers, not a stream
        already forgotten)."""
        stream = self._stream.get(stream_id)
        return stream is not None and stream.headers_recv_state is HeadersState.AFTER_HEADERS

    def buffered(self, stream_id: int) -> int:
        """Bytes of a stream's frame pieces kept until they are whole."""
        stream = self._stream.get(stream_id)
        return len(stream.buffer) if stream is not None else 0

    def sent_all(self, stream_id: int) -> None:
        """Our side of a stream was reset behind this layer (it has no call for that): marked ended here, so its
        record goes once the client's side ends too, as after a FIN of ours. Without this every stream we reset
        would stay in the table for the connection's lifetime."""
        stream = self._stream.get(stream_id)
        if stream is not None:
            stream.sending_ended = True
            if stream.is_ended():
                del self._stream[stream_id]

    def send_goaway(self, stream_id: int) -> bool:
        """An HTTP/3 GOAWAY (RFC 9114 5.2) naming the first request stream that will not be taken. This layer has
        no call to send one, so the frame is written on its control stream with aioquic's own frame helpers.
        False before the control stream exists."""
        control = self._local_control_stream_id
        if control is None:
            return False
        self._quic.send_stream_data(control, encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id)))
        return True
