"""WebSockets over HTTP/2 (RFC 8441), the stream's side: an extended CONNECT stream is the WebSocket's pipe.

The session (handshake, frames, flow control, keepalive, the app's side) is protocols/websocket's, reached
through the upgrade registry (``ctx.upgrades.websocket_over_stream``), so this package does not import it.
What is HTTP/2's is the pipe: :class:`H2WSStream` is a :class:`~bascule.protocols.pipe.BytePipe` itself (its
writes are DATA frames, its close is END_STREAM, its abort RST_STREAM, and pausing its reading withholds the
window the client needs to send more), so one connection carries WebSockets and requests side by side and a
reset ends only its own stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bascule.protocols.h2.states import local_open, remote_open
from bascule.protocols.h2.stream import H2Stream
from bascule.protocols.pipe import PipeSession


class H2WSStream(H2Stream):
    """A stream that carries a WebSocket: its DATA goes to the session, not to a request body."""

    websocket = True
    reading_paused = False
    closing = False  # the session closed or aborted its pipe
    _uncredited = 0
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
            self.conn.credit_stream(self, len(data))
            return
        ws.data_received(data)
        if self.reading_paused:
            self._uncredited += len(data)  # the window closes: the client waits until the app catches up
        else:
            self.conn.credit_stream(self, len(data))

    def end_body(self) -> None:
        super().end_body()
        self.ws.input_ended()  # the client ended its side: the session ends ours once it is done reading
        self._lose()

    def on_disconnect(self) -> None:
        super().on_disconnect()
        self._lose()

    def _lose(self) -> None:
        if not self._lost and (not local_open(self.state) or self.disconnected) and not remote_open(self.state):
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
        """RST_STREAM, for the session's abort as for the connection's (H2Stream.abort)."""
        self.closing = True
        if local_open(self.state):
            super().abort()

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self._uncredited:
            n, self._uncredited = self._uncredited, 0
            self.conn.credit_stream(self, n)
