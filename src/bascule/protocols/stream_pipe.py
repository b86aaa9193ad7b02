"""The pipe of a WebSocket over an extended CONNECT stream (RFC 8441 over HTTP/2, RFC 9220 over HTTP/3).

Both wires carry the WebSocket the same way: the stream's DATA frames are the session's bytes, our end of
the stream is the session's close, a stream reset its abort, and pausing the session's reading keeps the
client's window shut until the app catches up. So :class:`StreamPipe` is the one
:class:`~bascule.protocols.pipe.BytePipe` for both, and each wire's stream (protocols/h2/websocket.py,
protocols/h3/websocket.py) only implements :class:`StreamWire`: its frame calls and how its window opens.
It lives beside the protocol packages, so neither wire imports the other (tests/listen/test_import_rules.py);
the session itself is reached through the upgrade registry, never imported.

Compiled with mypyc (setup.py COMPILED): every WebSocket message passes here on HTTP/2. The HTTP/3 stream is
interpreted code; it only implements the protocol, so nothing compiled is subclassed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bascule.context import ServerContext
    from bascule.protocols.exchange import Exchange, WebSocketSession
    from bascule.protocols.pipe import PipeSession


class StreamWire(Protocol):
    """What an extended CONNECT stream does for its pipe: the wire's own calls, and the exchange's state."""

    response_started: bool
    finished: bool
    disconnected: bool
    write_paused: bool  # the stream's (or connection's) send window or buffer is full

    def send_body(self, data: bytes, end: bool = False) -> None:
        """DATA to the client; ``end`` ends our side (END_STREAM, FIN)."""

    def can_send(self) -> bool:
        """Our side of the stream is still open: no end sent, not reset."""

    def peer_ended(self) -> bool:
        """The client's side of the stream is over: it ended it, or it was reset."""

    def reset_stream(self) -> None:
        """Give the stream up at once, unsent bytes too (the wire's stream abort: RST_STREAM, a QUIC reset)."""

    def consumed(self, n: int) -> None:
        """``n`` bytes were fed and not held (read at once, or dropped unread): their window may open now."""

    def hold(self, n: int) -> None:
        """``n`` bytes were fed while reading is paused: the client's window must stay shut for them."""

    def release(self, n: int) -> None:
        """The ``n`` bytes held so far are consumed (resume_reading): the client may send as much again."""


class StreamPipe:
    """A :class:`~bascule.protocols.pipe.BytePipe` over one extended CONNECT stream, and the session it feeds.

    The stream forwards what the client sends (:meth:`feed`, :meth:`peer_done`), its own end
    (:meth:`maybe_lost`) and its send window (:meth:`writable`); the session drives the BytePipe side.
    """

    __slots__ = ("_lost", "_withheld", "closing", "reading_paused", "wire", "ws")

    ws: PipeSession

    def __init__(self, wire: StreamWire) -> None:
        self.wire = wire
        self.closing = False  # the session closed or aborted its pipe
        self.reading_paused = False
        self._withheld = 0  # bytes fed while paused: their window opens on resume_reading
        self._lost = False

    def start(self, ctx: ServerContext, exchange: Exchange, handler: Callable[[WebSocketSession], None]) -> None:
        """Open the session (``exchange`` is the stream itself, answering the handshake) and start it."""
        make = ctx.upgrades.websocket_over_stream
        assert make is not None  # the connection opens WebSocket streams only when the slot is filled
        self.ws = make(ctx, self, exchange)  # held before it starts: the app may write at once
        self.ws.start(handler, b"")

    # -- what the peer sends, forwarded by the stream ---------------------------------------------------
    def feed(self, data: bytes) -> None:
        if not data:
            return
        n = len(data)
        ws = self.ws
        if not ws.takes_input():
            self.wire.consumed(n)  # dropped unread: never held, whatever the session's pause
            return
        ws.data_received(data)
        if self.reading_paused:
            self._withheld += n  # the window stays shut: the client waits until the app catches up
            self.wire.hold(n)
        else:
            self.wire.consumed(n)

    def peer_done(self) -> None:
        """The client ended its side: the session ends ours once it is done reading."""
        self.ws.input_ended()
        self.maybe_lost()

    def maybe_lost(self) -> None:
        """Once both sides are over (ours ended or gone, the client's ended), the session hears it, once."""
        wire = self.wire
        if not self._lost and (not wire.can_send() or wire.disconnected) and wire.peer_ended():
            self._lost = True
            self.ws.connection_lost(None)

    def writable(self) -> None:
        """The stream may send again (or is gone): the session's writes resume."""
        if not self.wire.write_paused:
            self.ws.resume_writing()

    # -- BytePipe: what the session drives --------------------------------------------------------------
    def write(self, data: bytes) -> None:
        wire = self.wire
        if data and not self.closing and wire.response_started and not wire.finished:
            wire.send_body(data)
            if wire.write_paused:
                self.ws.pause_writing()

    def writelines(self, list_of_data: Iterable[bytes]) -> None:
        self.write(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            wire = self.wire
            if wire.response_started and not wire.finished and not wire.disconnected:
                wire.send_body(b"", end=True)

    def abort(self) -> None:
        """Reset the stream, for the session's abort as for the connection's (the stream's abort comes here)."""
        self.closing = True
        if self.wire.can_send():
            self.wire.reset_stream()

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self._withheld:
            n, self._withheld = self._withheld, 0
            self.wire.release(n)
