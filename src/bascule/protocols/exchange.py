"""The seam between protocols and gateways: one request and its response, as direct method calls.

A protocol (HTTP/1.1 today, HTTP/2 later) fills in the request fields and implements the methods; the
ASGI and WSGI gateways only use this interface, never sockets. That is what lets every protocol serve
every kind of app without N x M code. There are no event objects, queues or tasks per request here: the
hot path is plain attribute reads and method calls on the event-loop thread.

Threading rule: every method runs on the event-loop thread, except those whose docstring says otherwise.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import IO, Any, Final, Protocol

from bascule.compile_hints import mypyc_attr
from bascule.errors import AppProtocolError, ClientDisconnected
from bascule.protocols.fields import check_field
from bascule.protocols.sendfile import send_chunks

__all__ = ["AppRun", "BufferedExchange", "ClientDisconnected", "Exchange", "Headers", "WebSocketClosed",
           "WebSocketSession", "app_bytes", "app_headers", "app_int", "check_interim", "describe_peer",
           "peer_address"]

Headers = list[tuple[bytes, bytes]]


def app_headers(raw: Any) -> Headers:
    """An app's ``headers`` as the protocols take them: a list of 2-tuples.

    ASGI allows any iterable of 2-item iterables. Pairs that are not 2-tuples of bytes (lists, from
    JSON-minded code; bytearray or memoryview names and values) are converted here, once, so the
    protocols can unpack them as ``tuple[bytes, bytes]`` (which compiled code checks). A pair of the wrong
    length, or a str or int inside one, raises TypeError/ValueError: the gateway's AppProtocolError.
    """
    headers = list(raw)
    for i, pair in enumerate(headers):
        if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not bytes or type(pair[1]) is not bytes:
            name, value = pair
            what = "ASGI header names and values"
            headers[i] = (app_bytes(name, what), app_bytes(value, what))
    return headers


def app_bytes(value: object, what: str) -> bytes:
    """A bytes field of an app's message or body: bytes as they are, bytearray and memoryview copied
    (apps build buffers), anything else (str included) the app's error. Callers on the hot path test
    ``type(value) is bytes`` first and call this only for the rest."""
    if type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise AppProtocolError(f"{what} must be bytes, got {type(value).__name__}")


def app_int(value: object, what: str) -> int:
    """An int field of an app's message (a status, a close code): an int as it is, an ``IntEnum`` member
    such as ``HTTPStatus.CREATED`` (which Starlette passes through) as its value; anything else, bool
    included, is the app's error."""
    if type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise AppProtocolError(f"{what} must be an int, got {value!r}")


_NOT_IN_INTERIM: Final = frozenset((b"content-length", b"transfer-encoding", b"connection"))


def check_interim(status: object, headers: Any) -> int:
    """An app's informational (1xx) response checked, its status returned: raises AppProtocolError, with
    nothing written, unless the status is 102-199 and every field may be written (protocols/fields.py).

    100 is the server's own (sent when the app first reads a body that ``Expect: 100-continue`` held
    back) and 101 is an upgrade the server performs, so neither is the app's to send; 103 Early Hints is
    what apps send. A 1xx carries no content and cannot end the connection, so its framing fields would
    be lies: refused. Checked the same on every wire, the ones that drop interim responses too, so an
    app's mistake shows wherever it runs.
    """
    code = app_int(status, "an informational response's status")
    if not 102 <= code <= 199:
        raise AppProtocolError(f"an app's informational response must have a status of 102-199, got {code}")
    for pair in headers:
        name, value = pair
        check_field(name, value, "informational header")
        if name.lower() in _NOT_IN_INTERIM:
            raise AppProtocolError(f"an informational response may not carry {name!r}")
    return code


def peer_address(info: Any) -> tuple[str, int] | None:
    """A transport's ``peername``/``sockname`` as the (host, port) scopes want; None for Unix sockets."""
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


def describe_peer(addr: tuple[str, int] | None) -> str:
    """'host:port' for log lines, 'unix socket' when there is no address."""
    return f"{addr[0]}:{addr[1]}" if addr else "unix socket"


class AppRun(Protocol):
    """A running app call, as far as a protocol needs to know: whether it has returned."""

    def done(self) -> bool: ...


@mypyc_attr(allow_interpreted_subclasses=True)  # a seam: other protocols and test doubles implement it
class Exchange(abc.ABC):
    """One request/response pair. Request fields are set before the gateway sees it and never change."""

    method: str
    http_version: str
    scheme: str
    raw_path: bytes
    query_string: bytes
    headers: Headers
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    root_path: str | None = None
    """None: the server's own mount point (--root-path, with the app's --mount prefix); a str: the one a
    trusted proxy gave (X-Forwarded-Prefix), which replaces --root-path for this request."""
    proxied = False
    """A trusted proxy's headers changed ``client``/``scheme``/``server``/``root_path``/the Host header
    (ServerContext.forwarded); ``peer`` then holds the connection's own client."""
    peer: tuple[str, int] | None = None
    """The connection's client (the socket's peer, or a PROXY protocol header's source) when ``proxied``."""
    cgi_extra: Headers | None = None
    """The CGI variables a trusted web server sent (uwsgi, SCGI, FastCGI) that bascule does not read itself
    (``DOCUMENT_ROOT``, ``REMOTE_USER``, a deployment's ``fastcgi_param APP_ENV prod``): WSGI environ keys."""
    loop: asyncio.AbstractEventLoop
    start_time: float
    """The loop's time when the request head was complete, set by the protocol for every exchange the
    server takes on (context.ServerContext.request_started): request durations start here."""
    disconnected: bool
    response_started: bool
    status: int
    sent: int
    """Response body bytes written so far (for the request observers; a WebSocket handshake's own)."""
    perf_start = 0.0
    """``time.perf_counter()`` when the server took the request on (ServerContext.request_started, only
    when an observer listens): what the access log and the metrics measure durations from. Not
    ``start_time``: uvloop's clock counts whole milliseconds, once per loop pass, so a fast request
    would measure 0."""
    head_time = 0.0
    """``time.perf_counter()`` when the response head was handed to the transport (HTTP/1.1, HTTP/2,
    uwsgi, SCGI, FastCGI set it in send_head, when ``perf_start`` is set: only observers read it); 0.0
    where no head was sent this way. The access log's time to first byte, from ``perf_start``."""
    rid: str | None = None
    """This request's id (ServerContext.request_started, with --request-id: ops/request_id.py); None when off.
    Not ``request_id``: FastCGI's exchanges use that name for the wire's own request number."""
    rid_header: bytes | None = None
    """The field (lower-case name) that echoes ``rid`` in the response head, which every wire's send_head adds
    as one of the server's own fields (never through the app's, whose blocks are cached per header set); set
    with ``rid``, cleared by a gateway whose app set that field itself."""
    live = False
    """Reported started and not finished yet: the guard that makes request_finished happen exactly once."""
    dropped = False
    """Finished because the client went away before the response was complete (the observers read it)."""
    finished = False
    """The response is complete or given up: nothing more may be sent."""
    no_body = False
    """The response carries no content whatever the app sends (HEAD, 1xx, 204, 304): set with the head."""
    counted = False  # counted in ServerContext.in_flight (--limit-concurrency) until request_finished
    received = 0
    """Request body bytes received so far (--limit-request-body; the metrics' received bytes)."""
    wire = "http"
    """The wire this exchange came by, for the metrics' ``protocol`` label: "http" (HTTP/1.x, with
    ``http_version``), "h2", "h3", "uwsgi", "scgi", "fastcgi"."""
    static = False
    """Answered by a --static mount (static/handler.py): the metrics count these apart."""
    writable_hook: Callable[[], None] | None = None
    cancel_app: Callable[[], object] | None
    """Set by a gateway whose app runs as a task: the protocol calls it when --timeout-request expires."""
    cancelled = False
    """The client cancelled the request explicitly (HTTP/2 RST_STREAM): an app not started yet is skipped.
    A client that merely disconnects (fire-and-forget senders close right after sending) still gets its
    request run, as on every other server."""
    app_task: Any = None  # an AppRun or None (mypyc leaves a Protocol-typed default unset: typed Any)
    """Set by a gateway whose app runs beyond the dispatch call (an ASGI task that suspended, a WSGI run on
    a thread): HTTP/2 counts a stream reset by the client against its concurrency limit until the run is
    done (rapid reset)."""
    tls: dict[str, Any] | None = None
    """The ASGI ``tls`` extension's dict of the connection (bascule.tls.tls_extension) over TLS; None over
    plain TCP. Set once per connection, shared by its requests: read it, never change it."""
    write_paused: bool
    """True while the transport's buffer is above its high-water mark (kept up to date by the protocol,
    a plain attribute because every send reads it)."""
    """Called when writing may go on (buffer drained, or connection gone): wakes a WSGI thread."""

    # -- request body -------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def body_done(self) -> bool:
        """True once the whole request body has been handed to the gateway (or there was none)."""

    @abc.abstractmethod
    async def receive_body(self) -> bytes:
        """The next piece of the request body; b'' once it is all read or the client is gone.

        The first call sends ``100 Continue`` when the client asked for it, so clients that wait for it
        send the body only when the app really reads it.
        """

    @abc.abstractmethod
    def take_buffered_body(self) -> bytes | None:
        """If the whole body has already arrived, take it all at once (fast path); else None."""

    # -- response -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def send_head(self, status: int, headers: Headers, body: bytes = b"", end: bool = False,
                  trailers: bool = False) -> None:
        """Start the response, with its first body bytes joined in the same write when given.

        ``end`` finishes the response. ``trailers`` announces that send_trailers() will follow.
        Raises AppProtocolError (nothing written) for headers that could split the response.
        """

    def prepare_thread_send(self) -> bool:
        """On the loop, as a WSGI pool thread is given this request: make :meth:`send_from_thread` possible
        (HTTP/1.1 opens the connection's ThreadWriter), and say whether it is. This default: False, the
        response goes through the loop."""
        return False

    def send_from_thread(self, status: int, headers: Headers, body: bytes) -> bytes | None:
        """On a WSGI pool thread: write a complete response (``body`` whole) to the socket from this thread.

        None: not taken, and nothing written or changed: the caller sends it through the loop, as usual
        (any response this cannot write exactly as send_head would, or whenever something else may be on its
        way to the client). Otherwise the response is claimed (``response_started``) and what the socket did
        not take is returned: the caller then has the loop call :meth:`finish_thread_send` with it, which
        completes the response there. This default takes nothing (protocols/thread_writer.py says why the
        HTTP/1.1 exchange does)."""
        return None

    def finish_thread_send(self, rest: bytes) -> None:
        """On the loop, after :meth:`send_from_thread` took the response: write ``rest`` and complete it."""
        raise NotImplementedError("finish_thread_send() without send_from_thread()")

    @abc.abstractmethod
    def send_body(self, data: bytes, end: bool = False) -> None:
        """More body bytes; ``end`` finishes the response (unless trailers were announced)."""

    def send_informational(self, status: int, headers: Headers) -> None:
        """An interim 1xx response (103 Early Hints) before the final one: HTTP/1.1 and HTTP/2 write it.

        Raises AppProtocolError (nothing written) for a status or field :func:`check_interim` refuses, or
        once the response has started (a 1xx after the final head would be read as the next response's).
        This default only checks: uwsgi, SCGI and FastCGI cannot carry one. Their responses are read by a
        web server as a CGI-style head (FastCGI, SCGI) or one HTTP/1.x head per request (uwsgi), which
        would take a 1xx for the final response: hints there are the front server's to send. An HTTP/1.0
        client never gets one either (HTTP/1.0 has no 1xx responses: RFC 9110 15.2).
        """
        if self.response_started:
            raise AppProtocolError("an informational response after the response started")
        check_interim(status, headers)

    @abc.abstractmethod
    def send_trailers(self, trailers: Headers) -> None:
        """Finish a response started with ``trailers=True``; dropped where the protocol cannot carry them."""

    @abc.abstractmethod
    def send_simple(self, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> None:
        """A complete small response from the server itself (errors, 503)."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until writing may go on (returns at once if not paused or if the client is gone)."""

    @abc.abstractmethod
    async def wait_disconnect(self) -> None:
        """Wait until the response is complete or the client has gone (ASGI http.disconnect)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Give up on this response after it started: close the connection so the client sees the error."""

    @property
    @abc.abstractmethod
    def can_sendfile(self) -> bool:
        """True where send_file_blocking() may be used (plain TCP or Unix sockets)."""

    @abc.abstractmethod
    def send_file_blocking(self, file: IO[bytes], offset: int, count: int) -> int:
        """Worker-thread only: send ``count`` bytes of a regular file with os.sendfile after the head.

        Returns the number of bytes sent. The head must have been sent (without end) before.
        """

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of the open regular file ``fd`` from ``offset`` as body, after send_head
        (without end) and before the end of the response, which the caller sends (send_body or trailers).

        On the loop, never blocking it (protocols/sendfile.py): cleartext HTTP/1.1 overrides this with
        os.sendfile; this default reads bounded pieces and sends them under the wire's flow control. Sends
        nothing for a response without content (HEAD, 204, 304); stops early if the client goes away. A file
        shorter than ``count`` leaves the response short of its declared length, which ends it (aborted).
        The caller opened ``fd`` and closes it.
        """
        if not self.response_started or self.finished:
            raise AppProtocolError("send_file() outside a started response")
        if count > 0 and not self.no_body:
            await send_chunks(self, fd, offset, count)


@mypyc_attr(allow_interpreted_subclasses=True)  # HTTP/3's H3Stream is not compiled (aioquic dominates it)
class BufferedExchange(Exchange):
    """The parts HTTP/1.1 and HTTP/2 exchanges share: the request body buffer and its waiter, response
    completion, and the ``http.disconnect`` waiter. Class-level defaults are written only on change."""

    _body: list[bytes] | None = None
    _body_done = False
    _body_waiter: asyncio.Future[None] | None = None
    _disconnect_waiter: asyncio.Future[None] | None = None

    def end_body(self) -> None:
        self._body_done = True
        if self._body_waiter is not None:
            self._wake_body()

    def _wake_body(self) -> None:
        waiter, self._body_waiter = self._body_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def body_done(self) -> bool:
        return self._body_done and not self._body

    def send_simple(self, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> None:
        self.send_head(status, [(b"content-type", content_type)], body, end=True)

    def refuse(self, status: int, body: bytes) -> None:
        """Answer without running the app (the server is busy); HTTP/1.1 also closes the connection."""
        self.send_simple(status, body)

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self._response_done()
            self._wake_disconnect()

    @abc.abstractmethod
    def _response_done(self) -> None:
        """Tell the connection this response is complete (each subclass holds its own connection type)."""

    def _wake_disconnect(self) -> None:
        waiter, self._disconnect_waiter = self._disconnect_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_disconnect(self) -> None:
        if self.finished or self.disconnected:
            return
        if self._disconnect_waiter is None:
            self._disconnect_waiter = self.loop.create_future()
        await self._disconnect_waiter


class WebSocketClosed:
    """The end of a WebSocket as the app sees it: the close code and reason (1006 if the peer vanished)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason


@mypyc_attr(allow_interpreted_subclasses=True)
class WebSocketSession(abc.ABC):
    """One WebSocket handshake and, once accepted, its messages: the seam for the ``websocket`` scope.

    The protocol has checked the handshake before the gateway sees the session, so the app is only asked
    about well-formed requests. The app then accepts (101), or denies with an HTTP response of its own.
    Messages are whole (fragments joined, text decoded): ``str`` for text, ``bytes`` for binary.
    """

    http_version: str
    scheme: str  # "ws" or "wss"
    raw_path: bytes
    query_string: bytes
    headers: Headers
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    subprotocols: list[str]
    loop: asyncio.AbstractEventLoop
    tls: dict[str, Any] | None = None
    """The ASGI ``tls`` extension's dict over TLS (wss), as Exchange.tls; None over plain TCP."""
    root_path: str | None = None  # as Exchange's: from the handshake request
    proxied = False  # as Exchange's
    peer: tuple[str, int] | None = None  # as Exchange's
    rid: str | None = None  # as Exchange's: the handshake's request id

    @abc.abstractmethod
    async def receive(self) -> str | bytes | WebSocketClosed:
        """The next message; a WebSocketClosed once the connection has closed (and on every call after)."""

    @abc.abstractmethod
    def accept(self, subprotocol: str | None, headers: Headers) -> None:
        """Complete the handshake with 101; raises AppProtocolError for a subprotocol not offered."""

    @abc.abstractmethod
    async def send(self, data: str | bytes) -> None:
        """Send one message, waiting while the transport is paused; ClientDisconnected once closing."""

    @abc.abstractmethod
    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (after accept); raises AppProtocolError for an invalid code."""

    @abc.abstractmethod
    def deny_start(self, status: int, headers: Headers) -> None:
        """Deny the handshake with the app's own HTTP response (websocket.http.response.start)."""

    @abc.abstractmethod
    def deny_body(self, body: bytes, more: bool) -> None:
        """A piece of the denial's body; the connection closes after the last one."""

    @abc.abstractmethod
    def deny_simple(self, status: int, body: bytes) -> None:
        """Deny the handshake with a small plain-text response from the server (403, 500, 503)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop the connection at once (an app failed in the middle of a denial response)."""
