"""WebSockets over HTTP/3 (RFC 9220), the stream's side: an extended CONNECT stream is the WebSocket's pipe.

RFC 9220 carries RFC 8441's extended CONNECT over to HTTP/3 unchanged, so the session is the one HTTP/2 uses
(protocols/websocket's, through ``ctx.upgrades.websocket_over_stream``: this package does not import it), and
so is the pipe between them (protocols/stream_pipe.py's :class:`StreamPipe`). What is HTTP/3's is
:class:`H3WSStream`, its :class:`~bascule.protocols.stream_pipe.StreamWire`: writes are DATA frames, the end
is our FIN, an abort a reset of both sides, and a held byte is counted in ``held``, which keeps the QUIC
stream window shut (protocols/h3/quic.py) until the app catches up; bytes never held open it by themselves.
aioquic advertises SETTINGS_ENABLE_CONNECT_PROTOCOL on every connection; a server without a WebSocket route
answers 404.
"""

from __future__ import annotations

from typing import Any

from bascule.protocols.h3.stream import H3Stream
from bascule.protocols.stream_pipe import StreamPipe


class H3WSStream(H3Stream):
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

    # -- StreamWire: the pipe's calls on HTTP/3 ---------------------------------------------------------
    def can_send(self) -> bool:
        return not self.local_ended

    def peer_ended(self) -> bool:
        return self.request_ended

    def reset_stream(self) -> None:
        super().abort()  # both sides

    def consumed(self, n: int) -> None:
        pass  # never held: QUIC opens the window for these bytes by itself

    def hold(self, n: int) -> None:
        self.held += n

    def release(self, n: int) -> None:
        if self.held:  # zero once the stream is gone (on_disconnect)
            self.held = 0
            self.conn.credit(self)
