"""One request of a CGI-family wire (uwsgi, SCGI, FastCGI) through the Exchange seam: its body and response.

nginx's ``uwsgi_pass``, ``scgi_pass`` and ``fastcgi_pass`` describe the request in CGI variables
(bascule.cgi) and read back a response that is not HTTP/1.1 framing: a head, then the body as is, no
chunked coding (nginx frames the response for its own client). What differs between the three wires is
small, and lives in the subclasses:

- the head's first line: uwsgi takes an HTTP/1.x status line (the shared writer's), SCGI and FastCGI a
  CGI ``Status:`` header (``cgi_status``);
- how bytes reach the socket (``_write``): raw on a uwsgi/SCGI connection, inside STDOUT records for the
  request's id on a FastCGI one;
- what completion means (``_response_done``, ``_close``): uwsgi and SCGI close the connection after the one
  response; FastCGI ends the request (END_REQUEST) and keeps the connection when the web server asked.

The rules of what a head says are HTTP's (protocols/semantics.py). A response without a declared length
ends with the request (the connection's close, or FastCGI's end of STDOUT); trailers are announced to
nobody and dropped, as none of these wires carries them; there is no ``100 Continue``: the web server has
taken the body from its client already, or streams it on its own initiative.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from time import perf_counter
from typing import IO
from urllib.parse import quote_from_bytes

from bascule.cgi import PATH_SAFE, CGIRequest, status_header
from bascule.context import ServerContext
from bascule.errors import AppProtocolError
from bascule.protocols.exchange import BufferedExchange, Headers
from bascule.protocols.http1x import STATUS_LINES, header_block, status_line
from bascule.protocols.outbox import Outbox
from bascule.protocols.semantics import bodiless, bodiless_length, expected_length, length_excess, log_length_error

BODY_HIGH_WATER = 256 * 1024
"""Request body bytes held for an app that has not read them before the connection stops reading."""


class CGIExchange(BufferedExchange):
    """The request and response state every CGI-family wire shares (class-level defaults, as H1Exchange)."""

    start_time = 0.0
    disconnected = False
    response_started = False
    status = 0
    sent = 0
    write_paused = False
    cancel_app: Callable[[], object] | None = None
    cgi_status = False
    """The head starts with ``Status: 200 OK`` (SCGI, FastCGI) rather than ``HTTP/1.1 200 OK`` (uwsgi)."""
    _body_size = 0
    reading_paused = False
    _expected: int | None = None
    _trailers = False
    ctx: ServerContext
    """The connection's context (the server's fixed header lines, which change every second with the date)."""
    outbox: Outbox
    """The connection's outbox: its drain is every request's on the connection."""

    def __init__(self, method: str, raw_path: bytes, query: bytes, headers: Headers, http_version: str,
                 scheme: str, client: tuple[str, int] | None, server: tuple[str, int] | None) -> None:
        self.method = method
        self.raw_path = raw_path
        self.query_string = query
        self.headers = headers
        self.http_version = http_version
        self.scheme = scheme
        self.client = client
        self.server = server

    # -- what each wire does ------------------------------------------------------------------------
    @abc.abstractmethod
    def _write(self, data: bytes) -> None:
        """Queue response bytes (head and body) for the socket, framed as the wire wants."""

    @abc.abstractmethod
    def _pause_reading(self, paused: bool) -> None:
        """Stop (True) or resume (False) reading the connection for this request's unread body."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Give up: the response was cut short, so the connection goes, and the web server sees the error."""

    # -- request body, fed by the connection ---------------------------------------------------------
    def feed_body(self, data: bytes) -> None:
        if self.finished or not data:
            return  # the response is done; the rest of the body is read and dropped
        if self._body is None:
            self._body = []
        self._body.append(data)
        self._body_size += len(data)
        if self._body_waiter is not None:
            self._wake_body()
        if self._body_size > BODY_HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            self._pause_reading(True)

    def take_buffered_body(self) -> bytes | None:
        if not self._body_done:
            return None
        return self._take()

    async def receive_body(self) -> bytes:
        while not self._body and not self._body_done and not self.disconnected:
            self._body_waiter = self.loop.create_future()
            self._resume()
            await self._body_waiter
        return self._take()

    def _take(self) -> bytes:
        body = self._body
        if not body:
            return b""
        self._body = None
        self._body_size = 0
        self._resume()
        return b"".join(body) if len(body) != 1 else body[0]

    def _resume(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self._pause_reading(False)

    # -- response ---------------------------------------------------------------------------------------
    def send_head(self, status: int, headers: Headers, body: bytes = b"", end: bool = False,
                  trailers: bool = False) -> None:
        if self.response_started:
            raise AppProtocolError("the response was already started")
        if type(status) is not int or not 100 <= status <= 999:
            raise AppProtocolError(f"invalid status code {status!r}")
        if self.cgi_status:
            line = status_header(status)
        else:
            known = STATUS_LINES.get(status)
            line = known if known is not None else status_line(status)
        block, content_length, _ = header_block(headers)  # "connection: close" goes without saying here
        self.response_started = True
        self.status = status
        if self.perf_start:  # an observer listens (the access log reads it): else no clock read
            self.head_time = perf_counter()
        self._trailers = trailers  # announced, never written: none of these wires carries trailers
        if status < 200 or bodiless(self.method, status):
            self.no_body = True
            content_length = bodiless_length(status, content_length, end, body)
        else:
            content_length = self._expected = expected_length(content_length, end, trailers, body)
        if self.disconnected:
            return
        framing = b"" if content_length is None else b"content-length: %d\r\n" % content_length
        if self.rid_header is None:
            self._emit([line, self.ctx.fixed_base, block, framing, b"\r\n"], body, end)
        else:  # --request-id's echo: a server field, out of the app's cached block, in the one join
            self._emit([line, self.ctx.fixed_base, self.rid_header, b": ", (self.rid or "").encode("ascii"),
                        b"\r\n", block, framing, b"\r\n"], body, end)

    def _emit(self, parts: list[bytes], data: bytes, end: bool) -> None:
        """Write ``parts`` plus ``data`` in one write, checked against the declared length; finish when ``end``."""
        if data and not self.no_body:
            self.sent += len(data)
            parts.append(data)
        last = end and not self._trailers
        if not self.no_body and self._expected is not None:
            excess = length_excess(self.sent, self._expected, last)
            if excess:
                log_length_error(self, self.sent, self._expected, "connection closed")
                if excess < 0:  # what was sent goes out; the web server sees it cut short
                    self._write(b"".join(parts))
                self.abort()
                return
        if parts:
            self._write(b"".join(parts) if len(parts) != 1 else parts[0])
        if last:
            self._finish()

    def _length_error(self, total: int) -> None:
        """A file about to take the body past its declared length: log it, give the response up."""
        expected = self._expected
        log_length_error(self, total, expected if expected is not None else 0, "connection closed")
        self.abort()

    def send_body(self, data: bytes, end: bool = False) -> None:
        if not self.response_started or self.finished:
            raise AppProtocolError("send_body() outside a started response")
        if not self.disconnected:
            self._emit([], data, end)

    def send_trailers(self, trailers: Headers) -> None:
        if not self.finished and not self.disconnected:
            self._finish()  # dropped: no chunked coding or trailer record to carry them

    async def drain(self) -> None:
        await self.outbox.drain()

    def on_disconnect(self) -> None:
        """The client is gone (the connection, or FastCGI's ABORT_REQUEST): wake everything that waits."""
        self.disconnected = True
        self._wake_body()
        self._wake_disconnect()
        if self.writable_hook is not None:
            self.writable_hook()

    def abort(self) -> None:
        if not self.finished:
            self.finished = True
            self._response_done_aborted()
        self._close()

    @abc.abstractmethod
    def _response_done_aborted(self) -> None:
        """Report a response given up (the request observers), before ``_close``."""

    @property
    def can_sendfile(self) -> bool:
        return False  # WSGI thread mode's blocking sendfile: its file_wrapper is iterated instead

    def send_file_blocking(self, file: IO[bytes], offset: int, count: int) -> int:
        raise RuntimeError("blocking sendfile is not offered over uwsgi, SCGI or FastCGI (can_sendfile is False)")


def cgi_simple_response(status: int, fixed_headers: bytes, body: bytes) -> bytes:
    """A complete small response of the server's own (503, 413) as a CGI response: SCGI and FastCGI."""
    return (status_header(status) + fixed_headers + b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body)


def take_proxy_facts(ex: CGIExchange, req: CGIRequest) -> None:
    """Make ``ex`` what a trusted web server says of its client (the caller checked the peer against
    --forwarded-allow-ips): client, scheme, server, mount point, and the variables bascule does not read.

    As with a trusted proxy's X-Forwarded-* headers (ServerContext.forwarded), the connection's own client
    stays as ``ex.peer`` with ``ex.proxied`` set: the access log's ``{client}`` and the ``bascule.peer``
    keys show it. The mount point is :func:`script_root`'s."""
    ex.proxied = True
    ex.peer = ex.client
    if req.client is not None:
        ex.client = req.client
    if req.scheme is not None:
        ex.scheme = req.scheme
    if req.server is not None:
        ex.server = req.server
    script = req.script_name
    if script:
        root, rest = script_root(script, ex.raw_path)
        if root is not None:
            ex.root_path = root
            ex.raw_path = rest
    if req.extra:
        ex.cgi_extra = req.extra


def script_root(script_name: bytes, raw_path: bytes) -> tuple[str | None, bytes]:
    """The mount point a trusted ``SCRIPT_NAME`` gives, and the path below it: (None, raw_path) when it
    gives none.

    ``SCRIPT_NAME`` is the app's mount point only when it is a proper prefix of the path, ending at a
    ``/``: ``uwsgi_param SCRIPT_NAME /app`` with ``/app/users`` gives root ``/app`` and path ``/users``, as
    a proxy that strips X-Forwarded-Prefix would. nginx's stock ``fastcgi_params`` set it to the whole
    script path (``$fastcgi_script_name``, for PHP; ``/shop/`` for a path ending in ``/``), and that is
    ignored, as is anything not a prefix: the path stays whole and the mount point is --root-path's. The
    variable is decoded text and the path is as the client sent it, so the prefix must match literally or
    once percent-encoded."""
    name = script_name.rstrip(b"/")
    if not name or name[0] != 0x2F:
        return None, raw_path
    quoted = quote_from_bytes(name, PATH_SAFE).encode("ascii")
    # a literal "%" in the decoded name stands for itself: only its encoded form ("%25") can match the path
    for prefix in (quoted,) if b"%" in name else (name, quoted):
        size = len(prefix)
        if len(raw_path) > size and raw_path[size] == 0x2F and raw_path.startswith(prefix):
            if raw_path[size:] == script_name[len(name):]:
                return None, raw_path  # the whole path with its trailing "/": stock fastcgi_params for "/shop/"
            try:
                root = name.decode("utf-8")
            except UnicodeDecodeError:
                return None, raw_path
            return root, raw_path[size:]
    return None, raw_path
