"""A request stream of a multiplexed connection (HTTP/2, HTTP/3) as the gateways see it: the rules both keep.

HTTP/2's H2Stream (protocols/h2/stream.py, compiled: the HTTP/2 hot path) and HTTP/3's H3Stream
(protocols/h3/stream.py, interpreted: aioquic dominates it) answer a request the same way: the same HEAD, 1xx,
204 and 304 rules (RFC 9110 6.4.1, 8.6), the same check of the body against a declared content-length (a
stream that would send more, or end with less, is reset: the client must not take a cut response for a whole
one), the same ``100 Continue`` on the first read, the same informational responses, trailers, drain and
observer timing, the same hand-over of a buffered request body. Only the encoding of a field block, the frames
that carry it and the flow-control accounting differ, so this class keeps the rules once and asks the wire,
through the abstract methods below, only to encode, write and count. A block is whatever the wire writes as
one header section: HPACK bytes for HTTP/2, a list of name/value pairs for aioquic; the rules never look
inside one.

Compiled, and open to interpreted subclasses (H3Stream): a compiled subclass's hooks are reached through
mypyc's vtable, an interpreted one's through Python. The hooks take ``Any`` so that the compiled overrides
keep this exact signature (an override with other types would cost a glue call on each send).
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from time import perf_counter
from typing import IO, TYPE_CHECKING, Any

from bascule.compile_hints import mypyc_attr
from bascule.errors import AppProtocolError
from bascule.protocols.exchange import BufferedExchange, Headers, check_interim
from bascule.protocols.semantics import (
    bodiless,
    bodiless_length,
    expected_length,
    length_excess,
    log_length_error,
    one_write,
)

if TYPE_CHECKING:
    from bascule.context import ServerContext
    from bascule.protocols.request_head import RequestHead

__all__ = ["StreamExchange"]


@mypyc_attr(allow_interpreted_subclasses=True)  # H3Stream is not compiled
class StreamExchange(BufferedExchange):
    """One request/response on a multiplexed connection, less its wire; class-level defaults are written
    only on change."""

    content_length: int | None  # the request's declared body length
    expect_continue: bool  # the client waits for 100 Continue before it sends the body
    _drain_waiter: asyncio.Future[None] | None = None
    _expected: int | None = None  # the body length the response declared, or None (trailers, unknown)
    _trailers = False  # send_trailers() will end the response, not the last body bytes

    # -- the wire: encoding and frames --------------------------------------------------------------
    @abstractmethod
    def _encode_head(self, status: int, headers: Headers) -> tuple[Any, list[Any], int | None]:
        """The ``:status`` field, the app's fields as this wire encodes them, and the content-length they
        declare. Raises AppProtocolError (nothing written) for a status or field that may not be sent."""

    @abstractmethod
    def _length_field(self, length: int) -> Any:
        """An encoded ``content-length`` field (the server's own, added to the app's)."""

    @abstractmethod
    def _drop_length(self, parts: list[Any]) -> list[Any]:
        """``parts`` without the content-length field the app declared (RFC 9110 8.6: none on a 204)."""

    @abstractmethod
    def _field(self, name: bytes, value: bytes) -> Any:
        """One encoded field the server adds (the --request-id echo): never indexed or cached."""

    @abstractmethod
    def _interim_block(self, status: Any, parts: list[Any]) -> Any:
        """The block of an informational (1xx) response: the app's fields, not the server's own."""

    @abstractmethod
    def _final_block(self, status: Any, parts: list[Any]) -> Any:
        """The block of the final response: ``:status``, the server's own fields, then ``parts``."""

    @abstractmethod
    def _wire_headers(self, block: Any, end: bool) -> None:
        """Write a header section; ``end`` ends our side of the stream."""

    @abstractmethod
    def _wire_whole(self, block: Any, body: bytes) -> None:
        """Write a complete response (its head and all of its body), ending our side of the stream."""

    @abstractmethod
    def _wire_data(self, data: bytes, end: bool) -> None:
        """Write body bytes (b'' with ``end`` only ends the stream)."""

    @abstractmethod
    def _wire_trailers(self, trailers: Headers) -> None:
        """Write the trailer section, ending our side of the stream."""

    @abstractmethod
    def _admit(self, n: int) -> bool:
        """``n`` request body bytes arrived: count them against the stream's flow control; False when nobody
        will read them (the response is over), and they are dropped."""

    @abstractmethod
    def _body_taken(self, n: int) -> None:
        """The app took ``n`` buffered request body bytes: give the client room for more (flow control)."""

    def _take_head(self, head: RequestHead, ctx: ServerContext, client: tuple[str, int] | None,
                   server: tuple[str, int] | None, tls: dict[str, Any] | None) -> None:
        """The request's fields from its validated head and its connection's endpoints; called last in the
        wire's __init__ (``scheme`` set), as a proxy's fields replace them (ctx.forwarded) before dispatch,
        and before an extended CONNECT's session copies them."""
        self.method = head.method
        self.raw_path = head.raw_path
        self.query_string = head.query
        self.headers = list(head.headers)  # a head may be shared (HTTP/2 caches them): the app gets its own
        self.content_length = head.content_length
        self.expect_continue = head.expect_continue
        self.client = client
        self.server = server
        if tls is not None:
            self.tls = tls
        if head.forwarded:
            ctx.forwarded(self)

    def take_on(self, ctx: ServerContext) -> None:
        """Answered without being dispatched (a refusal, a WebSocket's error): the request's clock starts
        now, and the observers hear of it as of any other."""
        self.start_time = self.loop.time()
        ctx.request_started(self)

    # -- request body -------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Request body bytes, from the connection."""
        if not data:
            return
        self.received += len(data)
        if not self._admit(len(data)):
            return
        if self._body is None:
            self._body = [data]
        else:
            self._body.append(data)
        if self._body_waiter is not None:
            self._wake_body()

    def _take(self) -> bytes:
        body = self._body
        if not body:
            return b""
        self._body = None
        data = b"".join(body) if len(body) != 1 else body[0]
        self._body_taken(len(data))
        return data

    def take_buffered_body(self) -> bytes | None:
        if not self._body_done:
            return None
        return self._take()

    async def receive_body(self) -> bytes:
        if self.expect_continue:
            self.expect_continue = False
            if not self.response_started and not self._body_done and not self.disconnected:
                status, parts, _ = self._encode_head(100, [])
                self._wire_headers(self._interim_block(status, parts), False)
        while not self._body and not self._body_done and not self.disconnected:
            self._body_waiter = self.loop.create_future()
            await self._body_waiter
        return self._take()

    # -- response -----------------------------------------------------------------------------------
    def send_head(self, status: int, headers: Headers, body: bytes = b"", end: bool = False,
                  trailers: bool = False) -> None:
        if self.response_started:
            raise AppProtocolError("the response was already started")
        field, parts, content_length = self._encode_head(status, headers)
        if status < 200:
            if status == 101:
                raise AppProtocolError(f"101 Switching Protocols does not exist in HTTP/{self.http_version}")
            if not self.disconnected:
                self._wire_headers(self._interim_block(field, parts), False)
            return
        self.response_started = True
        self.status = status
        if self.perf_start:  # an observer listens (the access log reads it): else no clock read
            self.head_time = perf_counter()
        if bodiless(self.method, status):
            self.no_body = True
            length = bodiless_length(status, content_length, end, body)
            if length != content_length:
                if content_length is not None:  # RFC 9110 8.6: none on 204
                    parts = self._drop_length(parts)
                if length is not None:
                    parts.append(self._length_field(length))
        else:
            self._expected = expected_length(content_length, end, trailers, body)
            if content_length is None and self._expected is not None:
                parts.append(self._length_field(len(body)))
        self._trailers = trailers
        if self.disconnected:
            return
        if self.rid_header is not None:  # --request-id's echo: out of the per-field caches
            parts.append(self._field(self.rid_header, (self.rid or "").encode("ascii")))
        block = self._final_block(field, parts)
        if one_write(end, trailers, self._expected, body, self.no_body):
            # the common case, a complete response: head and body in one write
            self.sent = len(body)
            self._wire_whole(block, body)
            self._finish()
            return
        if self.no_body:
            # the stream ends only with the app's own end: until then it stays in the connection's table
            # (disconnects reach the app, its slot stays counted)
            self._wire_headers(block, end and not trailers)
            if end and not trailers:
                self._finish()
            return
        self._emit(body, end, block)

    def send_informational(self, status: int, headers: Headers) -> None:
        """A header section with the 1xx :status and the app's fields, not ending the stream (RFC 9113 8.1,
        RFC 9114 4.1), ahead of the final response's; the server's own fields are left to the final one."""
        if self.response_started or self.finished:
            raise AppProtocolError("an informational response after the response started")
        code = check_interim(status, headers)
        field, parts, _ = self._encode_head(code, headers)
        if not self.disconnected:
            self._wire_headers(self._interim_block(field, parts), False)

    def _emit(self, data: bytes, end: bool, head: Any = None) -> None:
        """Send ``data`` (after the block ``head``, when starting); finish when ``end``."""
        no_body = self.no_body
        if data and not no_body:
            self.sent += len(data)
        last = end and not self._trailers
        if not no_body and self._expected is not None:
            excess = length_excess(self.sent, self._expected, last)
            if excess:
                log_length_error(self, self.sent, self._expected, "stream reset")
                if excess < 0:  # what was sent goes out; the client sees it cut short
                    if head is not None:
                        self._wire_headers(head, False)
                    if data:
                        self._wire_data(data, False)
                self.abort()  # bytes past the declared length never do (nor the head they came with)
                return
        if head is not None:
            self._wire_headers(head, False)
        if no_body:
            if last:
                self._wire_data(b"", True)  # a no-op if the head already ended the stream
                self._finish()
            return
        if data or last:
            self._wire_data(data, last)
        if last:
            self._finish()

    def send_body(self, data: bytes, end: bool = False) -> None:
        if not self.response_started or self.finished:
            raise AppProtocolError("send_body() outside a started response")
        if not self.disconnected:
            self._emit(data, end)

    def send_trailers(self, trailers: Headers) -> None:
        if self.finished:
            return
        if not self.disconnected:
            if self.no_body:
                self._wire_data(b"", True)  # a response without content ends without trailers
            else:
                self._wire_trailers(trailers)
        self._finish()

    # -- the client's side and flow control ---------------------------------------------------------
    def on_disconnect(self) -> None:
        """The client reset the stream or the connection is gone: the app sees http.disconnect."""
        self.disconnected = True
        self._wake_body()
        self._wake_disconnect()
        self.wake_drain()

    def wake_drain(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.writable_hook is not None:
            self.writable_hook()

    def sending(self) -> bool:
        """In the middle of sending: waiting in drain, or a WSGI thread that pushes body items."""
        return self._drain_waiter is not None or self.writable_hook is not None

    async def drain(self) -> None:
        while self.write_paused and not self.disconnected:
            if self._drain_waiter is None:
                self._drain_waiter = self.loop.create_future()
            await self._drain_waiter

    @property
    def can_sendfile(self) -> bool:
        return False  # a file's bytes go in the wire's frames (Exchange.send_file), never by os.sendfile

    def send_file_blocking(self, file: IO[bytes], offset: int, count: int) -> int:
        raise RuntimeError(f"sendfile is not available on an HTTP/{self.http_version} stream")

