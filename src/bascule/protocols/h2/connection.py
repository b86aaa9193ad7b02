"""HTTP/2 (RFC 9113) for one connection: frames in, streams dispatched, responses out under flow control.

Our own engine rather than the ``h2`` library's state machine: h2 spends ~130 us of Python per request
(events, validators, its own HPACK encoder), which caps a core at ~7k requests/s; this engine parses
frame headers with one ``struct`` call, keeps per-stream state in :class:`H2Stream` attributes, and takes
HPACK from the ``hpack`` library behind a cache (protocols/h2/headers.py). Conformance is held to the same
bar by the h2spec-derived suite in tests/protocols/h2/h2spec. This module reads frames and keeps the streams'
lifecycle and the budgets; the writing half (queued frames, DATA under flow control, lingering closes) is
:class:`~bascule.protocols.h2.output.H2Output`, which the connection inherits; SETTINGS, PING, PRIORITY and the
graceful GOAWAY are protocols/h2/control.py's; starting apps and the tick's deadlines, protocols/stream_table.py's.

What a client can make us spend is bounded: header blocks (HEADERS + CONTINUATION) by size and frame
count, decoded header lists by ``limit_request_header_size`` (HPACK bombs), buffered request bodies by the
stream windows we advertise, and frames that cost work but carry no request - RST_STREAM for open
streams (CVE-2023-44487 "rapid reset"), stream errors we are made to answer ("MadeYouReset"), PING,
SETTINGS, PRIORITY, empty DATA - by budgets per tick; a client over budget gets GOAWAY
(ENHANCE_YOUR_CALM) and the connection closes. Reading pauses while our writes are paused, so a client
that sends PINGs without reading the answers stops being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import Any, TypeVar, cast

from bascule.context import ServerContext
from bascule.protocols.exchange import describe_peer, peer_address
from bascule.protocols.h2 import control
from bascule.protocols.h2 import frames as fr
from bascule.protocols.h2.control import CONN_WINDOW
from bascule.protocols.h2.frames import ConnectionError_, StreamError
from bascule.protocols.h2.headers import (
    MalformedRequest,
    RequestDecoder,
    RequestHead,
)
from bascule.protocols.h2.output import COALESCE_LIMIT, H2Output
from bascule.protocols.h2.states import StreamState, local_open, remote_open
from bascule.protocols.h2.stream import H2Stream
from bascule.protocols.outbox import Outbox
from bascule.protocols.semantics import body_over_limit
from bascule.protocols.stream_exchange import StreamExchange
from bascule.protocols.stream_table import (
    RESETS_PER_TICK,
    app_deadlines,
    dispatch,
    refuse_stalled_body,
    release_writer,
    stalled_bodies,
)

_log = logging.getLogger("bascule.error")
_S = TypeVar("_S", bound=H2Stream)
_unpack_header = fr.HEADER.unpack_from
_U32 = struct.Struct(">L").unpack_from

CONTROL_PER_TICK = 2000  # PING, SETTINGS, PRIORITY, WINDOW_UPDATE, empty DATA, unknown frames per tick
MAX_BLOCK_FRAMES = 64  # CONTINUATION frames in one header block
REMEMBERED_RESETS = 1024  # streams we reset, whose late frames are dropped quietly


class H2Connection(H2Output, asyncio.Protocol):
    """One HTTP/2 connection, from the client preface to GOAWAY."""

    def __init__(self, ctx: ServerContext, scheme: str = "http", tls: dict[str, Any] | None = None, *,
                 client: tuple[str, int] | None = None, server: tuple[str, int] | None = None,
                 proxy_header: Any = None) -> None:
        """``client``, ``server`` and ``proxy_header``: a connection HTTP/1.1 hands over after a PROXY protocol
        header (listen/accept.py) keeps the endpoints the header gave; without a header, the socket's are read
        in connection_made."""
        self.ctx = ctx
        self.loop = ctx.loop
        self.scheme = scheme
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = client
        self.server: tuple[str, int] | None = server
        self.proxy_header: Any = proxy_header  # the PROXY header (listen/) whose endpoints replaced the socket's
        self.streams: dict[int, H2Stream] = {}
        self.last_stream_id = 0
        self.closed = False
        self.goaway_sent = False
        self.write_paused = False
        self.idle_since: float | None = None
        self.max_streams = ctx.h2_max_concurrent_streams
        self.configured_window = ctx.h2_initial_window_size
        self.local_initial_window = fr.DEFAULT_WINDOW  # until the client acknowledges our SETTINGS
        self.peer_initial_window = fr.DEFAULT_WINDOW
        self.peer_max_frame = fr.DEFAULT_MAX_FRAME
        self.send_window = fr.DEFAULT_WINDOW
        self.recv_window = CONN_WINDOW
        self._conn_unacked = 0
        self.connect_protocol = ctx.websocket_route is not None and ctx.upgrades.websocket_over_stream is not None
        self.decoder = RequestDecoder(ctx.limit_request_header_size, connect_protocol=self.connect_protocol)
        self._buf = b""
        self._preface = True  # the client preface has not arrived yet
        self._settings_first = True  # ... nor its first SETTINGS frame
        self._settings_pending = 0  # our SETTINGS frames not yet acknowledged
        self._hblock: list[bytes] | None = None  # header block in progress (HEADERS then CONTINUATION)
        self._hstream = 0
        self._hflags = 0
        self._hsize = 0
        self._hsince = 0.0
        self._hprio_error = False
        self._reset_by_us: dict[int, None] = {}
        self._blocked: dict[int, H2Stream] = {}  # streams with DATA waiting for window
        self._yielded: dict[int, H2Stream] = {}  # streams waiting for their next turn to send (h2/output.py)
        self._turns: set[int] = set()  # streams woken for this round that have not sent yet
        self._round_scheduled = False
        self._pump_due = False  # a WINDOW_UPDATE in this read opened a window some waiting DATA needs
        self.ack_allowance = 0  # WINDOW_UPDATEs not charged as control frames: ACKS_PER_DATA per DATA sent
        self._orphans: dict[int, H2Stream] = {}  # reset by the client, app still running
        self._to_dispatch: list[StreamExchange] = []  # heads complete, apps not started (data_received)
        # frames queued for the end of the loop pass; dropped once the transport is closing
        self.outbox = Outbox(ctx.loop, COALESCE_LIMIT, skip_closing=True, end_of_pass=ctx.end_of_pass)
        self._resets = 0
        self._control = 0
        self._fixed_src = b""
        self._fixed_block = b""
        self._since = 0.0
        self._goaway_at = 0.0
        self._announced: int | None = None  # the last-stream-id of our first GOAWAY
        self._body_marks: dict[StreamExchange, tuple[int, float]] = {}  # --timeout-body-idle (on_tick)

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.outbox.transport = cast(asyncio.Transport, transport)
        if self.proxy_header is None:  # else the endpoints a PROXY header gave (handed over in __init__)
            self.client = peer_address(transport.get_extra_info("peername"))
            self.server = peer_address(transport.get_extra_info("sockname"))
        self.idle_since = self._since = self.loop.time()
        self.ctx.connections.add(self)
        self.outbox.write(control.local_settings(self))
        if self.ctx.shutting_down:
            control.start_goaway(self)

    def upgraded(self, head: RequestHead, client_settings: bytes) -> None:
        """After ``Upgrade: h2c``: the client's HTTP2-Settings apply, and its request is stream 1.

        Stream 1's app starts once the client's preface arrives (data_received dispatches it), not at once:
        a client reads the 101 and what follows it in one buffer (curl: 32 KiB, then "connection buffer
        size is too small ... following HTTP Upgrade"), and it sends its preface only after the 101, so
        waiting for the preface keeps the response out of that buffer. The head deadline still applies.
        """
        try:
            control.apply_peer_settings(self, client_settings)
        except ConnectionError_ as exc:
            self._connection_error(exc.code, str(exc))
            return
        self.last_stream_id = 1
        self._open_stream(1, head, True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.outbox.detach()  # nothing more is written; and it lets go of its bound flush (a cycle)
        self.ctx.connections.discard(self)
        streams = list(self.streams.values())
        self.streams.clear()
        self._blocked.clear()
        self._yielded.clear()
        self._turns.clear()
        for st in streams:
            self._dropped(st)
            st.state = StreamState.CLOSED  # both sides are gone (a WebSocket stream checks)
            st.on_disconnect()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._buf:
            data = self._buf + data
            self._buf = b""
        try:
            pos = 0
            if self._preface:
                if len(data) < len(fr.PREFACE):
                    if not fr.PREFACE.startswith(data):
                        raise ConnectionError_(fr.PROTOCOL_ERROR, "invalid connection preface")
                    self._buf = data
                    return
                if not data.startswith(fr.PREFACE):
                    raise ConnectionError_(fr.PROTOCOL_ERROR, "invalid connection preface")
                self._preface = False
                pos = len(fr.PREFACE)
            end = len(data)
            while end - pos >= 9:
                hi, lo, ftype, flags, sid = _unpack_header(data, pos)
                length = hi << 16 | lo
                if length > fr.DEFAULT_MAX_FRAME:
                    raise ConnectionError_(fr.FRAME_SIZE_ERROR, f"frame of {length} bytes is over the maximum")
                if end - pos - 9 < length:
                    break
                payload = data[pos + 9:pos + 9 + length]
                pos += 9 + length
                sid &= 0x7FFFFFFF
                if self._settings_first:
                    if ftype != fr.SETTINGS or flags & fr.ACK:
                        raise ConnectionError_(fr.PROTOCOL_ERROR, "the client's first frame must be SETTINGS")
                    self._settings_first = False
                try:
                    if self._hblock is not None:
                        if ftype != fr.CONTINUATION:
                            raise ConnectionError_(fr.PROTOCOL_ERROR, "a header block was interrupted by another frame")
                        self._on_continuation(flags, sid, payload)
                    elif ftype == fr.HEADERS:
                        self._on_headers(flags, sid, payload)
                    elif ftype == fr.DATA:
                        self._on_data(flags, sid, payload)
                    elif ftype == fr.WINDOW_UPDATE:
                        self._on_window_update(sid, payload)
                    elif ftype == fr.RST_STREAM:
                        self._on_rst_stream(sid, payload)
                    elif ftype == fr.SETTINGS:
                        control.on_settings(self, flags, sid, payload)
                    elif ftype == fr.PING:
                        control.on_ping(self, flags, sid, payload)
                    elif ftype == fr.PRIORITY:
                        control.on_priority(self, sid, payload)
                    elif ftype == fr.GOAWAY:
                        if sid != 0:
                            raise ConnectionError_(fr.PROTOCOL_ERROR, "GOAWAY on a stream")
                        control.start_goaway(self)
                    elif ftype == fr.CONTINUATION:
                        raise ConnectionError_(fr.PROTOCOL_ERROR, "CONTINUATION without a header block")
                    elif ftype == fr.PUSH_PROMISE:
                        raise ConnectionError_(fr.PROTOCOL_ERROR, "a client cannot push")
                    else:
                        self._charge_control()  # unknown frame types are ignored (RFC 9113 5.5), but not free
                except StreamError as stream_error:  # one name per handler (compiled: one type)
                    self._stream_error(stream_error)
                if self.closed:
                    return
            if pos < end:
                self._buf = data[pos:]
        except ConnectionError_ as exc:
            self._connection_error(exc.code, str(exc))
            return
        if self._pump_due:
            # Waiting DATA leaves once per read, not once per WINDOW_UPDATE: a client that gives window
            # back in small pieces (per frame, per recv) would otherwise get frames of the pieces' size,
            # and answer those with smaller pieces still.
            self._pump_due = False
            self._pump()
        if self._to_dispatch:  # the apps start after the whole read: a small request's body is complete by then
            ready, self._to_dispatch = self._to_dispatch, []
            dispatch(self.ctx, ready, self.loop.time())

    def eof_received(self) -> bool | None:
        return None

    # -- frames -------------------------------------------------------------------------------------
    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or not sid & 1:
            raise ConnectionError_(fr.PROTOCOL_ERROR, f"HEADERS on stream {sid}, which a client cannot open")
        if flags & fr.PADDED:
            payload = fr.unpad(payload)
        prio_error = False
        if flags & fr.PRIORITY_FLAG:
            if len(payload) < 5:
                raise ConnectionError_(fr.FRAME_SIZE_ERROR, "HEADERS too short for its priority fields")
            prio_error = _U32(payload)[0] & 0x7FFFFFFF == sid
            payload = payload[5:]
        if flags & fr.END_HEADERS:
            self._header_block(sid, payload, flags, prio_error)
            return
        self._hblock = [payload]
        self._hstream = sid
        self._hflags = flags
        self._hsize = len(payload)
        self._hsince = self.loop.time()
        self._hprio_error = prio_error

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        block = self._hblock
        if block is None or sid != self._hstream:
            raise ConnectionError_(fr.PROTOCOL_ERROR, "CONTINUATION on another stream than its HEADERS")
        block.append(payload)
        self._hsize += len(payload)
        if self._hsize > self.ctx.limit_request_header_size or len(block) > MAX_BLOCK_FRAMES:
            raise ConnectionError_(fr.ENHANCE_YOUR_CALM, "header block too large or in too many frames")
        if flags & fr.END_HEADERS:
            self._hblock = None
            self._header_block(sid, b"".join(block), self._hflags, self._hprio_error)

    def _header_block(self, sid: int, block: bytes, flags: int, prio_error: bool) -> None:
        end_stream = bool(flags & fr.END_STREAM)
        st = self.streams.get(sid)
        if st is not None:
            self._trailers(st, block, end_stream)
            return
        if sid <= self.last_stream_id:
            self._charge_control(1 + len(block) // 1024)  # decoded for nothing: paid like a control frame
            self._decode_quietly(block)
            if sid in self._reset_by_us:
                return
            raise ConnectionError_(fr.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
        self.last_stream_id = sid
        try:
            head = self.decoder.request(block)  # HPACK failures raise connection errors themselves
        except MalformedRequest as exc:
            raise StreamError(sid, fr.PROTOCOL_ERROR, f"malformed request: {exc}") from None
        if prio_error:
            raise StreamError(sid, fr.PROTOCOL_ERROR, "stream depends on itself")
        if self.goaway_sent:
            self._remember_reset(sid)
            return  # after GOAWAY: not processed (the client may retry it elsewhere)
        if len(self.streams) + (self._live_orphans() if self._orphans else 0) >= self.max_streams:
            raise StreamError(sid, fr.REFUSED_STREAM, "over SETTINGS_MAX_CONCURRENT_STREAMS")
        self._open_stream(sid, head, end_stream)

    def _orphan_if_running(self, st: H2Stream) -> None:
        """A stream that leaves the table while its app still runs keeps its slot until the app returns."""
        if st.app_task is not None and not st.app_task.done():
            self._orphans[st.stream_id] = st

    def _live_orphans(self) -> int:
        """Streams the client reset whose apps have not returned yet (rapid reset: they still cost)."""
        orphans = self._orphans
        for sid in [sid for sid, st in orphans.items() if st.app_task is None or st.app_task.done()]:
            del orphans[sid]
        return len(orphans)

    def _open_stream(self, sid: int, head: RequestHead, end_stream: bool) -> H2Stream:
        if head.protocol is not None:
            return self._open_websocket(sid, head, end_stream)
        st = self._register(H2Stream(self, sid, head))
        if end_stream:
            st.end_body()
            if head.content_length:
                raise StreamError(sid, fr.PROTOCOL_ERROR, "content-length without a body")
        if head.method == "CONNECT":  # plain CONNECT (an extended one has a :protocol)
            st.take_on(self.ctx)
            st.send_simple(405, b"Method Not Allowed: this server is not a proxy\n")
            return st
        limit = self.ctx.limit_request_body
        if limit is not None and head.content_length is not None and head.content_length > limit:
            st.take_on(self.ctx)
            self._body_over_limit(st, limit, head.content_length)
            return st
        self._to_dispatch.append(st)
        return st

    def _body_over_limit(self, st: H2Stream, limit: int, declared: int | None) -> None:
        """Refuse a body over --limit-request-body: 413 if the app has not answered yet, else a reset; logged
        like HTTP/1.1's refusals, naming the option."""
        reason = body_over_limit(limit, declared)
        _log.info("rejected a request from %s on HTTP/2 stream %d: %s (413)", describe_peer(self.client),
                  st.stream_id, reason)
        if st.response_started:
            raise StreamError(st.stream_id, fr.CANCEL, reason)
        st.send_simple(413, f"Payload Too Large: {reason}\n".encode())

    def _open_websocket(self, sid: int, head: RequestHead, end_stream: bool) -> H2Stream:
        """An extended CONNECT (RFC 8441): a WebSocket on this stream, if an ASGI app serves the path."""
        from bascule.protocols.h2.websocket import H2WSStream  # imported on the first WebSocket only

        route = self.ctx.websocket_route
        handler = (route(head.raw_path) if route is not None and head.protocol == b"websocket"
                   and self.ctx.upgrades.websocket_over_stream is not None else None)
        if handler is None or end_stream:
            st = self._register(H2Stream(self, sid, head))
            if end_stream:
                st.end_body()
            st.take_on(self.ctx)
            if head.protocol != b"websocket":
                st.send_simple(501, b"Not Implemented: unknown :protocol\n")
            else:
                st.send_simple(404 if not end_stream else 400, b"No WebSocket endpoint here\n")
            return st
        ws = self._register(H2WSStream(self, sid, head))
        ws.start_time = self.loop.time()  # the session reports its handshake to the observers
        ws.start_websocket(handler)
        return ws

    def _register(self, st: _S) -> _S:
        """A new stream enters the table: the connection is busy."""
        self.streams[st.stream_id] = st
        self.idle_since = None
        return st

    def _trailers(self, st: H2Stream, block: bytes, end_stream: bool) -> None:
        if not remote_open(st.state):
            self._decode_quietly(block)
            raise StreamError(st.stream_id, fr.STREAM_CLOSED, "HEADERS after the request ended")
        try:
            self.decoder.trailers(block)
        except MalformedRequest as exc:
            raise StreamError(st.stream_id, fr.PROTOCOL_ERROR, f"malformed trailers: {exc}") from None
        if not end_stream:
            raise StreamError(st.stream_id, fr.PROTOCOL_ERROR, "trailers without END_STREAM")
        self._end_request(st)

    def _decode_quietly(self, block: bytes) -> None:
        """Decode a block only to keep the HPACK state in step (its request is not served)."""
        with contextlib.suppress(MalformedRequest):
            self.decoder.trailers(block)

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionError_(fr.PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        data = fr.unpad(payload) if flags & fr.PADDED else payload
        self.recv_window -= length
        if self.recv_window < 0:
            raise ConnectionError_(fr.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._conn_unacked += length
        if self._conn_unacked >= CONN_WINDOW // 2:
            self.outbox.write(fr.window_update(0, self._conn_unacked))
            self.recv_window += self._conn_unacked
            self._conn_unacked = 0
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_stream_id:
                raise ConnectionError_(fr.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            if sid in self._reset_by_us:
                self._charge_control()  # late DATA after our reset is allowed, but not free
                return
            raise ConnectionError_(fr.STREAM_CLOSED, f"DATA on closed stream {sid}")
        state = st.state
        if state is not StreamState.OPEN and state is not StreamState.HALF_CLOSED_LOCAL:  # not remote_open
            raise StreamError(sid, fr.STREAM_CLOSED, "DATA after the request ended")
        st.recv_window -= length
        if st.recv_window < 0:
            raise StreamError(sid, fr.FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        if length != len(data):
            self.credit_stream(st, length - len(data))  # padding is never buffered
        if not data and not flags & fr.END_STREAM:
            self._charge_control()
        expected = st.content_length
        if expected is not None and st.received + len(data) > expected:
            raise StreamError(sid, fr.PROTOCOL_ERROR, "more DATA than content-length")
        limit = self.ctx.limit_request_body
        if limit is not None and st.received + len(data) > limit and not st.websocket:
            self._body_over_limit(st, limit, None)  # the 413 resets the upload; the app sees a disconnect
            return
        st.feed(data)
        if flags & fr.END_STREAM:
            if expected is not None and st.received != expected:
                raise StreamError(sid, fr.PROTOCOL_ERROR, "less DATA than content-length")
            self._end_request(st)

    def _end_request(self, st: H2Stream) -> None:
        st.end_body()  # RECV_END_STREAM
        if st.state is StreamState.CLOSED:
            self._forget(st)

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(fr.FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = _U32(payload)[0] & 0x7FFFFFFF
        if self.ack_allowance > 0:
            self.ack_allowance -= 1  # giving back window for DATA we sent: what every client does
        else:
            self._charge_control()
        if sid == 0:
            if increment == 0:
                raise ConnectionError_(fr.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > fr.MAX_WINDOW:
                raise ConnectionError_(fr.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            if self._blocked:
                self._pump_due = True
            return
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_stream_id:
                raise ConnectionError_(fr.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # closed: a late update is harmless
        if increment == 0:
            raise StreamError(sid, fr.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        st.send_window += increment
        if st.send_window > fr.MAX_WINDOW:
            raise StreamError(sid, fr.FLOW_CONTROL_ERROR, "stream window over 2^31-1")
        if st.pending is not None:
            self._pump_due = True  # once the whole read is handled: its increments add up to one frame

    def _on_rst_stream(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(fr.FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        if sid == 0:
            raise ConnectionError_(fr.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if sid > self.last_stream_id:
            raise ConnectionError_(fr.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        st = self.streams.pop(sid, None)
        if st is None:
            self._charge_control()
            return
        self._blocked.pop(sid, None)
        st.state = StreamState.CLOSED  # RECV_RST_STREAM
        st.cancelled = True
        if not st.finished:
            self._charge_reset()  # the work spent on it is lost: rapid reset counts these
            self._dropped(st)
            self._orphan_if_running(st)
        st.on_disconnect()  # not remembered as reset by us: later frames on it are STREAM_CLOSED (RFC 9113 5.1)
        self._note_idle()

    # -- budgets and errors -------------------------------------------------------------------------
    def _charge_control(self, units: int = 1) -> None:
        self._control += units
        if self._control > CONTROL_PER_TICK:
            raise ConnectionError_(fr.ENHANCE_YOUR_CALM, "too many control frames")

    def _charge_reset(self) -> None:
        self._resets += 1
        if self._resets > RESETS_PER_TICK:
            raise ConnectionError_(fr.ENHANCE_YOUR_CALM, "too many streams reset")

    def _stream_error(self, exc: StreamError) -> None:
        sid = exc.stream_id
        _log.debug("HTTP/2 stream %d of %s reset: %s", sid, describe_peer(self.client), exc)
        st = self.streams.get(sid)
        if st is not None:
            self.reset_stream(st, exc.code)
            if not st.finished:
                st.finished = True
                self._dropped(st)
            self._orphan_if_running(st)
            st.on_disconnect()
        else:
            self.outbox.write(fr.rst_stream(sid, exc.code))
            self._remember_reset(sid)
        if sid > self.last_stream_id:
            self.last_stream_id = sid
        try:
            self._charge_reset()  # "MadeYouReset": resets we are made to send count as well
        except ConnectionError_ as calm:
            self._connection_error(calm.code, str(calm))

    def _connection_error(self, code: int, message: str) -> None:
        _log.info("HTTP/2 connection from %s closed: %s", describe_peer(self.client), message)
        if not self.closed:
            self.goaway_sent = True
            self.outbox.write(self._goaway(code, message.encode("ascii", "replace")[:200]))
            self._linger_close()

    def _remember_reset(self, sid: int) -> None:
        reset = self._reset_by_us
        reset[sid] = None
        if len(reset) > REMEMBERED_RESETS:
            del reset[next(iter(reset))]

    # -- dispatch and completion --------------------------------------------------------------------
    def response_done(self, st: H2Stream, aborted: bool = False) -> None:
        """Called by the stream once its response is complete (or given up): report it, free its slot."""
        if not st.websocket:  # a WebSocket's exchange is its handshake, reported by the session
            self.ctx.request_finished(st)

    def _dropped(self, st: H2Stream) -> None:
        """The client went away from ``st`` before its response was complete (a reset, a stream error, the
        connection lost). A WebSocket's session reports its handshake itself, when the stream closes."""
        if not st.websocket:
            self.ctx.request_finished(st, dropped=True)

    def _forget(self, st: H2Stream) -> None:
        """Both sides are done: the stream leaves the table (its id stays "closed")."""
        if self.streams.pop(st.stream_id, None) is not None:
            self.forget_turn(st.stream_id)
            release_writer(st)  # resume_writing only wakes streams still in the table
            self._note_idle()

    def _note_idle(self) -> None:
        if not self.streams:
            self.idle_since = self.loop.time()
            if self.goaway_sent:
                self._linger_close()

    # -- stream completion ---------------------------------------------------------------------------
    def _end_local(self, st: H2Stream) -> None:
        """SEND_END_STREAM: called by the output half once the END_STREAM flag is written."""
        if st.state is StreamState.HALF_CLOSED_REMOTE:
            st.state = StreamState.CLOSED
            self._forget(st)
            return
        st.state = StreamState.HALF_CLOSED_LOCAL
        # The response is complete but the client is still sending a body nobody will read:
        # RST_STREAM (NO_ERROR) tells it to stop (RFC 9113 8.1), so half-closed (local) does not last.
        self.outbox.write(fr.rst_stream(st.stream_id, fr.NO_ERROR))
        st.state = StreamState.CLOSED  # SEND_RST_STREAM
        self._remember_reset(st.stream_id)
        self._forget(st)
        self._orphan_if_running(st)
        if not st.body_done:
            st.on_disconnect()  # an app still reading the body would wait for bytes that never come

    def reset_stream(self, st: H2Stream, code: int) -> None:
        """SEND_RST_STREAM (written only while our side is open: after our END_STREAM it would say nothing)."""
        if local_open(st.state) and not self.closed:
            self.outbox.write(fr.rst_stream(st.stream_id, code))
        st.state = StreamState.CLOSED
        self._blocked.pop(st.stream_id, None)
        st.pending = None
        self._remember_reset(st.stream_id)
        self._forget(st)

    def force_close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- server-driven ------------------------------------------------------------------------------
    def on_tick(self, now: float) -> None:
        """Twice a second: budgets refill, idle and slow clients are closed, app deadlines checked."""
        if self.closed:
            return
        self._resets = 0
        self._control = 0
        ctx = self.ctx
        if ctx.shutting_down:
            control.start_goaway(self)
            return
        if self._preface or self._settings_first:
            if now - self._since > ctx.timeout_request_head:
                self._connection_error(fr.PROTOCOL_ERROR, "no connection preface within timeout_request_head")
            return
        if self._hblock is not None and now - self._hsince > ctx.timeout_request_head:
            self._connection_error(fr.PROTOCOL_ERROR, "header block not complete within timeout_request_head")
            return
        idle = self.idle_since
        if idle is not None and not self.streams and now - idle > ctx.keep_alive_timeout:
            control.start_goaway(self)
            return
        if not self.streams:
            self._body_marks.clear()
            return
        for stalled in stalled_bodies(list(self.streams.values()), self._body_marks, now, ctx.timeout_body_idle):
            self._body_timed_out(cast(H2Stream, stalled), ctx.timeout_body_idle)
        if ctx.timeout_request is not None:
            app_deadlines(list(self.streams.values()), now, ctx.timeout_request)

    def _body_timed_out(self, st: H2Stream, timeout: float) -> None:
        """--timeout-body-idle: the app waited for request body bytes that did not come; this stream ends, the
        connection and its other streams go on, and the app sees a disconnect.

        Before the response started: 408, whose END_STREAM is followed by RST_STREAM (NO_ERROR) telling the
        client to stop the upload (RFC 9113 8.1, as for any response complete before its request; _end_local),
        which is what nginx's client_body_timeout answers too. Once it started (or if the 408 is held back by
        the client's window): RST_STREAM (CANCEL: the stream is no longer needed, RFC 9113 7)."""
        refuse_stalled_body(st, st.stream_id, describe_peer(self.client), timeout)
        if local_open(st.state) or not st.disconnected:
            self.reset_stream(st, fr.CANCEL)
            if not st.finished:
                st.finished = True
                self._dropped(st)
            self._orphan_if_running(st)
            st.on_disconnect()
