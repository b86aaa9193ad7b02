"""One HTTP/3 connection: a QUIC connection (aioquic), its HTTP/3 layer, and the request streams on it.

The endpoint (protocols/h3/endpoint.py) routes datagrams here; this feeds them to aioquic, turns its events
into streams (protocols/h3/stream.py), sends what aioquic has to send, and keeps one timer (``loop.call_at``,
moved after every send) for aioquic's loss detection, acknowledgements and idle timeout. Neither a datagram
read nor a stream's write sends at once: the connection builds packets once per loop pass
(:meth:`H3Conn.schedule_flush`), so the acknowledgement of the requests read in a pass, their answers and
other streams' data share packets. Building packets is most of aioquic's cost per request (it walks every
stream for each packet): one flush per datagram, as aioquic's own asyncio protocol does, measured about
twice the CPU per small request (docs/benchmarks.md, "HTTP/3").

As a :class:`bascule.context.Connection` it is in ``ctx.connections`` from its first Initial to its close, so
--limit-connections counts it and the server's drain loop ticks it: a graceful stop (or the endpoint's
close()) sends an HTTP/3 GOAWAY and the connection closes once its streams are done and their bytes
acknowledged; an idle connection is closed after --timeout-keep-alive the same way; force_close() closes it at
once.

Limits are HTTP/2's: concurrent streams are QUIC's MAX_STREAMS (``ctx.h2_max_concurrent_streams``), and a
stream the client cancels, or makes us reset, keeps its slot while its app still runs (protocols/h3/slots.py);
request heads over the operator's limits get 431; bodies over --limit-request-body 413; receive windows follow
the app's reading (protocols/h3/quic.py); unacknowledged response bytes pause the stream
(protocols/h3/stream.py); streams the client cancels or makes us reset per tick are budgeted. What it needs to
know of aioquic's state is asked of protocols/h3/quic.py's subclasses; starting apps and the tick's deadlines
are protocols/stream_table.py's, as HTTP/2's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

from aioquic.h3.connection import ErrorCode, ProtocolError
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as qe

from bascule.protocols.exchange import Headers, describe_peer, peer_address
from bascule.protocols.h3.headers import (
    Limits,
    MalformedRequest,
    RequestHead,
    TooLarge,
    check_size,
    check_trailers,
    fixed_fields,
    parse_request,
)
from bascule.protocols.h3.quic import PacedQuic, StaticQpackH3
from bascule.protocols.h3.slots import StreamSlots
from bascule.protocols.h3.stream import SEND_BUFFER, H3Stream
from bascule.protocols.semantics import body_over_limit
from bascule.protocols.stream_exchange import StreamExchange
from bascule.protocols.stream_table import app_deadlines, dispatch, refuse_stalled_body, release_writer, stalled_bodies

if TYPE_CHECKING:
    from bascule.protocols.h3.endpoint import QuicServer

_log = logging.getLogger("bascule.error")

GOAWAY_GRACE = 0.25  # seconds between a GOAWAY and closing a connection with no streams (as HTTP/2's)
MAX_PEER_UNI_STREAMS = 8  # HTTP/3 needs 3 from a client (control, QPACK encoder and decoder)
# what aioquic raises on a send to a stream already ended or reset
_SEND_ERRORS: tuple[type[Exception], ...] = (ProtocolError, ValueError, AssertionError)


class H3Conn:
    """One QUIC connection carrying HTTP/3, from the client's first Initial to CONNECTION_CLOSE."""

    def __init__(self, endpoint: QuicServer, quic: PacedQuic, addr: Any) -> None:
        ctx = endpoint.ctx
        self.endpoint = endpoint
        self.ctx = ctx
        self.loop = ctx.loop
        self.quic = quic
        quic.held = self._held
        quic.limit_streams(ctx.h2_max_concurrent_streams, MAX_PEER_UNI_STREAMS)
        self.h3: StaticQpackH3 | None = None
        self.client = peer_address(addr)
        self.server = endpoint.address
        self.tls: dict[str, Any] | None = None
        self.limits = Limits(ctx.limit_request_headers, ctx.limit_request_field_size, ctx.limit_request_header_size)
        self.streams: dict[int, H3Stream] = {}
        self.slots = StreamSlots(quic)  # streams over on the wire while their apps run; the reset budget
        self.cids: set[bytes] = set()  # our connection ids the endpoint routes here
        self.handshaken = False
        self.closed = False  # closing begun: no more streams, requests or sends
        self.terminated = False  # aioquic is done with it (closing period over)
        self.goaway_sent = False
        self.goaway_id: int | None = None
        self.last_stream_id = -4
        now = self.loop.time()
        self.since = now
        self.idle_since: float | None = now
        self._goaway_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_due = False
        self._to_dispatch: list[StreamExchange] = []
        self._heads: dict[int, float] = {}  # request streams whose HEADERS have not arrived whole: since when
        self._paused: dict[int, H3Stream] = {}
        self._body_marks: dict[StreamExchange, tuple[int, float]] = {}  # --timeout-body-idle (on_tick)
        self._fixed_src = b""
        self._fixed: Headers = []
        ctx.connections.add(self)

    # -- datagrams, events, timer -------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.terminated:
            return
        self._process(data, addr)

    def _process(self, data: bytes | None = None, addr: Any = None) -> None:
        """Feed a datagram (or the timer's deadline, when there is none) and act on what aioquic makes of it."""
        quic = self.quic
        try:
            if data is not None:
                quic.receive_datagram(data, addr, self.loop.time())
            event = quic.next_event()
            while event is not None:
                self._event(event)
                event = quic.next_event()
        except Exception:  # a bug of ours or aioquic's: this connection ends, not the endpoint
            _log.exception("HTTP/3 connection from %s failed", describe_peer(self.client))
            self.close_now(ErrorCode.H3_INTERNAL_ERROR, "internal error")
            return
        if quic.closing and not self.closed:
            # the peer closed (or aioquic did, on a protocol error): the streams learn it now, not once the
            # closing period is over (ConnectionTerminated)
            self.closed = True
            self.ctx.connections.discard(self)
            self._lose_streams()
        if self._to_dispatch:
            ready, self._to_dispatch = self._to_dispatch, []
            dispatch(self.ctx, ready, self.loop.time())
        if self._paused:
            self._resume_streams()
        self.schedule_flush()  # once per loop pass: the datagrams read in one pass get one answer

    def _event(self, event: qe.QuicEvent) -> None:
        kind = type(event)
        if kind is qe.StreamDataReceived or kind is qe.StreamReset or kind is qe.StopSendingReceived:
            h3 = self.h3
            if h3 is None:
                return
            for h3_event in h3.handle_event(event):
                if type(h3_event) is DataReceived:
                    self._on_data(h3_event)
                elif type(h3_event) is HeadersReceived:
                    self._on_headers(h3_event)
            sid: int = event.stream_id  # type: ignore[attr-defined]
            if kind is qe.StreamDataReceived and not sid & 3 and sid not in self.streams:
                self._partial_head(sid)
            if kind is qe.StreamReset:
                self._on_reset(event.stream_id)  # type: ignore[attr-defined]
            elif kind is qe.StopSendingReceived:
                self._on_stop_sending(event.stream_id)  # type: ignore[attr-defined]
        elif kind is qe.ConnectionIdIssued:
            self.endpoint.add_cid(self, event.connection_id)  # type: ignore[attr-defined]
        elif kind is qe.ConnectionIdRetired:
            self.endpoint.drop_cid(self, event.connection_id)  # type: ignore[attr-defined]
        elif kind is qe.ProtocolNegotiated:
            if self.h3 is None:
                self.h3 = StaticQpackH3(self.quic)
                self.h3.max_headers_frame = 2 * self.limits.list_size  # as _partial_head's bound
        elif kind is qe.HandshakeCompleted:
            self._handshake_completed()
        elif kind is qe.ConnectionTerminated:
            self._terminated()

    def flush(self) -> None:
        """Send what aioquic has to send now, and move the timer to its next deadline."""
        self._flush_due = False
        if self.terminated:
            return
        sendto = self.endpoint.sendto
        quic = self.quic
        now = self.loop.time()
        for data, addr in quic.datagrams_to_send(now):
            sendto(data, addr)
        if quic.max_streams_due():  # a slot freed while the packets were written: a second pass sends it
            for data, addr in quic.datagrams_to_send(now):
                sendto(data, addr)
        at = quic.get_timer()
        if at != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = at
            self._timer = self.loop.call_at(at, self._on_timer) if at is not None else None

    def schedule_flush(self) -> None:
        """Send at the end of this loop pass (a stream's writes of one pass share packets)."""
        if not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush_if_due)

    def _flush_if_due(self) -> None:
        if self._flush_due:
            self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None  # always set again: a timer that fired a little early is set again
        if self.terminated:
            return
        self.quic.handle_timer(self.loop.time())
        self._process()

    def _handshake_completed(self) -> None:
        self.handshaken = True
        self._make_tls()

    def _make_tls(self) -> None:
        """The ASGI tls dict, from the front door's callable: at the handshake's end, or at the first request
        that came before it (0-RTT early data: no peer certificate then)."""
        try:
            self.tls = self.endpoint.tls_extension(*self.quic.peer_chain())
        except Exception:
            _log.exception("HTTP/3: the tls extension of a connection from %s failed", describe_peer(self.client))

    def _partial_head(self, sid: int) -> None:
        """A request stream whose HEADERS frame is not complete yet: aioquic keeps its pieces until it is.
        One declared larger than the header limits allow could never be answered (its pieces hold the
        stream's window shut): refused now. The others must complete within --timeout-request-head (on_tick)."""
        size = self.h3.pending_head(sid) if self.h3 is not None else None
        if size is None or self.closed:
            self._heads.pop(sid, None)
            return
        if size > 2 * self.limits.list_size:
            _log.info("refused a request from %s on HTTP/3 stream %d: a HEADERS frame of %d bytes",
                      describe_peer(self.client), sid, size)
            self._heads.pop(sid, None)
            self._refuse(sid, ErrorCode.H3_EXCESSIVE_LOAD)
            return
        self._heads.setdefault(sid, self.loop.time())

    def _held(self, stream_id: int) -> int:
        """Bytes delivered on a stream and not consumed (protocols/h3/quic.py): the app's unread body, and
        frame pieces the HTTP/3 layer keeps until they are whole."""
        st = self.streams.get(stream_id)
        held = st.held if st is not None else 0
        return held + self.h3.buffered(stream_id) if self.h3 is not None else held

    # -- requests -----------------------------------------------------------------------------------
    def _on_headers(self, event: HeadersReceived) -> None:
        sid = event.stream_id
        st = self.streams.get(sid)
        if st is not None:  # trailers
            try:
                check_trailers(event.headers)
            except MalformedRequest as exc:
                self._stream_error(st, str(exc))
                return
            if event.stream_ended:
                self._end_request(st)
            return
        if sid & 3 or self.closed or self.h3 is None or not self.h3.first_headers(sid):
            return  # not a request stream's first HEADERS (trailers of a stream we answered and forgot)
        self.last_stream_id = max(sid, self.last_stream_id)
        if self.goaway_id is not None and sid >= self.goaway_id:
            self._refuse(sid, ErrorCode.H3_REQUEST_REJECTED)  # after GOAWAY: the client may retry it elsewhere
            return
        self._heads.pop(sid, None)
        if self.tls is None:
            self._make_tls()
        fields = event.headers
        try:
            check_size(fields, self.limits)
        except TooLarge as too_large:
            self._too_large(sid, fields, str(too_large), event.stream_ended)
            return
        try:
            head = parse_request(fields, connect_protocol=True)
        except MalformedRequest as exc:
            _log.debug("HTTP/3 stream %d of %s reset: malformed request: %s", sid, describe_peer(self.client), exc)
            self._refuse(sid, ErrorCode.H3_MESSAGE_ERROR)
            return
        if not self.handshaken:
            # 0-RTT early data (session_tickets): replayable by whoever recorded it. RFC 8470 5.1: the request
            # goes on with "early-data: 1", so an app can answer 425 Too Early to what must not run twice
            head.headers.append((b"early-data", b"1"))
        self._open_stream(sid, head, event.stream_ended)

    def _open_stream(self, sid: int, head: RequestHead, end_stream: bool) -> None:
        st = self._register(H3Stream(self, sid, head))
        if end_stream:
            self._end_request(st)
            if head.content_length:
                self._stream_error(st, "content-length without a body")
                return
        if head.method == "CONNECT":
            if head.protocol is not None and self._websocket(st, head, end_stream):
                return
            st.take_on(self.ctx)
            if head.protocol is None:
                st.send_simple(405, b"Method Not Allowed: this server is not a proxy\n")
            elif head.protocol != b"websocket":
                st.send_simple(501, b"Not Implemented: unknown :protocol\n")
            else:
                st.send_simple(404, b"No WebSocket endpoint here\n")
            return
        limit = self.ctx.limit_request_body
        if limit is not None and head.content_length is not None and head.content_length > limit:
            st.take_on(self.ctx)
            self._body_over_limit(st, limit, head.content_length)
            return
        self._to_dispatch.append(st)

    def _websocket(self, st: H3Stream, head: RequestHead, end_stream: bool) -> bool:
        """An extended CONNECT (RFC 9220) for a path an ASGI app serves as a WebSocket: the stream becomes
        its pipe (protocols/h3/websocket.py, imported on the first WebSocket only). False: answered 404/501."""
        ctx = self.ctx
        route = ctx.websocket_route
        handler = (route(head.raw_path) if route is not None and head.protocol == b"websocket"
                   and ctx.upgrades.websocket_over_stream is not None and not end_stream else None)
        if handler is None:
            return False
        from bascule.protocols.h3.websocket import H3WSStream

        ws = H3WSStream(self, st.stream_id, head)
        self.streams[st.stream_id] = ws
        ws.start_time = self.loop.time()  # the session reports its handshake to the observers
        ws.start_websocket(handler)
        return True

    def _too_large(self, sid: int, fields: Headers, reason: str, end_stream: bool) -> None:
        """431 for a request head over a limit: answered without the app, from what little is safe to read."""
        _log.info("rejected a request from %s on HTTP/3 stream %d: %s (431)", describe_peer(self.client), sid, reason)
        method = next((value for name, value in fields if name == b":method"), b"GET")
        head = RequestHead(method.decode("latin-1"), b"/", b"", [], None, None, False)
        st = self._register(H3Stream(self, sid, head))
        if end_stream:
            self._end_request(st)
        st.take_on(self.ctx)
        st.send_simple(431, f"Request Header Fields Too Large: {reason}\n".encode())

    def _on_data(self, event: DataReceived) -> None:
        st = self.streams.get(event.stream_id)
        if st is None:
            return
        data = event.data
        if data:
            expected = st.content_length
            if expected is not None and st.received + len(data) > expected:
                self._stream_error(st, "more DATA than content-length")
                return
            limit = self.ctx.limit_request_body
            if limit is not None and st.received + len(data) > limit and not st.websocket:
                st.received += len(data)
                self._body_over_limit(st, limit, None)
                return
            st.feed(data)
        if event.stream_ended and not st.request_ended:
            if st.content_length is not None and st.received != st.content_length:
                self._stream_error(st, "less DATA than content-length")
                return
            self._end_request(st)

    def _end_request(self, st: H3Stream) -> None:
        st.request_ended = True
        st.end_body()
        if st.local_ended:
            self._forget(st)

    def _body_over_limit(self, st: H3Stream, limit: int, declared: int | None) -> None:
        reason = body_over_limit(limit, declared)
        _log.info("rejected a request from %s on HTTP/3 stream %d: %s (413)", describe_peer(self.client),
                  st.stream_id, reason)
        if st.response_started:
            st.abort()
            return
        st.send_simple(413, f"Payload Too Large: {reason}\n".encode())
        if not st.request_ended:  # the response ended: the rest of the upload is refused (STOP_SENDING)
            self._stop_reading(st)

    def _register(self, st: H3Stream) -> H3Stream:
        self.streams[st.stream_id] = st
        self.idle_since = None
        return st

    def _refuse(self, sid: int, code: int) -> None:
        """Reset a request stream that never became an exchange, both ways."""
        quic = self.quic
        with contextlib.suppress(*_SEND_ERRORS):
            quic.reset_stream(sid, code)
        with contextlib.suppress(*_SEND_ERRORS):
            quic.stop_stream(sid, code)
        if self.h3 is not None:
            self.h3.sent_all(sid)  # its HTTP/3 record goes once the client's side ends too
        self.schedule_flush()

    def _stream_error(self, st: H3Stream, reason: str) -> None:
        _log.debug("HTTP/3 stream %d of %s reset: %s", st.stream_id, describe_peer(self.client), reason)
        self._drop(st)
        self._reset_both(st, ErrorCode.H3_MESSAGE_ERROR)
        st.on_disconnect()
        if self.slots.charge():  # "MadeYouReset": resets the client makes us send count as its own
            self.close_now(ErrorCode.H3_EXCESSIVE_LOAD, "too many streams reset")

    # -- resets from the client ---------------------------------------------------------------------
    def _on_reset(self, sid: int) -> None:
        """RESET_STREAM: the client abandoned its request."""
        self._cancelled(sid, ErrorCode.H3_REQUEST_CANCELLED)

    def _on_stop_sending(self, sid: int) -> None:
        """STOP_SENDING: the client wants no more of the response (aioquic has reset our side already)."""
        st = self.streams.get(sid)
        if st is not None:
            st.local_ended = True
        self._cancelled(sid, ErrorCode.H3_REQUEST_CANCELLED)

    def _cancelled(self, sid: int, code: int) -> None:
        """The client cancelled a request (RFC 9114 4.1.1): both sides are reset and the app sees a
        disconnect. While its app still runs the stream stays an orphan, counted against MAX_STREAMS
        (StreamSlots): resetting streams (CVE-2023-44487, rapid reset) buys no more running apps."""
        st = self.streams.get(sid)
        if st is None:
            return
        st.cancelled = True
        over = self._drop(st) and self.slots.charge()
        self._reset_both(st, code)
        st.on_disconnect()
        if over:
            self.close_now(ErrorCode.H3_EXCESSIVE_LOAD, "too many streams reset")

    # -- responses ----------------------------------------------------------------------------------
    def fixed_fields(self) -> Headers:
        """The server's own fields (date, server, --header), converted once per change of the block."""
        src = self.ctx.fixed_headers
        if src is not self._fixed_src:
            self._fixed_src = src
            self._fixed = fixed_fields(src)
        return self._fixed

    def send_headers(self, st: H3Stream, headers: Headers, end: bool) -> None:
        h3 = self.h3
        if h3 is None or st.local_ended or self.closed:
            return
        try:
            h3.send_headers(st.stream_id, headers, end)
        except _SEND_ERRORS:
            self._lost_send(st)
            return
        self._sent(st, end)

    def send_data(self, st: H3Stream, data: bytes, end: bool) -> None:
        h3 = self.h3
        if h3 is None or st.local_ended or self.closed:
            return
        try:
            h3.send_data(st.stream_id, data, end)
        except _SEND_ERRORS:
            self._lost_send(st)
            return
        self._sent(st, end)

    def _sent(self, st: H3Stream, end: bool) -> None:
        if self.quic.unacked(st.stream_id) > SEND_BUFFER and not st.write_paused:
            st.write_paused = True
            self._paused[st.stream_id] = st
        if end:
            self._end_local(st)
        self.schedule_flush()

    def _lost_send(self, st: H3Stream) -> None:
        """aioquic refused a send: the stream was reset under us (the events saying so are on their way)."""
        self._drop(st)
        self._reset_both(st, ErrorCode.H3_INTERNAL_ERROR)
        st.on_disconnect()

    def _resume_streams(self) -> None:
        """After acknowledgements: wake the streams whose unacknowledged bytes fell under half the bound."""
        unacked = self.quic.unacked
        for sid, st in list(self._paused.items()):
            if unacked(sid) <= SEND_BUFFER // 2 or st.disconnected:
                del self._paused[sid]
                st.write_paused = False
                st.wake_drain()

    def _end_local(self, st: H3Stream) -> None:
        """Our FIN is queued. If the client is still sending a body nobody will read, STOP_SENDING
        (H3_NO_ERROR, RFC 9114 4.1) tells it to stop."""
        st.local_ended = True
        if not st.request_ended:
            self._stop_reading(st)
            self.slots.hold(st)
            if not st.body_done:
                st.on_disconnect()  # an app still reading the body would wait for bytes that never come
        self._forget(st)

    def _stop_reading(self, st: H3Stream, code: int = ErrorCode.H3_NO_ERROR) -> None:
        st.request_ended = True
        with contextlib.suppress(*_SEND_ERRORS):
            self.quic.stop_stream(st.stream_id, code)
        self.schedule_flush()

    def _reset_send(self, st: H3Stream, code: int) -> None:
        st.local_ended = True
        with contextlib.suppress(*_SEND_ERRORS):
            self.quic.reset_stream(st.stream_id, code)
        if self.h3 is not None:
            self.h3.sent_all(st.stream_id)
        self.schedule_flush()

    def _reset_both(self, st: H3Stream, code: int) -> None:
        if not st.local_ended:
            self._reset_send(st, code)
        if not st.request_ended:
            self._stop_reading(st, code)
        self.slots.hold(st)  # over on the wire: while its app runs its slot stays taken (protocols/h3/slots.py)
        self._forget(st)

    def reset(self, st: H3Stream) -> None:
        """The stream's response is given up (H3Stream.abort)."""
        self._reset_both(st, ErrorCode.H3_INTERNAL_ERROR)

    def credit(self, st: H3Stream) -> None:
        """The app read body bytes: the stream's window may open (PacedQuic decides when sending)."""
        self.schedule_flush()

    def response_done(self, st: H3Stream, aborted: bool = False) -> None:
        if not st.websocket:
            self.ctx.request_finished(st)

    def _drop(self, st: H3Stream) -> bool:
        """The client went away from ``st`` before its response was complete: reported once (True then). A
        WebSocket's session reports its handshake itself, when the stream closes."""
        if st.finished:
            return False
        st.finished = True
        if not st.websocket:
            self.ctx.request_finished(st, dropped=True)
        return True

    def _forget(self, st: H3Stream) -> None:
        if self.streams.pop(st.stream_id, None) is not None:
            self._paused.pop(st.stream_id, None)
            release_writer(st)
            self._note_idle()

    def _note_idle(self) -> None:
        if not self.streams:
            self.idle_since = self.loop.time()

    # -- closing ------------------------------------------------------------------------------------
    def goaway(self) -> None:
        """Graceful stop: an HTTP/3 GOAWAY (RFC 9114 5.2) naming the first request stream we will not take;
        the connection closes once the streams below it are done (on_tick)."""
        if self.goaway_sent or self.closed:
            return
        self.goaway_sent = True
        self._goaway_at = self.loop.time()
        goaway_id = self.last_stream_id + 4
        if self.h3 is None or not self.h3.send_goaway(goaway_id):
            self.close_now()  # no HTTP/3 yet: nothing to drain
            return
        self.goaway_id = goaway_id
        self.schedule_flush()

    def close_now(self, code: int = ErrorCode.H3_NO_ERROR, reason: str = "") -> None:
        """CONNECTION_CLOSE now: the streams still open see a disconnect."""
        if self.closed:
            return
        self.closed = True
        self.ctx.connections.discard(self)
        self.quic.close(error_code=code, reason_phrase=reason)
        self._lose_streams()
        self.flush()

    def force_close(self) -> None:
        self.close_now(ErrorCode.H3_NO_ERROR, "server stopping")

    def _lose_streams(self) -> None:
        streams = list(self.streams.values()) + self.slots.clear()
        self.streams.clear()
        self._paused.clear()
        self._to_dispatch.clear()
        for st in streams:
            st.local_ended = st.request_ended = True
            self._drop(st)
            st.write_paused = False
            st.on_disconnect()

    def _terminated(self) -> None:
        """aioquic is done with the connection (closed by either side, or idle): it leaves every table."""
        self.closed = self.terminated = True
        self.ctx.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._lose_streams()
        self.endpoint.forget(self)

    def discard(self) -> None:
        """Drop the connection without a word (nothing decrypted yet, or the endpoint is going away)."""
        if not self.terminated:
            self._terminated()

    def on_tick(self, now: float) -> None:
        """Twice a second (and in the server's drain loop): handshake and idle deadlines, GOAWAY draining,
        app deadlines, orphans whose apps returned, the reset budget."""
        if self.closed:
            return
        if self.slots.tick():
            self.schedule_flush()  # MAX_STREAMS raised
        ctx = self.ctx
        if not self.handshaken:
            if now - self.since > ctx.timeout_request_head or ctx.shutting_down:
                self.close_now(ErrorCode.H3_NO_ERROR, "handshake not complete within timeout_request_head")
            return
        if ctx.shutting_down:
            self.goaway()
        elif not self.goaway_sent:
            idle = self.idle_since
            if idle is not None and not self.streams and now - idle > ctx.keep_alive_timeout:
                self.goaway()
        if self._heads:
            for sid, since in list(self._heads.items()):
                if self.h3 is None or self.h3.pending_head(sid) is None:
                    del self._heads[sid]  # reset, or answered
                elif now - since > ctx.timeout_request_head:  # slowloris: as HTTP/2, the connection ends
                    _log.info("HTTP/3 connection from %s closed: request head not complete within "
                              "timeout_request_head", describe_peer(self.client))
                    self.close_now(ErrorCode.H3_REQUEST_INCOMPLETE, "request head not complete in time")
                    return
        # before the GOAWAY's return: a stalled upload must not hold a graceful stop
        for stalled in stalled_bodies(list(self.streams.values()), self._body_marks, now, ctx.timeout_body_idle):
            self._body_timed_out(cast(H3Stream, stalled), ctx.timeout_body_idle)
        if self.goaway_sent:
            # closed once every byte we queued is acknowledged (see PacedQuic.all_acknowledged)
            if not self.streams and now - self._goaway_at >= GOAWAY_GRACE and self.quic.all_acknowledged():
                self.close_now()
            return
        if ctx.timeout_request is not None:
            app_deadlines(list(self.streams.values()), now, ctx.timeout_request)

    def _body_timed_out(self, st: H3Stream, timeout: float) -> None:
        """--timeout-body-idle: the app waited for request body bytes that did not come; this stream ends, the
        connection and its other streams go on, and the app sees a disconnect. Before the response started:
        408, whose FIN is followed by STOP_SENDING (H3_NO_ERROR) ending the upload (RFC 9114 4.1; _end_local).
        Once it started: both sides reset with H3_REQUEST_CANCELLED (RFC 9114 4.1.1, 8.1)."""
        refuse_stalled_body(st, st.stream_id, describe_peer(self.client), timeout)
        if not st.local_ended or not st.disconnected:
            self._drop(st)
            self._reset_both(st, ErrorCode.H3_REQUEST_CANCELLED)
            st.on_disconnect()
