"""One FastCGI request through the Exchange seam: protocols/cgi_exchange.py's rules, in STDOUT records.

Everything the response writes goes out as STDOUT records for the request's id (several requests may share
the connection, their records interleaved); the connection ends the request with the empty STDOUT record
and END_REQUEST once the response is complete. A file to send is read in pieces and sent as records under
flow control (the seam's default ``send_file``): ``os.sendfile`` cannot put record headers around the
kernel's copy while other requests write to the same socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bascule.protocols import fastcgi_wire
from bascule.protocols.cgi_exchange import CGIExchange
from bascule.protocols.exchange import Headers

if TYPE_CHECKING:
    from bascule.protocols.fastcgi.connection import FcgiConnection


class FcgiExchange(CGIExchange):
    """One request of a FastCGI connection, told apart from the others on it by ``request_id``."""

    conn: FcgiConnection
    cgi_status = True
    wire = "fastcgi"
    received = 0
    """Body bytes received (STDIN), against --limit-request-body when no CONTENT_LENGTH announced them."""
    declared: int | None = None
    """CONTENT_LENGTH, when the web server gave one: STDIN must carry exactly that many bytes."""
    served = False
    """Handed to the app (ServerContext.serve): an ABORT_REQUEST before that skips the app."""

    def __init__(self, conn: FcgiConnection, request_id: int, keep_conn: bool, method: str, raw_path: bytes,
                 query: bytes, headers: Headers, http_version: str, scheme: str, client: tuple[str, int] | None,
                 server: tuple[str, int] | None) -> None:
        super().__init__(method, raw_path, query, headers, http_version, scheme, client, server)
        self.conn = conn
        self.loop = conn.loop
        self.ctx = conn.ctx
        self.outbox = conn.outbox
        self.request_id = request_id
        self.keep_conn = keep_conn
        """FCGI_KEEP_CONN: the web server keeps the connection after this request; without it, it is closed."""

    def _write(self, data: bytes) -> None:
        self.outbox.write(fastcgi_wire.stdout(self.request_id, data))

    def _pause_reading(self, paused: bool) -> None:
        self.conn.pause_for_body(paused)

    def _response_done(self) -> None:
        self.conn.response_done(self)

    def _response_done_aborted(self) -> None:
        self.conn.response_done(self, aborted=True)

    def _close(self) -> None:
        self.conn.close()

    def abort(self) -> None:
        """Give up a response cut short: the close is the only way FastCGI has to tell the web server so (an
        END_REQUEST would pass the truncated body as whole). A request already ended - its END_REQUEST sent,
        or the web server's ABORT_REQUEST - is left alone: the app raised after a complete response (as
        Starlette's error middleware does after its 500), and closing then would cut the requests multiplexed
        beside it and race the web server, which has put the kept connection back in its pool."""
        if self.finished:
            return
        super().abort()

    def refuse(self, status: int, body: bytes) -> None:
        """At --limit-concurrency (ServerContext.serve): END_REQUEST with FCGI_OVERLOADED, the protocol's own
        answer, so a web server with another upstream can send the request there; no app runs."""
        self.status = status
        self.finished = True
        self.conn.overloaded(self)
