"""ASGI 3 gateway for HTTP: builds the scope from an exchange and runs the app's receive/send cycle.

The order of the app's ``send`` messages is an explicit state machine (:data:`TRANSITIONS`): a message the
current state does not allow raises :class:`AppProtocolError` inside the app, which then becomes a 500 (or
a closed connection if the response had started). ``http.response.start`` is held back until the first
body message, so a small response is one transport write.

WebSockets come through the same gateway (:meth:`ASGIGateway.handle_websocket`): their scope shares its
fields with the HTTP one (:meth:`ASGIGateway.scope`), and their message rules live in gateways/asgi_ws.py.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from bascule.compress import Compression, Encoder
from bascule.errors import AppProtocolError
from bascule.gateways.asgi_ws import WebSocketCycle
from bascule.gateways.eager import start_task
from bascule.ops.request_id import sets_field
from bascule.protocols.exchange import (
    ClientDisconnected,
    Exchange,
    Headers,
    WebSocketSession,
    app_bytes,
    app_headers,
    app_int,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("bascule.error")


class SendState(enum.Enum):
    """Where an ASGI HTTP response is in its life, from the server's side of ``send``."""

    START = "start"  # waiting for http.response.start
    BODY = "body"  # started; http.response.body messages until more_body is false
    TRAILERS = "trailers"  # body done, trailers announced; http.response.trailers until more_trailers is false
    DONE = "done"  # complete: nothing more may be sent


TRANSITIONS: dict[tuple[SendState, str], frozenset[SendState]] = {
    (SendState.START, "http.response.start"): frozenset({SendState.BODY}),
    (SendState.BODY, "http.response.body"): frozenset({SendState.BODY, SendState.TRAILERS, SendState.DONE}),
    (SendState.TRAILERS, "http.response.trailers"): frozenset({SendState.TRAILERS, SendState.DONE}),
    (SendState.BODY, "http.response.pathsend"): frozenset({SendState.TRAILERS, SendState.DONE}),
    (SendState.BODY, "http.response.zerocopysend"): frozenset({SendState.BODY, SendState.TRAILERS, SendState.DONE}),
    (SendState.START, "http.response.early_hint"): frozenset({SendState.START}),
    (SendState.START, "http.response.informational"): frozenset({SendState.START}),
}
"""Allowed (state, message type) pairs and the states each may lead to; every other pair is an error.

The two interim messages (103 Early Hints: asgiref's ``http.response.early_hint`` extension, and gunicorn's
``http.response.informational``) come before ``http.response.start``, any number of times. The extension's
text says "after the Response Start message", which cannot be meant: a 1xx after the final head would be
read as the next response's; hypercorn, which wrote the extension, also takes it only before the start."""


def decode_path(raw_path: bytes) -> str:
    """Percent-decode a request path as UTF-8 (invalid sequences become U+FFFD)."""
    if 37 in raw_path:  # "%": an int is looked up directly (a bytes needle costs bytes_contains a TypeError)
        raw_path = unquote_to_bytes(raw_path)
    return raw_path.decode("utf-8", "replace")


class ASGIGateway:
    """Serves exchanges to one ASGI 3 app mounted at ``prefix`` (below the server's ``root_path``)."""

    def __init__(self, app: ASGIApp, *, root_path: str = "", prefix: str = "",
                 compress: Compression | None = None) -> None:
        self.app = app
        self.compress = compress  # --compress: None when off (the head then tests this one attribute)
        self.root_path = root_path + prefix
        self.server_root = root_path
        self.raw_server_root = root_path.encode("utf-8")
        self.state: dict[str, Any] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def scope(self, kind: str, req: Exchange | WebSocketSession, extensions: dict[str, Any]) -> Scope:
        """The scope fields an ``http`` and a ``websocket`` scope share, from the request's fields."""
        raw_path = req.raw_path
        return {
            "type": kind,
            "asgi": {"version": "3.0", "spec_version": "2.4"},  # fresh dicts: apps may mutate their scope
            "http_version": req.http_version,
            "server": req.server,
            "client": req.client,
            "scheme": req.scheme,
            "root_path": self.root_path,
            "path": self.server_root + decode_path(raw_path),
            "raw_path": self.raw_server_root + raw_path,
            "query_string": req.query_string,
            "headers": req.headers,
            "state": self.state.copy(),
            "extensions": extensions,
        }

    def proxied(self, scope: Scope, req: Exchange | WebSocketSession) -> None:
        """A request a trusted proxy described (ServerContext.forwarded): its client, scheme, server and Host
        are already the request's; its mount point (X-Forwarded-Prefix) replaces --root-path here, and the
        connection's own client stays readable as ``scope["extensions"]["bascule.peer"]``."""
        scope["extensions"]["bascule.peer"] = {"client": req.peer}
        root = req.root_path
        if root is not None:
            raw_path = req.raw_path
            scope["root_path"] = root + self.root_path[len(self.server_root):]
            scope["path"] = root + decode_path(raw_path)
            scope["raw_path"] = quote(root).encode("ascii") + raw_path

    def handle(self, ex: Exchange) -> None:
        """Start the app for one request (called on the loop; returns at once)."""
        extensions: dict[str, Any] = {"http.response.trailers": {}, "http.response.pathsend": {},
                                      "http.response.zerocopysend": {}, "http.response.early_hint": {}}
        if ex.tls is not None:
            extensions["tls"] = ex.tls.copy()  # per scope: an app may change its scope
        scope = self.scope("http", ex, extensions)
        scope["method"] = ex.method
        if ex.proxied:
            self.proxied(scope, ex)
        cycle = HTTPCycle(ex, self.compress)
        if ex.rid is not None:  # --request-id (ops/request_id.py)
            extensions["bascule.request_id"] = {"id": ex.rid}
        task = start_task(ex.loop, cycle.run(self.app(scope, cycle.receive, cycle.send)))
        ex.cancel_app = task.cancel  # for --timeout-request
        if not cycle.ended:  # still running after its first step
            ex.app_task = task
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def handle_websocket(self, session: WebSocketSession) -> None:
        """Start the app for one WebSocket handshake (called on the loop; returns at once)."""
        extensions: dict[str, Any] = {"websocket.http.response": {}}
        if session.tls is not None:
            extensions["tls"] = session.tls.copy()
        scope = self.scope("websocket", session, extensions)
        scope["subprotocols"] = session.subprotocols
        if session.rid is not None:  # --request-id: as an HTTP scope's (the handshake's answer echoes it too)
            extensions["bascule.request_id"] = {"id": session.rid}
        if session.proxied:
            self.proxied(scope, session)
        cycle = WebSocketCycle(session)
        task = cycle.start(self.app(scope, cycle.receive, cycle.send))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class HTTPCycle:
    """The receive/send pair of one request, enforcing ASGI's message order.

    ``send`` and ``receive`` stay coroutines: awaiting a coroutine that returns without suspending takes
    CPython's exception-free return path, while awaiting an already-done future raises (and catches) a
    StopIteration per message (measured: more instructions per request, not fewer).
    """

    state = SendState.START
    ended = False  # run() is over: the app returned or raised
    request_done = False
    status = 0
    headers: Headers = []  # replaced, never mutated
    trailers = False
    trailer_headers: Headers | None = None
    encoder: Encoder | None = None  # --compress chose to compress this response: its later body messages

    def __init__(self, ex: Exchange, compress: Compression | None = None) -> None:
        self.ex = ex
        self.compress = compress

    async def run(self, awaitable: Awaitable[None]) -> None:
        """The app call and its outcome: started as a Task of its own by ASGIGateway.handle."""
        try:
            await awaitable
            self.ended = True
        except asyncio.CancelledError:  # --timeout-request, or a forced stop
            self.ended = True
            ex = self.ex
            if not ex.response_started:
                ex.send_simple(503, b"Service Unavailable: the server is shutting down\n")
            else:
                ex.abort()
            raise
        except Exception as exc:
            self.ended = True
            self.failed(exc)
        except BaseException as fatal:  # its own name: compiled code gives a local one type
            self.ended = True
            self.failed(fatal)
            raise
        else:
            if self.state is not SendState.DONE:
                self.returned()

    def failed(self, exc: BaseException) -> None:
        """The app raised: log it once; 500 if nothing was sent yet, else close the connection."""
        ex = self.ex
        if isinstance(exc, ClientDisconnected):
            _log.debug("client went away during %s %s", ex.method, ex.raw_path.decode("latin-1"))
            return
        _log.error("Exception in ASGI application (%s %s)", ex.method, ex.raw_path.decode("latin-1"), exc_info=exc)
        if ex.disconnected:
            return
        if not ex.response_started:
            ex.send_simple(500, b"Internal Server Error\n")
        else:
            ex.abort()

    def returned(self) -> None:
        """The app returned: a response it did not finish is a 500 (or a closed connection)."""
        ex = self.ex
        if self.state is not SendState.DONE and not ex.disconnected:
            if not ex.response_started:
                _log.error("ASGI app returned without sending a response (%s %s)", ex.method,
                           ex.raw_path.decode("latin-1"))
                ex.send_simple(500, b"Internal Server Error\n")
            else:
                _log.error("ASGI app returned without completing the response (%s %s); connection closed",
                           ex.method, ex.raw_path.decode("latin-1"))
                ex.abort()

    async def receive(self) -> Message:
        ex = self.ex
        if self.request_done or ex.disconnected or self.state is SendState.DONE:
            await ex.wait_disconnect()
            return {"type": "http.disconnect"}
        body = ex.take_buffered_body()
        if body is None:
            body = await ex.receive_body()
            if ex.disconnected:
                return {"type": "http.disconnect"}
            more = not ex.body_done
        else:
            more = False
        self.request_done = not more
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(self, message: Message) -> None:
        ex = self.ex
        try:
            mtype = message["type"]
        except (KeyError, TypeError):
            raise AppProtocolError(f"ASGI message without a 'type': {message!r}") from None
        state = self.state
        # Identity checks on the hot path (hashing an Enum member is a Python-level call); they encode
        # exactly TRANSITIONS, which the tests check pair by pair.
        if not ((state is SendState.BODY and mtype == "http.response.body")
                or (state is SendState.START and mtype == "http.response.start")
                or (state is SendState.TRAILERS and mtype == "http.response.trailers")):
            if state is SendState.BODY and mtype == "http.response.pathsend":
                await self.pathsend(message)
                return
            if state is SendState.BODY and mtype == "http.response.zerocopysend":
                await self.zerocopysend(message)
                return
            if state is SendState.START and (mtype == "http.response.early_hint"
                                             or mtype == "http.response.informational"):
                self.informational(mtype, message)
                return
            raise AppProtocolError(f"ASGI message {mtype!r} is not allowed in state {state.value!r} of an "
                                   f"HTTP response")
        if ex.disconnected:
            raise ClientDisconnected("the client has disconnected")
        try:
            if state is SendState.START:
                status = message["status"]
                if type(status) is not int:
                    status = app_int(status, "http.response.start 'status'")
                self.status = status
                self.headers = app_headers(message.get("headers", ()))
                if ex.rid_header is not None and sets_field(self.headers, ex.rid_header):
                    ex.rid_header = None  # the app echoes ids itself: its field alone
                self.trailers = bool(message.get("trailers", False))
                self.state = SendState.BODY
                return
            if state is SendState.BODY:
                body = message.get("body", b"")
                if type(body) is not bytes:
                    body = app_bytes(body, "http.response.body 'body'")
                more = bool(message.get("more_body", False))
                if not more:
                    self.state = SendState.TRAILERS if self.trailers else SendState.DONE
                if ex.response_started:
                    if self.encoder is not None:
                        body = self.encoder.chunk(body, not more)
                    ex.send_body(body, end=not more)
                else:
                    headers = self.headers
                    if self.compress is not None:
                        headers, body, self.encoder = self.compress.start(ex.headers, self.status, headers, body,
                                                                          not more)
                    ex.send_head(self.status, headers, body, end=not more, trailers=self.trailers)
                if ex.write_paused:
                    await ex.drain()
                return
            # trailers
            if self.trailer_headers is None:
                self.trailer_headers = []
            self.trailer_headers += app_headers(message.get("headers", ()))
            if not message.get("more_trailers", False):
                self.state = SendState.DONE
                ex.send_trailers(self.trailer_headers)
        except KeyError as missing:  # one name per handler: compiled code gives a name one type
            raise AppProtocolError(f"ASGI message {mtype!r} lacks the required key {missing}") from None
        except (TypeError, ValueError) as exc:
            raise AppProtocolError(f"invalid ASGI message {mtype!r}: {exc}") from exc

    def informational(self, mtype: str, message: Message) -> None:
        """An interim response before the start: ``http.response.early_hint`` (``links``: Link field values,
        each sent as a ``link`` field of a 103) or ``http.response.informational`` (``status`` and
        ``headers``, as http.response.start's). Dropped where the request cannot get one (HTTP/1.0; uwsgi,
        SCGI and FastCGI); checked everywhere (Exchange.send_informational)."""
        ex = self.ex
        if ex.disconnected:
            raise ClientDisconnected("the client has disconnected")
        try:
            if mtype == "http.response.early_hint":
                links = message["links"]
                if isinstance(links, (bytes, str)):  # an iterable, but of ints or characters: never meant
                    raise AppProtocolError("http.response.early_hint 'links' must be an iterable of bytes")
                headers = [(b"link", app_bytes(link, "http.response.early_hint links")) for link in links]
                status = 103
            else:
                status = app_int(message["status"], "http.response.informational 'status'")
                headers = app_headers(message.get("headers", ()))
        except KeyError as missing:
            raise AppProtocolError(f"ASGI message {mtype!r} lacks the required key {missing}") from None
        except (TypeError, ValueError) as exc:
            raise AppProtocolError(f"invalid ASGI message {mtype!r}: {exc}") from exc
        ex.send_informational(status, headers)

    async def pathsend(self, message: Message) -> None:
        """``http.response.pathsend``: the rest of the body is the file at ``path``, which the server opens,
        sends with Exchange.send_file (sendfile or pieces under flow control) and closes. Before any body,
        the file's size is the Content-Length unless the app declared one (then at most that much is sent)."""
        ex = self.ex
        if ex.disconnected:
            raise ClientDisconnected("the client has disconnected")
        path = message.get("path")
        if type(path) is not str:
            raise AppProtocolError(f"http.response.pathsend 'path' must be a str, got {type(path).__name__}")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise AppProtocolError(f"http.response.pathsend could not open {path!r}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise AppProtocolError(f"http.response.pathsend {path!r} is not a regular file")
            count = info.st_size
            if not ex.response_started:
                headers = self.headers
                declared = _declared_length(headers)
                if declared is None:
                    headers = [*headers, (b"content-length", b"%d" % count)]
                elif declared.isdigit():
                    count = min(count, int(declared))
                ex.send_head(self.status, headers, b"", end=False, trailers=self.trailers)
            self.state = SendState.TRAILERS if self.trailers else SendState.DONE
            if self.encoder is not None:  # body messages before it started a compressed stream: go on with it
                await self.encode_file(fd, 0, count, True)
                return
            await ex.send_file(fd, 0, count)
        finally:
            os.close(fd)
        if not self.trailers and not ex.disconnected and not ex.finished:
            ex.send_body(b"", end=True)
        if ex.write_paused:
            await ex.drain()

    async def encode_file(self, fd: int, start: int, count: int, end: bool) -> None:
        """File bytes inside a compressed stream: read and compressed piece by piece; ``end`` finishes the
        stream (and the body, unless trailers follow). Only an app that sent body bytes before its pathsend or
        zerocopysend gets here; one right after the start is sent as it is, zero-copy, never compressed
        (docs/compression.md)."""
        ex = self.ex
        encoder = self.encoder
        assert encoder is not None
        done = 0
        while True:
            piece = os.pread(fd, min(count - done, 65536), start + done)
            done += len(piece)
            last = not piece or done >= count
            data = encoder.chunk(piece, last and end)
            if ex.disconnected:
                return
            ex.send_body(data, end=last and end and not self.trailers)
            if ex.write_paused:
                await ex.drain()
            if last:
                return


    async def zerocopysend(self, message: Message) -> None:
        """``http.response.zerocopysend`` (asgiref's extension): bytes of the app's open ``file`` (an object
        with ``fileno()``, or a descriptor) as body, from ``offset`` (else the file's position, which then
        moves past what is sent, as sendfile(2) moves it) for ``count`` bytes (else to the file's end), sent
        with Exchange.send_file; ``more_body`` as http.response.body's, so a body may mix both. The file stays
        the app's: never closed here. Before any body, and as the last piece, ``count`` is the
        Content-Length unless the app declared one."""
        ex = self.ex
        if ex.disconnected:
            raise ClientDisconnected("the client has disconnected")
        file: Any = message.get("file")
        try:
            fd = file if type(file) is int else file.fileno()
            offset = message.get("offset")
            count = message.get("count")
            if offset is not None:
                offset = app_int(offset, "http.response.zerocopysend 'offset'")
            if count is not None:
                count = app_int(count, "http.response.zerocopysend 'count'")
            info = os.fstat(fd)
            start = os.lseek(fd, 0, os.SEEK_CUR) if offset is None else offset
        except (AttributeError, TypeError, ValueError, OSError) as exc:
            raise AppProtocolError(f"http.response.zerocopysend needs an open regular file: {exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise AppProtocolError("http.response.zerocopysend 'file' is not a regular file")
        if start < 0 or (count is not None and count < 0):
            raise AppProtocolError("http.response.zerocopysend 'offset' and 'count' must not be negative")
        if count is None:
            count = max(0, info.st_size - start)
        more = bool(message.get("more_body", False))
        if not ex.response_started:
            headers = self.headers
            if not more and _declared_length(headers) is None:
                headers = [*headers, (b"content-length", b"%d" % count)]
            ex.send_head(self.status, headers, b"", end=False, trailers=self.trailers)
        if not more:
            self.state = SendState.TRAILERS if self.trailers else SendState.DONE
        if self.encoder is not None:  # body messages before it started a compressed stream: go on with it
            await self.encode_file(fd, start, count, not more)
            if offset is None:
                os.lseek(fd, start + count, os.SEEK_SET)
            return
        await ex.send_file(fd, start, count)
        if offset is None:
            os.lseek(fd, start + count, os.SEEK_SET)
        if not more and not self.trailers and not ex.disconnected and not ex.finished:
            ex.send_body(b"", end=True)
        if ex.write_paused:
            await ex.drain()


def _declared_length(headers: Headers) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            return value
    return None
