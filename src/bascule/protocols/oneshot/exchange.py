"""The one request of a uwsgi or SCGI connection: protocols/cgi_exchange.py's rules, written raw on the socket.

There is nothing after the response on these connections (no keep-alive, no pipelining), so a response
without a declared length ends with the connection, and the file of a ``send_file`` goes straight to the
socket with ``os.sendfile`` (these listeners are never TLS).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bascule.errors import AppProtocolError
from bascule.protocols.cgi_exchange import CGIExchange
from bascule.protocols.exchange import Headers
from bascule.protocols.sendfile import file_after_queue, send_chunks

if TYPE_CHECKING:
    from bascule.protocols.oneshot.connection import OneshotConnection

PAUSE_BODY = 1  # why a connection stops reading (Outbox.pause_reading): a body the app has not read yet
_log = logging.getLogger("bascule.error")


class OneshotExchange(CGIExchange):
    """One request on a uwsgi or SCGI connection and the state of its response."""

    conn: OneshotConnection

    def __init__(self, conn: OneshotConnection, method: str, raw_path: bytes, query: bytes, headers: Headers,
                 http_version: str, scheme: str, client: tuple[str, int] | None,
                 server: tuple[str, int] | None) -> None:
        super().__init__(method, raw_path, query, headers, http_version, scheme, client, server)
        self.conn = conn
        self.loop = conn.loop
        self.ctx = conn.ctx
        self.outbox = conn.outbox
        self.cgi_status = conn.dialect.cgi_status
        self.wire = conn.dialect.name.lower()  # the metrics' protocol label: uwsgi, scgi

    def _write(self, data: bytes) -> None:
        self.outbox.write(data)

    def _pause_reading(self, paused: bool) -> None:
        if paused:
            self.outbox.pause_reading(PAUSE_BODY)
        else:
            self.outbox.resume_reading(PAUSE_BODY)

    def _response_done(self) -> None:
        self.conn.response_done(self)

    def _response_done_aborted(self) -> None:
        self.conn.response_done(self, aborted=True)

    def _close(self) -> None:
        self.conn.close()

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """os.sendfile once what is queued has left; pieces on an inherited socket the transport hides."""
        if not self.response_started or self.finished:
            raise AppProtocolError("send_file() outside a started response")
        if count <= 0 or self.no_body or self.disconnected:
            return
        conn = self.conn
        sock = conn.socket_fd()
        if sock is None:
            await send_chunks(self, fd, offset, count)
            return
        expected = self._expected
        if expected is not None and self.sent + count > expected:
            self._length_error(self.sent + count)
            return
        await file_after_queue(self, conn.outbox, conn.transport, sock, fd, offset, count)
