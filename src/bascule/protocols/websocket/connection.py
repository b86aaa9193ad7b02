"""WebSocket over an upgraded HTTP/1.1 connection: handshake, frames, keepalive and flow control.

The frame engine is websockets' sans-I/O :class:`~websockets.server.ServerProtocol` (bytes in, frames
out, close handshake, permessage-deflate through its extension machinery); this module is the asyncio
glue around it and the :class:`~bascule.protocols.exchange.WebSocketSession` the ASGI gateway uses.

The session runs over a :class:`~bascule.protocols.pipe.BytePipe`: the HTTP/1.1 connection's transport after
the upgrade (HTTP/1.1 asks the upgrade registry for this module, so neither imports the other), or an HTTP/2
extended CONNECT stream (protocols/websocket/extended_connect.py answers its handshake as HTTP/2 does).

Life of a connection (:class:`Phase`): :class:`~bascule.protocols.h1.connection.H1Connection` parses the upgrade
request and hands the transport over. The handshake is checked here first (a bad one is answered 400/426
without bothering the app); then the app decides: ``accept`` sends 101 and frames flow (OPEN), or it
denies with an HTTP response (RESPONSE). Bytes the client sends before the 101 are held, reading paused.

Flow control both ways: reading pauses while ``ws_max_queue`` messages, or ``ws_max_size`` bytes of them
(one full-size message's worth), wait for the app, and ``send`` waits while the transport's buffer is above
its high-water mark. Reading also pauses while the answers our reading produces (pongs) cannot be written: a
peer that pings without reading stops being read. The engine parses every frame of what it is given at once,
so a read larger than :data:`FEED_SLICE` is fed a slice at a time, at most :data:`FRAMES_PER_PASS` frames
per loop pass, the rest held (reading paused): a read full of tiny frames cannot hold the loop, nor push the
queue far past its bound. With permessage-deflate the slices are :data:`DEFLATE_FEED_SLICE`: 12 KB on the
wire can be 12 MiB inflated. Frames written by the app during one loop pass leave in one ``transport.write``
(an echo of a batch of messages is one syscall, not one each).
Keepalive pings and the close timeout run off the server's tick, so an idle socket costs no timer.

Frames that cost work but carry (next to) no message - pings (each owed a pong), pongs, non-final fragments
shorter than :data:`SMALL_FRAGMENT` bytes - are counted against a budget per tick (:data:`CONTROL_PER_TICK`),
as HTTP/2 counts its control frames: a peer over it is closed with 1008 (policy violation), and dropped if
it does not take the close frame.
"""

from __future__ import annotations

import asyncio
import codecs
import enum
import http
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ProtocolError as WSProtocolError
from websockets.extensions import Extension
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, State
from websockets.server import ServerProtocol

from bascule.context import TICK_SECONDS
from bascule.errors import AppProtocolError
from bascule.ops.request_id import sets_field
from bascule.protocols.exchange import (
    ClientDisconnected,
    Exchange,
    Headers,
    WebSocketClosed,
    WebSocketSession,
    describe_peer,
)
from bascule.protocols.fields import field_block
from bascule.protocols.http1x import simple_response, status_line
from bascule.protocols.outbox import Outbox
from bascule.protocols.pipe import BytePipe
from bascule.protocols.websocket.engine import CONTROL_PER_TICK, Engine, check_handshake, offered_subprotocols

if TYPE_CHECKING:
    from bascule.context import ServerContext

CLOSE_TIMEOUT = 10.0  # seconds to wait for the peer's answer to our close frame before dropping it
SHUTDOWN_CLOSE_TIMEOUT = 1.0  # the same while the server stops: a peer that has not answered by then is gone
COALESCE_LIMIT = 64 * 1024  # bytes of frames held for the end of a loop pass before they are written at once
_ALWAYS_JOIN = 1 << 62  # the outbox joins what it holds into one write (frames are small; one syscall, one copy)
EARLY_DATA_LIMIT = 64 * 1024  # bytes held (reading paused beyond) while the app decides on the handshake
FLOOD_CLOSE_GRACE = 1.0  # seconds a peer closed for a flood has to take the close frame before it is dropped
# Bytes handed to the frame engine at once. A read can be 256 KiB (uvloop), and libuv reads up to 32 times
# per wakeup: 8 MiB of 7-byte frames is ~1.2 million frames, seconds of parsing with the loop held. 16 KiB
# is at most ~2,300 frames (~10 ms) per slice, and costs large frames nothing measurable.
FEED_SLICE = 16 * 1024
FRAMES_PER_PASS = 1000  # frames parsed in one loop pass before the other connections get their turn
# The same with permessage-deflate, where the work and memory are in the inflating: deflate expands at most
# ~1032:1, so a slice completes at most ~4 MiB of messages besides the one frame it may end (<= ws_max_size),
# and the queue's byte bound is checked between slices. Compressed peers rarely send large frames; the cost is
# one more engine call per 4 KiB.
DEFLATE_FEED_SLICE = 4 * 1024
_PAUSE_QUEUE = 1
_PAUSE_EARLY = 2
_PAUSE_BACKLOG = 4  # bytes read but not yet fed to the engine
_PAUSE_WRITE = 8  # the pongs (or close) our reading produced cannot be written
_TEXT, _BINARY, _CONT, _PING, _PONG, _CLOSE = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.PONG,
                                             Opcode.CLOSE)
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
_log = logging.getLogger("bascule.websocket")  # websockets' own logs; its "connection open" lines are info
_error_log = logging.getLogger("bascule.error")

Handler = Callable[[WebSocketSession], None]


class Phase(enum.Enum):
    """Where the connection is, from the server's side."""

    HANDSHAKE = "handshake"  # the request is valid; the app has not accepted or denied yet
    OPEN = "open"  # 101 sent: frames flow (the closing handshake too)
    RESPONSE = "response"  # the app denies with an HTTP response it is still sending
    DONE = "done"  # closing or closed: nothing more is read or written


class WSConnection(asyncio.Protocol, WebSocketSession):
    """One WebSocket connection: the protocol of its pipe (a transport after the upgrade, or an HTTP/2 stream),
    and the app's session."""

    __slots__ = ("_abort_at", "_accept_headers", "_backlog", "_close_event", "_closing_since", "_decoder",
                 "_early", "_early_size", "_eof_pending", "_ex", "_extensions", "_fed",
                 "_fragments", "_held", "_last_ping", "_out_eof", "_ping_payload",
                 "_ping_sent", "_pings", "_pump_handle", "_queue", "_queued_bytes", "_recv_waiter",
                 "_response_expected", "_slice", "client", "ctx", "headers", "http_version", "loop", "max_queue",
                 "max_size", "outbox", "peer", "phase", "proto", "proxied", "query_string", "raw_path", "rid",
                 "root_path", "scheme", "server", "subprotocols", "tls", "transport")

    def __init__(self, ctx: ServerContext, transport: BytePipe, ex: Exchange) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.transport = transport
        self.phase = Phase.HANDSHAKE
        self.http_version = ex.http_version
        self.scheme = "wss" if ex.scheme == "https" else "ws"
        self.tls = ex.tls
        self.raw_path = ex.raw_path
        self.query_string = ex.query_string
        self.headers = ex.headers
        self.client = ex.client
        self.server = ex.server
        self.root_path = ex.root_path
        self.proxied = ex.proxied
        self.peer = ex.peer
        self.rid: str | None = None  # the handshake's request id, once request_started gave it one
        self._rid_field: bytes | None = None  # ... and the field that echoes it (ops/request_id.py)
        self.subprotocols: list[str] = []
        self.max_queue = ctx.ws_max_queue
        self.max_size = ctx.ws_max_size  # also the bound on the bytes queued for the app
        self.proto: Engine | None = None
        # frames queued for the end of the loop pass (joined into one write), drain waiters, pause reasons
        # (_PAUSE_*); detached once the connection is DONE
        self.outbox = Outbox(ctx.loop, COALESCE_LIMIT, join_below=_ALWAYS_JOIN, end_of_pass=ctx.end_of_pass)
        self.outbox.transport = transport  # over HTTP/2, a StreamTransport (H2WebSocket)
        self._ex: Exchange | None = ex  # kept for the access log until the handshake is decided
        self._accept_headers: Headers = []
        self._extensions: list[Extension] = []
        self._early: list[bytes] = []
        self._early_size = 0
        self._queue: deque[str | bytes] = deque()
        self._queued_bytes = 0  # len() of the queued messages (characters for text: near enough for a bound)
        self._slice = FEED_SLICE  # DEFLATE_FEED_SLICE once permessage-deflate is on
        self._recv_waiter: asyncio.Future[None] | None = None
        self._close_event: WebSocketClosed | None = None
        self._out_eof = False
        self._decoder: Any = None  # incremental UTF-8 decoder of a fragmented text message
        self._fragments: list[Any] | None = None
        self._ping_payload: bytes | None = None
        self._ping_sent = 0.0
        self._last_ping = 0.0
        self._pings = 0
        self._closing_since: float | None = None
        self._held: list[bytes] | None = None  # the engine's close after a protocol error, held back
        self._response_expected: int | None = None
        self._abort_at: float | None = None  # closed by us: dropped then if the peer has not taken our last bytes
        self._backlog = b""  # read, not yet fed to the engine (from offset _fed): see _pump
        self._fed = 0
        self._pump_handle: asyncio.Handle | None = None
        self._eof_pending = False  # the peer's EOF came with bytes still held: it ends the input after them

    # -- start ------------------------------------------------------------------------------------------
    def start(self, handler: Handler, leftover: bytes) -> None:
        """Check the handshake and, if it is valid, give the session to the app (through ``handler``)."""
        self.ctx.connections.add(self)
        ex = self._ex
        if ex is None:
            return  # started twice: the first start owns the handshake
        self.ctx.request_started(ex)  # the handshake is the exchange the observers see
        self.rid = ex.rid
        self._rid_field = ex.rid_header
        checked = self._check_handshake(ex)
        if isinstance(checked[0], int):
            status, reason, extra = checked
            _error_log.info("rejected a WebSocket handshake from %s: %s (%d)", describe_peer(self.client), reason,
                            status)
            self._http_response(status, (f"{http.HTTPStatus(status).phrase}: {reason}\n").encode("utf-8", "replace"),
                                extra)
            return
        self._accept_headers, self._extensions = checked
        self.subprotocols = offered_subprotocols(self.headers)
        if leftover:
            self._hold(leftover)
        try:
            handler(self)
        except Exception:
            _error_log.exception("could not start the WebSocket app for %s", self.raw_path.decode("latin-1"))
            if self.phase is Phase.HANDSHAKE:
                self.deny_simple(500, b"Internal Server Error\n")

    def _check_handshake(self, ex: Any) -> tuple[int, str, Headers] | tuple[Headers, list[Extension]]:
        return check_handshake(ex, deflate=self.ctx.ws_per_message_deflate)

    def _hold(self, data: bytes) -> None:
        self._early.append(data)
        self._early_size += len(data)
        if self._early_size > EARLY_DATA_LIMIT:
            self._pause(_PAUSE_EARLY)

    # -- asyncio.Protocol -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # not called after set_protocol
        pass

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase is Phase.OPEN:
            if not self.outbox.paused_by and len(data) <= self._slice:
                self._feed(data)  # the common case: one read, one slice
            else:
                self._take_in(data)
        elif phase is Phase.HANDSHAKE:
            self._hold(data)
        # else: a denied handshake or a closed connection; what the client still sends is dropped

    def eof_received(self) -> bool | None:
        proto = self.proto
        if proto is not None and self.phase is Phase.OPEN:
            if self._fed < len(self._backlog):
                self._eof_pending = True  # (HTTP/2 only: a paused socket reads no EOF)
                return True  # open until the held frames are fed; _pump ends the input then
            proto.receive_eof()
            self._take_writes(proto)
        return None  # asyncio closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.connections.discard(self)
        if self.phase is Phase.HANDSHAKE or self.phase is Phase.RESPONSE:
            self._log_handshake(499 if self.phase is Phase.HANDSHAKE else 0)
        elif self._ex is not None:  # dropped by us before the handshake was decided (abort): no response
            ex, self._ex = self._ex, None
            self.ctx.request_finished(ex, dropped=True)
        self._done()
        self.outbox.discard()
        self._backlog = b""
        if self._close_event is None:
            self._closed_by_peer()
        self._wake_receiver()
        self._wake_drain()

    # -- PipeSession: what a pipe that is not a socket (an HTTP/2 stream) also calls ---------------------
    def takes_input(self) -> bool:
        phase = self.phase
        return phase is Phase.OPEN or phase is Phase.HANDSHAKE

    def input_ended(self) -> None:
        if self.phase is Phase.OPEN and not self.eof_received():  # True: frames still held, it closes after them
            self.transport.close()

    def pause_writing(self) -> None:
        self.outbox.write_paused = True

    def resume_writing(self) -> None:
        self.outbox.write_paused = False
        self._resume(_PAUSE_WRITE)
        self._schedule_pump()
        self._wake_drain()

    # -- frames in --------------------------------------------------------------------------------------
    def _take_in(self, data: bytes) -> None:
        """A read larger than one slice, or one that arrives while reading is paused (HTTP/2 streams still
        deliver what the window allowed): held, and fed by the pump."""
        if self._fed < len(self._backlog):
            self._backlog = self._backlog[self._fed:] + data
        else:
            self._backlog = data
        self._fed = 0
        if self._pump_handle is None:
            self._pump()

    def _pump(self) -> None:
        """Feed the held bytes, a slice at a time, while the app's queue has room, the pongs owed can leave
        and this loop pass has parsed fewer than FRAMES_PER_PASS frames; then hold the rest, reading paused.
        receive() and resume_writing() start it again, and it goes on by itself after a full pass."""
        self._pump_handle = None
        backlog = self._backlog
        end = len(backlog)
        frames = 0
        step = self._slice
        outbox = self.outbox
        while self._fed < end and self.phase is Phase.OPEN and not outbox.paused_by & (_PAUSE_QUEUE | _PAUSE_WRITE):
            if frames >= FRAMES_PER_PASS:
                self._pump_handle = self.loop.call_soon(self._pump)
                break
            pos = self._fed
            self._fed = pos + step
            frames += self._feed(backlog[pos:pos + step])
            if self._backlog is not backlog:  # dropped by _flooded: nothing more is fed
                return
        if self._fed < end and self.phase is Phase.OPEN:
            self._pause(_PAUSE_BACKLOG)
            return
        self._backlog = b""
        self._fed = 0
        self._resume(_PAUSE_BACKLOG)
        proto = self.proto
        if self._eof_pending and proto is not None and self.phase is Phase.OPEN:
            self._eof_pending = False
            proto.receive_eof()
            self._take_writes(proto)
            self._queue_writes(proto, [b""])  # the transport was kept open for the held bytes: close it now

    def _schedule_pump(self) -> None:
        if self.outbox.paused_by & _PAUSE_BACKLOG and self._pump_handle is None and self.phase is Phase.OPEN:
            self._pump_handle = self.loop.call_soon(self._pump)

    def _feed(self, data: bytes) -> int:
        """Give the engine one slice; returns the number of frames it held."""
        proto = self.proto
        assert proto is not None
        proto.receive_data(data)
        events = proto.events_received()
        if events:
            for frame in events:
                if not self._on_frame(proto, frame):  # type: ignore[arg-type]  # after the handshake: frames
                    break
        if proto.flooded:
            self._flooded(proto)
            return len(events)
        if proto.parser_exc is not None and self._queue and self._held is None:
            # The peer broke the protocol right after messages the app has not seen yet: hold the close
            # until the app has taken them (and answered: an echo server's replies go out first, as
            # Autobahn 3.2, 4.x and 5.15 expect), or until the next tick.
            self._held = proto.data_to_send()
            self._closing_since = self.loop.time()
            return len(events)
        writes = proto.data_to_send()
        if writes:
            self._queue_writes(proto, writes)
            if self.outbox.write_paused:
                self._pause(_PAUSE_WRITE)  # pongs we cannot write: read no more pings until they leave
        return len(events)

    def _flooded(self, proto: Engine) -> None:
        """Over the control-frame budget: close 1008, and spend nothing more on this peer (once: the bytes
        still held are dropped, and the failed engine discards whatever still arrives)."""
        proto.flooded = False
        self._backlog = b""
        self._fed = 0
        _error_log.warning("WebSocket peer %s sent more than %d pings, pongs or tiny fragments in %g s: "
                           "closing with 1008 (policy violation)", describe_peer(self.client), CONTROL_PER_TICK,
                           TICK_SECONDS)
        self._closed_by_peer(1008)
        if self.outbox.write_paused:
            # it does not read what we write: the close frame would wait behind the pongs forever
            self.abort()
            return
        self._take_writes(proto)  # the close frame, then EOF
        self._abort_at = self.loop.time() + FLOOD_CLOSE_GRACE

    def _on_frame(self, proto: ServerProtocol, frame: Frame) -> bool:
        """Handle one frame; False once the connection has failed (the frames after it are ignored)."""
        opcode = frame.opcode
        data = frame.data
        if opcode is _TEXT:
            if frame.fin:
                try:
                    self._deliver(bytes(data).decode())
                except UnicodeDecodeError as exc:
                    return self._invalid_utf8(proto, exc)
            else:
                self._decoder = _Utf8Decoder()
                self._fragments = []
                return self._text_fragment(proto, data, False)
        elif opcode is _BINARY:
            if frame.fin:
                self._deliver(data if type(data) is bytes else bytes(data))
            else:
                self._fragments = [data]
        elif opcode is _CONT:
            if self._decoder is not None:
                return self._text_fragment(proto, data, frame.fin)
            fragments = self._fragments
            assert fragments is not None  # websockets rejects a continuation without a start
            fragments.append(data)
            if frame.fin:
                self._fragments = None
                self._deliver(b"".join(fragments))
        elif opcode is _PONG:
            if self._ping_payload is not None and data == self._ping_payload:
                self._ping_payload = None
        elif opcode is _CLOSE:
            self._decoder = self._fragments = None
            self._closed_by_peer()
        return True

    def _text_fragment(self, proto: ServerProtocol, data: Any, fin: bool) -> bool:
        """Decode as the fragments come, so invalid UTF-8 fails the connection at once (RFC 6455 8.1)."""
        try:
            text = self._decoder.decode(data, fin)
        except UnicodeDecodeError as exc:
            return self._invalid_utf8(proto, exc)
        fragments = self._fragments
        assert fragments is not None
        fragments.append(text)
        if fin:
            self._decoder = self._fragments = None
            self._deliver("".join(fragments))
        return True

    def _invalid_utf8(self, proto: ServerProtocol, exc: UnicodeDecodeError) -> bool:
        self._decoder = self._fragments = None
        proto.fail(1007, f"invalid UTF-8: {exc.reason}")
        self._closed_by_peer(1007)
        return False

    def _deliver(self, message: str | bytes) -> None:
        queue = self._queue
        queue.append(message)
        self._queued_bytes += len(message)
        if self._recv_waiter is not None:
            self._wake_receiver()
        if len(queue) >= self.max_queue or self._queued_bytes >= self.max_size:
            self._pause(_PAUSE_QUEUE)

    def _closed_by_peer(self, code: int | None = None) -> None:
        """Record how the connection ended, for the app's websocket.disconnect."""
        if self._close_event is not None:
            return
        proto = self.proto
        reason = ""
        if code is None:
            code = 1006
            if proto is not None and proto.close_rcvd is not None:
                code, reason = proto.close_rcvd.code, proto.close_rcvd.reason
            elif proto is not None and proto.close_sent is not None:
                code, reason = proto.close_sent.code, proto.close_sent.reason
        self._close_event = WebSocketClosed(code, reason)
        self._wake_receiver()

    # -- frames out -------------------------------------------------------------------------------------
    def _take_writes(self, proto: ServerProtocol) -> None:
        """Queue what the engine wants written (frames, or EOF: close after them) for the end of this pass."""
        self._queue_writes(proto, proto.data_to_send())

    def _queue_writes(self, proto: ServerProtocol, writes: list[bytes]) -> None:
        if writes:
            outbox = self.outbox
            if not outbox.pending and not self._out_eof:
                self.loop.call_soon(self._flush)  # ours, not the outbox's: a close may follow the frames
            for data in writes:
                if data:
                    outbox.queue(data)
                else:
                    self._out_eof = True
            if proto.state is not OPEN and self._closing_since is None:
                self._closing_since = self.loop.time()
            if outbox.size >= COALESCE_LIMIT:
                # an app sending a lot without ever waiting: write now, so the transport's high-water mark
                # (and send()'s drain) bounds what piles up
                self._flush()

    def _flush(self) -> None:
        self.outbox.flush()  # dropped once DONE (detached)
        transport = self.transport
        if self._out_eof:
            self._out_eof = False
            self._done()
            if self._abort_at is None:
                # closed by us: asyncio's close waits for the buffer to drain, forever if the peer never reads
                self._abort_at = self.loop.time() + CLOSE_TIMEOUT
            if self._close_event is None:
                self._closed_by_peer()
            transport.close()

    # -- WebSocketSession -------------------------------------------------------------------------------
    async def receive(self) -> str | bytes | WebSocketClosed:
        queue = self._queue
        if not queue and self._held is not None:
            self._release_held()
        while not queue:
            if self._close_event is not None:
                return self._close_event
            waiter = self._recv_waiter = self.loop.create_future()
            await waiter
        message = queue.popleft()
        self._queued_bytes -= len(message)
        if self.outbox.paused_by & _PAUSE_QUEUE and len(queue) < self.max_queue and self._queued_bytes < self.max_size:
            self._resume(_PAUSE_QUEUE)
            self._schedule_pump()
        return message

    def accept(self, subprotocol: str | None, headers: Headers) -> None:
        if self.phase is not Phase.HANDSHAKE:
            raise ClientDisconnected("the client has disconnected")
        if subprotocol is not None and (not isinstance(subprotocol, str) or subprotocol not in self.subprotocols):
            raise AppProtocolError(f"the app accepted with subprotocol {subprotocol!r}, which the client did "
                                   f"not offer (it offered {self.subprotocols!r})")
        self._write_accept(subprotocol, list(headers) if headers else [])
        proto = Engine(max_size=self.ctx.ws_max_size, logger=_log)
        proto.extensions = self._extensions
        if self._extensions:  # permessage-deflate, the one extension offered
            self._slice = DEFLATE_FEED_SLICE
        proto.subprotocol = subprotocol  # type: ignore[assignment]
        self.proto = proto
        self.phase = Phase.OPEN
        self._last_ping = self.loop.time()
        self._log_handshake(101)
        early, self._early = self._early, []
        self._early_size = 0
        self._resume(_PAUSE_EARLY)
        if early:
            self.data_received(b"".join(early))
        if self.ctx.shutting_down:
            self.close(1001, "server shutting down")

    def _write_accept(self, subprotocol: str | None, headers: Headers) -> None:
        """The handshake's success response: 101 with the negotiated headers (HTTP/1.1)."""
        lines = [b"".join(name + b": " + value + b"\r\n" for name, value in self._accept_headers)]
        if subprotocol is not None:
            lines.append(b"sec-websocket-protocol: " + subprotocol.encode("ascii") + b"\r\n")
        if headers:
            lines.append(field_block(headers))
        self.transport.write(b"".join((status_line(101), self.ctx.fixed_headers, self._rid_line(headers), *lines,
                                       b"\r\n")))

    def _rid_line(self, headers: Headers) -> bytes:
        """--request-id's echo among the server's own fields, as every wire's send_head adds it (HTTP/1.1's
        handshake answers are written here, not by an exchange), unless the app set the field itself."""
        name = self._rid_field
        if name is None or (headers and sets_field(headers, name)):
            return b""
        return name + b": " + (self.rid or "").encode("ascii") + b"\r\n"

    async def send(self, data: str | bytes) -> None:
        proto = self.proto
        if proto is None or proto.state is not OPEN or self.phase is not Phase.OPEN:
            if self._held is not None and proto is not None and self.phase is Phase.OPEN:
                # answering the messages that came before a protocol error, ahead of the held close
                frame = Frame(_TEXT, data.encode()) if isinstance(data, str) else Frame(_BINARY, data)
                self._queue_writes(proto, [frame.serialize(mask=False, extensions=proto.extensions)])
                return
            raise ClientDisconnected("the WebSocket is closed")
        if isinstance(data, str):
            proto.send_text(data.encode())
        else:
            proto.send_binary(data)
        self._take_writes(proto)
        if self.outbox.write_paused:
            await self.outbox.drain()

    def close(self, code: int = 1000, reason: str = "") -> None:
        proto = self.proto
        if proto is None or proto.state is not OPEN or self.phase is not Phase.OPEN:
            return  # already closing or closed: nothing more to say
        try:
            proto.send_close(code, reason)
        except WSProtocolError as exc:
            raise AppProtocolError(f"invalid close code {code!r} ({exc})") from None
        self._take_writes(proto)

    def deny_start(self, status: int, headers: Headers) -> None:
        if self.phase is not Phase.HANDSHAKE:
            raise ClientDisconnected("the client has disconnected")
        if type(status) is not int or not 100 <= status <= 999 or status == 101:
            raise AppProtocolError(f"invalid status for websocket.http.response.start: {status!r}")
        block = field_block(list(headers))
        framing = b"connection: close\r\n"
        expected: int | None = None
        for name, value in headers:
            if name.lower() == b"content-length" and value.isdigit():
                expected = int(value)
        self._response_expected = expected
        self.phase = Phase.RESPONSE
        self.outbox.queue(b"".join((status_line(status), self.ctx.fixed_headers, self._rid_line(headers), block,
                                    framing)))
        self._log_handshake(status)

    def deny_body(self, body: bytes, more: bool) -> None:
        if self.phase is not Phase.RESPONSE:
            return
        outbox = self.outbox
        if outbox.pending:  # the head deny_start queued
            if self._response_expected is None and not more:
                # the whole body in one message and no length given: say it, rather than close-delimit it
                outbox.queue(b"content-length: %d\r\n" % len(body))
            outbox.queue(b"\r\n")
            outbox.flush()
        if body:
            self.transport.write(body)
        if not more:
            self._done()
            self.transport.close()

    def deny_simple(self, status: int, body: bytes) -> None:
        self._http_response(status, body, [])

    def _http_response(self, status: int, body: bytes, extra: Headers) -> None:
        if self.phase is not Phase.HANDSHAKE:
            return
        extra_block = b"".join(name + b": " + value + b"\r\n" for name, value in extra) + self._rid_line([])
        self._done()
        self._log_handshake(status, len(body))
        self.transport.write(simple_response(status, self.ctx.fixed_headers, body, extra_block))
        self.transport.close()

    def abort(self) -> None:
        self._done()
        self.transport.abort()

    def _done(self) -> None:
        """Closing or closed: nothing more is read or written (the outbox lets go of the transport)."""
        self.phase = Phase.DONE
        self.outbox.detach()

    # -- flow control -----------------------------------------------------------------------------------
    def _release_held(self) -> None:
        held, self._held = self._held, None
        if held is not None and self.proto is not None:
            self._queue_writes(self.proto, held)

    def _pause(self, reason: int) -> None:
        self.outbox.pause_reading(reason)

    def _resume(self, reason: int) -> None:
        self.outbox.resume_reading(reason)

    def _wake_drain(self) -> None:
        self.outbox.wake_drain()

    def _wake_receiver(self) -> None:
        waiter, self._recv_waiter = self._recv_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _log_handshake(self, status: int, nbytes: int = 0) -> None:
        """The handshake is decided (accepted, denied, or its client gone: 499): its exchange finishes."""
        ex, self._ex = self._ex, None
        if ex is not None:
            ex.status = status
            ex.sent = nbytes
            self.ctx.request_finished(ex)

    # -- server-driven ----------------------------------------------------------------------------------
    def on_tick(self, now: float) -> None:
        """Keepalive pings, the close timeout, the control-frame budget, and the close 1001 of a graceful shutdown."""
        proto = self.proto
        if self.phase is not Phase.OPEN or proto is None:
            if self._abort_at is not None and now >= self._abort_at and self.phase is Phase.DONE:
                self._abort_at = None
                self.transport.abort()  # closed by us, and our last bytes not taken: the buffer is freed
            return
        proto.cheap_frames = 0
        if proto.state is OPEN:
            if self.ctx.shutting_down:
                self.shutdown()
                return
            ctx = self.ctx
            if self._ping_payload is not None:
                if now - self._ping_sent > ctx.ws_ping_timeout:
                    _error_log.info("WebSocket peer %s did not answer a ping in %.1fs: closing",
                                    describe_peer(self.client), ctx.ws_ping_timeout)
                    proto.fail(1011, "keepalive ping timeout")
                    self._closed_by_peer(1006)
                    self._take_writes(proto)
            elif ctx.ws_ping_interval and now - self._last_ping >= ctx.ws_ping_interval:
                self._pings += 1
                self._ping_payload = struct.pack("!I", self._pings)
                self._ping_sent = self._last_ping = now
                proto.send_ping(self._ping_payload)
                self._take_writes(proto)
        elif self._held is not None:
            self._release_held()
        elif self._closing_since is not None and now - self._closing_since > (
                SHUTDOWN_CLOSE_TIMEOUT if self.ctx.shutting_down else CLOSE_TIMEOUT):
            self.abort()

    def shutdown(self) -> None:
        """Graceful stop: close 1001 (going away: RFC 6455's code for a server going down, which clients of every
        kind know; 1012 "service restart" is only in IANA's registry); the app gets websocket.disconnect."""
        if self.phase is Phase.OPEN:
            self.close(1001, "server shutting down")

    def force_close(self) -> None:
        """The graceful timeout has passed: a socket still open gets 1001 (going away), then is dropped."""
        proto = self.proto
        if self.phase is Phase.OPEN and proto is not None and proto.state is State.OPEN:
            proto.send_close(1001, "server shutting down")
            self._take_writes(proto)
            self._flush()
        self._closed_by_peer(1001)
        self.abort()

