"""WebSockets over HTTP/3 (RFC 9220), the stream's side: an extended CONNECT stream is the WebSocket's pipe.

RFC 9220 carries RFC 8441's extended CONNECT over to HTTP/3 unchanged, so the session is the one HTTP/2 uses
(protocols/websocket's, through ``ctx.upgrades.websocket_over_stream``: this package does not import it), and
this module is modelled on protocols/h2/websocket.py. :class:`H3WSStream` is a
:class:`~bascule.protocols.pipe.BytePipe` itself: its writes are DATA frames, its close is our FIN, its abort
a reset of both sides, and pausing its reading keeps what the session was fed counted as held, which keeps
the QUIC stream window shut (protocols/h3/quic.py) until the app catches up. aioquic advertises
SETTINGS_ENABLE_CONNECT_PROTOCOL on every connection; a server without a WebSocket route answers 404.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bascule.protocols.h3.stream import H3Stream
from bascule.protocols.pipe import PipeSession


class H3WSStream(H3Stream):
    """A stream that carries a WebSocket: its DATA goes to the session, not to a request body."""

    websocket = True
    reading_paused = False
    closing = False  # the session closed or aborted its pipe
    _lost = False
    ws: PipeSession

    def start_websocket(self, handler: Any) -> None:
        make = self.conn.ctx.upgrades.websocket_over_stream
        assert make is not None  # the connection opens WebSocket streams only when the slot is filled
        self.ws = make(self.conn.ctx, self, self)  # held before it starts: the app may write at once
        self.ws.start(handler, b"")

    # -- what the peer sends ------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if not data:
            return
        ws = self.ws
        if not ws.takes_input():
            return  # dropped unread: never held, so the window stays open
        ws.data_received(data)
        if self.reading_paused:
            self.held += len(data)  # the window stays shut: the client waits until the app catches up

    def end_body(self) -> None:
        super().end_body()
        self.ws.input_ended()  # the client ended its side: the session ends ours once it is done reading
        self._lose()

    def on_disconnect(self) -> None:
        super().on_disconnect()
        self._lose()

    def _lose(self) -> None:
        if not self._lost and (self.local_ended or self.disconnected) and self.request_ended:
            self._lost = True
            self.ws.connection_lost(None)

    def wake_drain(self) -> None:
        super().wake_drain()
        if not self.write_paused:
            self.ws.resume_writing()

    def _finish(self) -> None:
        super()._finish()
        self._lose()

    # -- BytePipe: what the session drives ----------------------------------------------------------
    def write(self, data: bytes) -> None:
        if data and not self.closing and self.response_started and not self.finished:
            self.send_body(data)
            if self.write_paused:
                self.ws.pause_writing()

    def writelines(self, list_of_data: Iterable[bytes]) -> None:
        self.write(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            if self.response_started and not self.finished and not self.disconnected:
                self.send_body(b"", end=True)

    def abort(self) -> None:
        """Reset both sides, for the session's abort as for the connection's (H3Stream.abort)."""
        self.closing = True
        if not self.local_ended:
            super().abort()

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self.held:
            self.held = 0
            self.conn.credit(self)
