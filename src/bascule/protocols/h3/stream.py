"""One HTTP/3 request stream as the gateways see it: an :class:`~bascule.protocols.exchange.Exchange`.

The response rules are HTTP/2's, kept once in protocols/stream_exchange.py; this class encodes aioquic's
field lists and hands them and the body to the connection. What differs from HTTP/2 is what QUIC does for
us. The request body is buffered here and the stream's receive window follows the app's reading
(protocols/h3/quic.py: ``held`` is this buffer). Response bytes go to aioquic's stream send buffer at once:
QUIC flow control and congestion control decide when they leave, and aioquic keeps them until they are
acknowledged, without a bound of its own. So a stream whose unacknowledged bytes are over :data:`SEND_BUFFER`
is paused (``write_paused``; the gateways wait in drain()) until acknowledgements bring it under half of
that: a client that reads slowly costs the server at most that much per stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bascule.protocols.exchange import Headers
from bascule.protocols.h3.headers import RequestHead, response_fields, status_field
from bascule.protocols.stream_exchange import StreamExchange

if TYPE_CHECKING:
    from bascule.protocols.h3.connection import H3Conn

SEND_BUFFER = 256 * 1024  # unacknowledged response bytes a stream may have before it is paused


class H3Stream(StreamExchange):
    """One request/response on an HTTP/3 connection.

    Not compiled, while its bases are in the compiled build: their attributes live in the compiled object's
    slots, which compiled code (the gateways, the context) reads directly. So none of them may get a
    class-level value here (a class attribute would shadow the slot for Python code, and a write would then
    land in the instance dict where compiled code never looks): those without a default in the base are set
    in __init__. Class-level defaults below are this class's own attributes only.
    """

    conn: H3Conn
    websocket = False
    held = 0  # body bytes buffered here that the app has not read (they hold the stream's window shut)
    request_ended = False  # the client's side is complete (FIN), or it reset it
    local_ended = False  # our side is complete (FIN sent, or reset)

    def __init__(self, conn: H3Conn, stream_id: int, head: RequestHead) -> None:
        self.http_version = "3"
        self.wire = "h3"
        self.scheme = "https"
        self.start_time = 0.0
        self.disconnected = False
        self.response_started = False
        self.status = 0
        self.sent = 0
        self.write_paused = False
        self.cancel_app = None
        self.conn = conn
        self.stream_id = stream_id
        self.loop = conn.loop
        self._take_head(head, conn.ctx, conn.client, conn.server, conn.tls)

    # -- request body, fed by the connection (StreamExchange.feed) ------------------------------------
    def _admit(self, n: int) -> bool:
        if self.finished or self.disconnected:
            return False  # nobody will read it: not held, so the window stays open (the connection stops reading)
        self.held += n
        return True

    def _body_taken(self, n: int) -> None:
        self.held = 0
        if not self._body_done:
            self.conn.credit(self)

    # -- the wire: aioquic's field lists and frames ----------------------------------------------------
    def _encode_head(self, status: int, headers: Headers) -> tuple[Any, list[Any], int | None]:
        field = status_field(status)
        fields, content_length = response_fields(headers)
        return field, fields, content_length

    def _length_field(self, length: int) -> Any:
        return b"content-length", b"%d" % length

    def _drop_length(self, parts: list[Any]) -> list[Any]:
        return [f for f in parts if f[0] != b"content-length"]

    def _field(self, name: bytes, value: bytes) -> Any:
        return name, value

    def _interim_block(self, status: Any, parts: list[Any]) -> Any:
        return [status, *parts]

    def _final_block(self, status: Any, parts: list[Any]) -> Any:
        return [status, *self.conn.fixed_fields(), *parts]

    def _wire_headers(self, block: Any, end: bool) -> None:
        self.conn.send_headers(self, block, end)

    def _wire_whole(self, block: Any, body: bytes) -> None:
        if body:
            self.conn.send_headers(self, block, False)
            self.conn.send_data(self, body, True)
        else:
            self.conn.send_headers(self, block, True)

    def _wire_data(self, data: bytes, end: bool) -> None:
        self.conn.send_data(self, data, end)

    def _wire_trailers(self, trailers: Headers) -> None:
        fields, _ = response_fields(trailers)
        self.conn.send_headers(self, fields, True)

    def on_disconnect(self) -> None:
        self.held = 0
        super().on_disconnect()

    def _response_done(self) -> None:
        self.conn.response_done(self)

    def abort(self) -> None:
        """Give up on the response: RESET_STREAM (H3_INTERNAL_ERROR); the connection and its other streams
        go on."""
        self.conn.reset(self)
        if not self.finished:
            self.finished = True
            self.conn.response_done(self, aborted=True)
        self.on_disconnect()
