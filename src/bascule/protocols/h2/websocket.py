"""WebSockets over HTTP/2 (RFC 8441), the stream's side: an extended CONNECT stream is the WebSocket's pipe.

The session (handshake, frames, flow control, keepalive, the app's side) is protocols/websocket's, reached
through the upgrade registry (``ctx.upgrades.websocket_over_stream``), so this package does not import it.
The pipe between the two is the one HTTP/3 uses too (protocols/stream_pipe.py's :class:`StreamPipe`); what
is HTTP/2's is :class:`H2WSStream`, its :class:`~bascule.protocols.stream_pipe.StreamWire`: writes are DATA
frames, the end is END_STREAM, an abort RST_STREAM, and a held byte is window not given back, so the client
waits until the app catches up. One connection carries WebSockets and requests side by side, and a reset
ends only its own stream.
"""

from __future__ import annotations

from typing import Any

from bascule.protocols.h2.states import local_open, remote_open
from bascule.protocols.h2.stream import H2Stream
from bascule.protocols.stream_pipe import StreamPipe


class H2WSStream(H2Stream):
    """A stream that carries a WebSocket: its DATA goes to the session, not to a request body."""

    websocket = True
    pipe: StreamPipe

    def start_websocket(self, handler: Any) -> None:
        self.pipe = StreamPipe(self)
        self.pipe.start(self.conn.ctx, self, handler)

    # -- what the peer sends, and the stream's own end: told to the pipe --------------------------------
    def feed(self, data: bytes) -> None:
        self.received += len(data)
        self.pipe.feed(data)

    def end_body(self) -> None:
        super().end_body()
        self.pipe.peer_done()

    def on_disconnect(self) -> None:
        super().on_disconnect()
        self.pipe.maybe_lost()

    def wake_drain(self) -> None:
        super().wake_drain()
        self.pipe.writable()

    def _finish(self) -> None:
        super()._finish()
        self.pipe.maybe_lost()

    def abort(self) -> None:
        """The connection's abort goes through the pipe, as the session's does: the pipe is closing too."""
        self.pipe.abort()

    # -- StreamWire: the pipe's calls on HTTP/2 ---------------------------------------------------------
    def can_send(self) -> bool:
        return local_open(self.state)

    def peer_ended(self) -> bool:
        return not remote_open(self.state)

    def reset_stream(self) -> None:
        super().abort()  # RST_STREAM

    def consumed(self, n: int) -> None:
        self.conn.credit_stream(self, n)

    def hold(self, n: int) -> None:
        pass  # the window shuts by itself: the pipe gives these bytes back as credit only on release

    def release(self, n: int) -> None:
        self.conn.credit_stream(self, n)
