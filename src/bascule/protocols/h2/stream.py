"""One HTTP/2 stream as the gateways see it: an :class:`~bascule.protocols.exchange.Exchange`.

Split from protocols/h2/connection.py, which owns the connection (frames, settings, flow-control windows): the
stream buffers its request body (bounded by the stream window it advertised, returned to the client as the
app reads), encodes its response head, checks declared lengths, and keeps the DATA its window could not
take yet, so a stream whose client reads slowly waits alone while the others go on.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bascule.protocols.exchange import Headers
from bascule.protocols.h2 import frames as fr
from bascule.protocols.h2.headers import (
    CONTENT_LENGTH_PREFIX,
    RequestHead,
    content_length_field,
    encode_response_fields,
    encode_trailers,
    literal,
    status_field,
)
from bascule.protocols.h2.states import StreamState, local_open
from bascule.protocols.stream_exchange import StreamExchange

if TYPE_CHECKING:
    from bascule.protocols.h2.connection import H2Connection

_log = logging.getLogger("bascule.error")


class H2Stream(StreamExchange):
    """One request/response on an HTTP/2 connection (class-level defaults: written only on change); the
    response rules are StreamExchange's, this class encodes HPACK blocks and hands frames to the connection."""

    conn: H2Connection
    http_version = "2"
    start_time = 0.0
    disconnected = False
    response_started = False
    finished = False  # the app's response is complete (or given up)
    status = 0
    sent = 0
    write_paused = False
    cancel_app: Callable[[], object] | None = None
    websocket = False  # an extended CONNECT stream carrying a WebSocket (protocols/h2/websocket.py)
    no_body = False
    # RFC 9113 5.1, moved by the connection as frames go both ways (protocols/h2/states.py has the table);
    # a stream exists from the client's HEADERS on
    state = StreamState.OPEN
    received = 0
    wire = "h2"
    tls: dict[str, Any] | None = None
    unacked = 0  # body bytes the app has read and the client has not been given back as window (credit_stream)
    pending: deque[bytes] | None = None  # DATA payloads waiting for window
    pending_end = False
    pending_trailers: bytes | None = None

    def __init__(self, conn: H2Connection, stream_id: int, head: RequestHead) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.loop = conn.loop
        self.scheme = conn.scheme
        self.send_window = conn.peer_initial_window
        self.recv_window = conn.local_initial_window
        self._take_head(head, conn.ctx, conn.client, conn.server, conn.tls)

    # -- request body, fed by the connection (StreamExchange.feed) ------------------------------------
    def _admit(self, n: int) -> bool:
        if self.finished:
            self.conn.credit_stream(self, n)  # nobody will read it: give the window back
            return False
        return True

    def end_body(self) -> None:
        """END_STREAM received: the request body is complete."""
        self.state = StreamState.HALF_CLOSED_REMOTE if self.state is StreamState.OPEN else StreamState.CLOSED
        super().end_body()

    def _body_taken(self, n: int) -> None:
        if not self._body_done:
            self.conn.credit_stream(self, n)

    # -- the wire: HPACK blocks and frames (protocols/h2/output.py) ------------------------------------
    def _encode_head(self, status: int, headers: Headers) -> tuple[Any, list[Any], int | None]:
        field = status_field(status)
        parts, content_length = encode_response_fields(headers)
        return field, parts, content_length

    def _length_field(self, length: int) -> Any:
        return content_length_field(length)

    def _drop_length(self, parts: list[Any]) -> list[Any]:
        return [part for part in parts if part[:2] != CONTENT_LENGTH_PREFIX]

    def _field(self, name: bytes, value: bytes) -> Any:
        return literal(name, value)

    def _interim_block(self, status: Any, parts: list[Any]) -> Any:
        field: bytes = status
        return field + b"".join(parts)

    def _final_block(self, status: Any, parts: list[Any]) -> Any:
        field: bytes = status
        return field + self.conn.fixed_block() + b"".join(parts)

    def _wire_headers(self, block: Any, end: bool) -> None:
        self.conn.send_headers(self, block, end_stream=end)

    def _wire_whole(self, block: Any, body: bytes) -> None:
        self.conn.send_whole(self, block, body)

    def _wire_data(self, data: bytes, end: bool) -> None:
        self.conn.send_data(self, data, end)

    def _wire_trailers(self, trailers: Headers) -> None:
        self.conn.send_trailers(self, encode_trailers(trailers))

    def on_disconnect(self) -> None:
        self.pending = None  # queued DATA never goes now
        super().on_disconnect()

    def _response_done(self) -> None:
        self.conn.response_done(self)

    def abort(self) -> None:
        """Give up on the response: RST_STREAM (INTERNAL_ERROR); the connection and its other streams go on."""
        if local_open(self.state):
            self.conn.reset_stream(self, fr.INTERNAL_ERROR)
        if not self.finished:
            self.finished = True
            self.conn.response_done(self, aborted=True)
        self.on_disconnect()
