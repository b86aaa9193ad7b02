"""WSGI gateway (PEP 3333): environ, start_response, and the response driven from a worker thread.

The app runs in a :class:`ThreadPool` thread so the event loop keeps serving. Everything that touches the
connection goes back to the loop through its :class:`LoopOutbox` (one wake-up per loop pass, and for a
whole response, one as the thread's task ends); the thread waits (bounded buffer) while
the client is slow to read, so a streaming app never makes the server hold an unbounded response. A
one-item list (the common case) becomes a single loop callback and a single write with Content-Length.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from bascule import __version__
from bascule.compress import Compression, Encoder
from bascule.errors import AppProtocolError
from bascule.gateways.eager import start_eager
from bascule.gateways.threads import LoopCall, LoopOutbox, ThreadPool
from bascule.gateways.wsgi_io import FileWrapper, WSGIErrors, WSGIInput
from bascule.ops.request_id import sets_field
from bascule.protocols.exchange import ClientDisconnected, Exchange, Headers, app_bytes, check_interim

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

MAX_PENDING = 256 * 1024
SPOOL_MEMORY = 1024 * 1024
MAX_HEADER_NAMES = 512
MAX_STATUS_LINES = 256
#: What every request's environ sets (WSGIGateway.environ), held in the template too: each request's copy
#: then overwrites these in place, and only the request's header fields (and REMOTE_PORT) are new keys.
PER_REQUEST_KEYS = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "wsgi.url_scheme",
                    "wsgi.input", "wsgi.early_hints", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR")
#: Keys inserted into a template before its copies are made: CPython grows a dict's table to 64 slots (42
#: usable) at the 22nd, and dict.copy() clones a table as it is, size included.
TEMPLATE_GROWN_AT = 22
_log = logging.getLogger("bascule.error")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade",
))


class _ClientGone(Exception):
    """The client disconnected while the app was still producing its response."""


class WSGIGateway:
    """Serves exchanges to one WSGI app mounted at ``prefix`` (below the server's ``root_path``)."""

    def __init__(self, app: WSGIApp, pool: ThreadPool | None, *, root_path: str = "", prefix: str = "",
                 multiprocess: bool = False, compress: Compression | None = None) -> None:
        self.app = app
        self.compress = compress  # --compress: None when off (the head then tests this one attribute)
        self.pool = pool  # None: run apps on the event-loop thread (wsgi_mode "loop")
        self.prefix = prefix.encode("utf-8").decode("latin-1")
        self.mount_prefix = prefix  # below a proxy's X-Forwarded-Prefix, which replaces --root-path
        self._header_keys: dict[bytes, str] = {}
        self.outbox: LoopOutbox | None = None  # threads mode: the calls of the pool's threads to the loop
        #: start_response's checked header names (an app sends the same few every time) -> their wire form;
        #: shared by the pool's threads (a dict get or set is atomic), bounded by MAX_HEADER_NAMES
        self.header_names: dict[str, bytes] = {}
        #: the last local address seen, with its SERVER_PORT (no str() of the port per request)
        self._server_port: tuple[object, str] = (None, "")
        #: start_response's checked status lines -> their codes (shared by the pool's threads, bounded)
        self.status_codes: dict[str, int] = {}
        self.template = roomy_template({
            "SCRIPT_NAME": (root_path + prefix).encode("utf-8").decode("latin-1"),
            "wsgi.version": (1, 0),
            "wsgi.errors": WSGIErrors(),
            "wsgi.multithread": pool is not None,  # loop mode calls apps on the one event-loop thread
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SERVER_SOFTWARE": "bascule/" + __version__,
        })

    def handle(self, ex: Exchange) -> None:
        """Start one request: on a worker thread, or on the loop once its body is in (called on the loop)."""
        body = ex.take_buffered_body()
        if self.pool is not None:
            outbox = self.outbox
            if outbox is None or outbox.loop is not ex.loop:
                outbox = self.outbox = LoopOutbox(ex.loop)
            request = _Request(self, ex, None if body is None else WSGIInput(None, body), outbox)
            ex.app_task = request.run_state  # queued or running until its run() returns
            # a compressed response is encoded on the loop; otherwise the thread may answer the client itself
            if self.compress is None and ex.prepare_thread_send():
                self.pool.submit(_run, request)  # it answers the client itself: woken at once
            else:
                self.pool.submit_soon(_run, request, ex.loop)  # the loop answers: woken once this pass is done
        elif body is not None:
            _Request(self, ex, WSGIInput(None, body), None).run()
        else:
            start_eager(ex.loop, self._collect_then_run(ex))

    async def _collect_then_run(self, ex: Exchange) -> None:
        """Loop mode: gather the body first (spooled to a temp file past SPOOL_MEMORY), then run the app."""
        # not a with-block: the app may read the body after this coroutine has handed it over
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
        while data := await ex.receive_body():
            spool.write(data)
        if ex.disconnected:
            spool.close()
            return
        spool.seek(0)
        _Request(self, ex, WSGIInput(functools.partial(spool.read, 64 * 1024)), None).run()

    def environ(self, ex: Exchange, wsgi_input: WSGIInput, request: _Request) -> dict[str, Any]:
        """The PEP 3333 environ of one request (built in the worker thread, off the event loop), with
        gunicorn's ``wsgi.early_hints`` callable (``request`` itself: see _Request.__call__)."""
        raw = ex.raw_path
        path = (unquote_to_bytes(raw) if 37 in raw else raw).decode("latin-1")  # "%" (an int: no TypeError inside)
        if self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix):]
        env = self.template.copy()
        env["REQUEST_METHOD"] = ex.method
        env["PATH_INFO"] = path
        env["QUERY_STRING"] = ex.query_string.decode("latin-1")
        version = ex.http_version
        env["SERVER_PROTOCOL"] = "HTTP/1.1" if version == "1.1" else "HTTP/" + version  # no new str for 1.1
        scheme = ex.scheme
        env["wsgi.url_scheme"] = scheme
        if scheme == "https":  # TLS here, or at a trusted proxy
            env["HTTPS"] = "on"  # the CGI convention some frameworks read instead of wsgi.url_scheme
        if ex.proxied:  # a trusted proxy described the request (ServerContext.forwarded)
            env["bascule.peer"] = ex.peer  # the connection's own client
            if ex.root_path is not None:
                env["SCRIPT_NAME"] = (ex.root_path + self.mount_prefix).encode("utf-8").decode("latin-1")
        if ex.rid is not None:  # --request-id (ops/request_id.py); HTTP_X_REQUEST_ID says the same
            env["bascule.request_id"] = ex.rid
        env["wsgi.input"] = wsgi_input
        env["wsgi.early_hints"] = request  # callable (_Request.__call__): no bound method made per request
        key: object = ex.server  # as the exchange holds it: compiled, the narrowed tuple below is a new object
        server = ex.server
        if server is not None:
            seen = self._server_port  # one attribute: the pool's threads read and replace it whole
            if seen[0] is not key:  # a listener's fixed address is one tuple for all its connections
                seen = self._server_port = (key, str(server[1]))
            env["SERVER_NAME"] = server[0]
            env["SERVER_PORT"] = seen[1]
        else:
            env["SERVER_NAME"], env["SERVER_PORT"] = _unix_server_name(ex)
        if ex.client is not None:
            env["REMOTE_ADDR"], env["REMOTE_PORT"] = ex.client[0], str(ex.client[1])
        else:
            env["REMOTE_ADDR"] = ""  # a Unix socket peer has no address; gunicorn's value, and apps index it
        keys = self._header_keys
        for name, value in ex.headers:
            key = keys.get(name)
            if key is None:
                if b"_" in name:
                    continue  # X_Forwarded_For would be indistinguishable from X-Forwarded-For: drop it
                if name == b"content-type":
                    key = "CONTENT_TYPE"
                elif name == b"content-length":
                    key = "CONTENT_LENGTH"
                else:
                    key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
                if len(keys) < 512:
                    keys[name] = key
            text = value.decode("latin-1")
            size = len(env)
            old: str = env.setdefault(key, text)  # one lookup for a field's first line (by size: "1" is a singleton)
            if len(env) == size:  # a repeated field: joined (HTTP_*), or the last one (CONTENT_*)
                env[key] = old + ("; " if key == "HTTP_COOKIE" else ",") + text if key.startswith("HTTP_") else text
        extra = ex.cgi_extra
        if extra is not None:  # a trusted web server's own variables: never in place of one set above;
            for name, value in reversed(extra):  # of one given twice, the last (as bascule.cgi reads them)
                extra_key = name.decode("latin-1")
                if extra_key not in env:
                    env[extra_key] = value.decode("latin-1")
        return env


def roomy_template(fixed: dict[str, Any]) -> dict[str, Any]:
    """The environ template: ``fixed`` and PER_REQUEST_KEYS (empty until a request sets them) in a dict whose
    copies have room for ~20 more keys.

    A copy of the 9-key template had a 16-slot table, and a request's 11 keys and 2 header fields grew it
    twice (to 32 slots, then 64): ~1,400 instructions per request of the ~36,000 of a keep-alive GET.
    Here placeholder keys bring the inserts to TEMPLATE_GROWN_AT and are deleted again; dict.copy() still
    clones the grown table, as it does while at most a third of its entries are deleted ones. On another
    Python this is just a dict with the same items.
    """
    env: dict[str, Any] = dict(fixed)
    for key in PER_REQUEST_KEYS:
        env[key] = ""
    pads = [f"\x00pad{i}" for i in range(TEMPLATE_GROWN_AT - len(env))]
    for pad in pads:
        env[pad] = None
    for pad in pads:
        del env[pad]
    return env


def _unix_server_name(ex: Exchange) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT over a Unix socket, which has neither: the Host header's, as gunicorn."""
    default_port = "443" if ex.scheme == "https" else "80"
    for name, value in ex.headers:
        if name == b"host":
            host = value.decode("latin-1")
            name_part, colon, port = host.rpartition(":")
            if colon and port.isdigit() and not name_part.endswith(":"):  # not an unbracketed IPv6 address
                return name_part, port
            return host, default_port
    return "localhost", default_port


def _run(req: _Request) -> None:
    req.run()


class _RunState:
    """``ex.app_task`` of a request on a worker thread: whether its run() has returned.

    Not the _Request itself: that refers to the exchange, and exchange -> request -> exchange is a cycle
    only the cyclic garbage collector frees. It did so every few requests, traversing each exchange, at
    ~2,900 instructions per request (callgrind, benchmarks/callgrind.py --app wsgi); without the cycle
    reference counting frees both as the response ends.
    """

    __slots__ = ("finished",)

    def __init__(self) -> None:
        self.finished = False  # set last by the worker thread; read on the loop

    def done(self) -> bool:
        return self.finished


class _Request(LoopCall):
    """One request's trip through a WSGI app, on a worker thread (or on the loop in loop mode); posted to the
    loop itself (LoopCall) to send or finish a one-piece response."""

    __slots__ = ("_cond", "_pending", "body", "encoder", "ex", "file_body", "gateway", "head_scheduled", "headers",
                 "hinted", "inline", "input", "loop", "outbox", "rest", "run_state", "status")

    def __init__(self, gateway: WSGIGateway, ex: Exchange, wsgi_input: WSGIInput | None,
                 outbox: LoopOutbox | None) -> None:
        """``outbox``: the loop's, on a worker thread; None runs on the loop itself (loop mode)."""
        self.gateway = gateway
        self.ex = ex
        self.loop = ex.loop
        self.input = wsgi_input
        self.outbox = outbox
        self.inline = outbox is None
        self.status: int | None = None
        self.headers: Headers = []
        self.head_scheduled = False
        self.hinted = False  # early hints were posted to the loop: the response must follow them there
        self._pending = 0
        self._cond: threading.Condition | None = None
        self.run_state = _RunState()
        self.encoder: Encoder | None = None  # --compress chose to compress this response
        self.file_body = False  # the body is a file sent zero-copy: never compressed
        self.body = b""  # a one-piece response's body for the loop to send (on_loop)
        self.rest: bytes | None = None  # what the socket did not take of the response this thread wrote (on_loop)

    def done(self) -> bool:
        """True once run() has returned (read on the loop thread: a plain flag, set last by the worker)."""
        return self.run_state.finished

    # -- the app's side ---------------------------------------------------------------------------
    def start_response(self, status: Any, headers: Any, exc_info: Any = None) -> Callable[[object], None]:
        """PEP 3333's start_response. ``status``, ``headers`` and ``exc_info`` are typed by what apps really
        pass (any object for a status, any iterable of pairs, lists included; a list for exc_info), not by the
        PEP: compiled code checks declared types, and the checks that matter are made here, with messages of
        our own."""
        if exc_info is not None:
            try:
                if self.head_scheduled:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AppProtocolError("start_response() called a second time without exc_info")
        codes = self.gateway.status_codes
        code = codes.get(status) if type(status) is str else None  # an app sends the same few lines
        if code is None:
            if (type(status) is not str or len(status) < 4 or not status[:3].isdigit() or not status[:3].isascii()
                    or status[3] != " "):  # isascii: "²²²" and "٢٠٠" are digits to isdigit()
                raise AppProtocolError(f"WSGI status must look like '200 OK', got {status!r}")
            code = int(status[:3])
            if len(codes) < MAX_STATUS_LINES:
                codes[status] = code
        encoded: Headers = []
        pair: Any
        names = self.gateway.header_names
        try:
            for pair in headers:
                name, value = pair
                if type(name) is not str or type(value) is not str:
                    raise AppProtocolError(f"WSGI header names and values must be str: {(name, value)!r}")
                wire_name = names.get(name)
                if wire_name is None:  # not seen yet: check it (a regex match costs ~1,700 instructions)
                    lname = name.lower()
                    if not _TOKEN.match(name):
                        raise AppProtocolError(f"WSGI header name {name!r} is not a valid HTTP token")
                    if lname in _HOP_BY_HOP:
                        raise AppProtocolError(f"hop-by-hop header {name!r} is not allowed from a WSGI app")
                    wire_name = lname.encode("latin-1")  # a token is ASCII
                    if len(names) < MAX_HEADER_NAMES:
                        names[name] = wire_name
                encoded.append((wire_name, value.encode("latin-1")))
        except UnicodeEncodeError as exc:
            raise AppProtocolError(f"WSGI header is not latin-1: {exc}") from None
        except (TypeError, ValueError):
            raise AppProtocolError(f"WSGI headers must be a list of (name, value) tuples, got {headers!r}") from None
        ex = self.ex
        if ex.rid_header is not None and sets_field(encoded, ex.rid_header):
            ex.rid_header = None  # the app echoes ids itself: its field alone (read on the loop after this)
        self.status = code
        self.headers = encoded
        return self.write

    def write(self, data: object) -> None:
        """The legacy write() callable: sends at once (unbuffered, as PEP 3333 asks); bytes-like data too."""
        if self.status is None:
            raise AppProtocolError("write() called before start_response()")
        chunk = app_bytes(data, "WSGI body items")
        if chunk:
            self._push(chunk, False)

    def __call__(self, headers: Any) -> None:
        """``environ["wsgi.early_hints"]`` (gunicorn's): send a 103 Early Hints with these (name, value) str
        fields, typically ``[("Link", "</app.css>; rel=preload; as=style")]``, before the response.

        The fields are checked here, in the app's thread, so a bad one is the app's exception (a 500 if it
        lets it through). Then the 103 is queued for the loop and the app goes on at once: the callbacks
        run in order, so it leaves before the head. Ignored once the head is on its way (as gunicorn: a
        1xx after it would corrupt the response), and where the wire has no 1xx (HTTP/1.0, uwsgi, SCGI,
        FastCGI: Exchange.send_informational).
        """
        encoded: Headers = []
        pair: Any
        try:
            for pair in headers:
                name, value = pair
                if type(name) is not str or type(value) is not str:
                    raise AppProtocolError(f"WSGI early hint names and values must be str: {(name, value)!r}")
                encoded.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        except UnicodeEncodeError as exc:
            raise AppProtocolError(f"WSGI early hint is not latin-1: {exc}") from None
        except (TypeError, ValueError):
            raise AppProtocolError(f"WSGI early hints must be a list of (name, value) tuples, got {headers!r}") \
                from None
        check_interim(103, encoded)
        if not self.head_scheduled:
            self.hinted = True
            self._post(self._on_loop_hints, encoded)

    # -- driving ----------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        finally:
            if self._cond is not None:  # streamed: the thread waits no more, and the hook (a bound method of
                self.ex.writable_hook = None  # this request) would keep exchange -> request -> exchange a cycle
            self.run_state.finished = True
            outbox = self.outbox
            if outbox is not None:
                outbox.kick()  # the response's last calls, queued without waking the loop: the thread sleeps next

    def _run(self) -> None:
        ex = self.ex
        if ex.cancelled:  # the client cancelled it (HTTP/2 RST_STREAM) while it was queued: not started
            return
        wsgi_input = self.input
        if wsgi_input is None:
            loop = self.loop

            def pull() -> bytes:
                data = asyncio.run_coroutine_threadsafe(ex.receive_body(), loop).result()
                if not data and ex.disconnected and not ex.body_done:
                    raise ClientDisconnected("the client disconnected before sending the whole body")
                return data

            wsgi_input = WSGIInput(pull)
        result: Iterable[bytes] | None = None
        try:
            environ = self.gateway.environ(ex, wsgi_input, self)
            result = self.gateway.app(environ, self.start_response)
            if not self._consume(result):
                result = None  # handed over to _stream_on_loop, which closes it
        except BaseException as exc:  # even SystemExit: in a worker thread it can only mean this request failed
            self._fail(exc)
        finally:
            self._close(result)

    def _close(self, result: Iterable[object] | None) -> None:
        """PEP 3333: the iterable's close() is always called, whatever happened; its failure is reported."""
        close = getattr(result, "close", None) if type(result) is not list else None  # no AttributeError made
        if close is not None:
            try:
                close()
            except Exception as exc:
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Report an app failure once: 500 if nothing was sent yet, else close the connection."""
        ex = self.ex
        if isinstance(exc, (_ClientGone, ClientDisconnected)) or (isinstance(exc, OSError) and ex.disconnected):
            _log.debug("client went away during %s %s", ex.method, ex.raw_path.decode("latin-1"))
            if not ex.disconnected:
                self._post(ex.abort)
            return
        _log.error("Exception in WSGI application (%s %s)", ex.method, ex.raw_path.decode("latin-1"), exc_info=exc)
        if self.head_scheduled:
            self._post(ex.abort)
        else:
            self.head_scheduled = True
            self._post(self._on_loop_error)

    def _post(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn`` on the event loop: at once in loop mode, else queued from this worker thread."""
        outbox = self.outbox
        if outbox is None:
            fn(*args)
        else:
            outbox.post(fn, args)

    def _consume(self, result: Iterable[object]) -> bool:
        """Send the app's response; False if streaming it was handed to a task on the loop (loop mode).

        ``result`` is typed by what apps really return (bytearray and memoryview items too, see app_bytes),
        not by PEP 3333's bytes: compiled code checks the declared type of every item.
        """
        if type(result) is list and len(result) == 1 and not self.head_scheduled:
            body = result[0]
            if self.status is None:
                raise AppProtocolError("the WSGI app returned without calling start_response()")
            if type(body) is not bytes:
                raise AppProtocolError(f"WSGI body items must be bytes, got {type(body).__name__}")
            self.head_scheduled = True
            outbox = self.outbox
            if outbox is None:
                self._on_loop_send(body, True)
            else:  # the loop is woken as run() ends (LoopOutbox.kick): nothing but returning is left to do
                ex = self.ex
                # written from this thread if the wire can (protocols/thread_writer.py): not after early hints,
                # which are still on their way through the loop, nor when the response is compressed there
                rest = None if self.hinted or self.gateway.compress is not None else \
                    ex.send_from_thread(self.status, self.headers, body)
                if rest is None:
                    self.body = body  # on_loop sends it
                else:
                    self.rest = rest  # on_loop finishes the response the thread wrote
                outbox.post_call(self)
            return True
        if self.inline:
            start_eager(self.loop, self._stream_on_loop(result))
            return False
        if isinstance(result, FileWrapper) and self._try_sendfile(result):
            return True
        item: object
        for item in result:
            if self.status is None:
                raise AppProtocolError("the WSGI app yielded a body before calling start_response()")
            chunk = app_bytes(item, "WSGI body items")
            if chunk:
                self._push(chunk, False)
        if self.status is None:
            raise AppProtocolError("the WSGI app returned without calling start_response()")
        self._push(b"", True)
        return True

    async def _stream_on_loop(self, result: Iterable[object]) -> None:
        """Loop mode: iterate the app's body on the loop, waiting for drain while the client is slow; a
        ``wsgi.file_wrapper`` of a real file goes out with Exchange.send_file, never read on the loop."""
        ex = self.ex
        item: object
        try:
            if isinstance(result, FileWrapper):
                plan = self._file_plan(result)
                if plan is not None:
                    fd, offset, count = plan
                    self.head_scheduled = True
                    if self._on_loop_send(b"", count == 0) and count:
                        await ex.send_file(fd, offset, count)
                        if not ex.disconnected and not ex.finished:
                            self._on_loop_send(b"", True)
                    return
            for item in result:
                if self.status is None:
                    raise AppProtocolError("the WSGI app yielded a body before calling start_response()")
                chunk = app_bytes(item, "WSGI body items")
                if chunk:
                    self.head_scheduled = True
                    self._on_loop_send(chunk, False)
                    if ex.write_paused:
                        await ex.drain()
                    if ex.disconnected:
                        raise _ClientGone
            if self.status is None:
                raise AppProtocolError("the WSGI app returned without calling start_response()")
            self.head_scheduled = True
            self._on_loop_send(b"", True)
        except Exception as exc:
            self._fail(exc)
        finally:
            self._close(result)

    def _push(self, data: bytes, end: bool) -> None:
        """Send data from the thread, waiting while the client reads slower than the app writes."""
        ex = self.ex
        if self.inline:  # write() in loop mode: nothing to wait on without blocking every connection
            if ex.disconnected:
                raise _ClientGone
            self.head_scheduled = True
            self._on_loop_send(data, end)
            return
        cond = self._cond
        if cond is None:
            cond = self._cond = threading.Condition()
            ex.writable_hook = self._wake
        with cond:
            while not ex.disconnected and (self._pending > MAX_PENDING or ex.write_paused):
                cond.wait(1.0)
            if ex.disconnected:
                raise _ClientGone
            self._pending += len(data)
        self.head_scheduled = True
        self._post(self._on_loop_send, data, end)

    def _wake(self) -> None:
        cond = self._cond
        if cond is not None:
            with cond:
                cond.notify_all()

    def _try_sendfile(self, wrapper: FileWrapper) -> bool:
        """Thread mode: send a real file with os.sendfile; False to fall back to iterating the wrapper."""
        ex = self.ex
        if not ex.can_sendfile:
            return False
        plan = self._file_plan(wrapper)
        if plan is None:
            return False
        _, offset, count = plan
        self.head_scheduled = True
        self._post(self._on_loop_send, b"", count == 0)
        if count:
            # The file leaves from this thread, and send_file_blocking reaches the loop with calls of its own
            # (the flush before, the byte count after). The outbox's flush that carries this request's calls
            # may be queued on the loop ahead of those (another thread's post) or behind them (another thread
            # about to schedule it): so the head is on the loop before the file goes, and the end goes the
            # same way as the count, after it. Else the end could find the file's bytes uncounted: "shorter
            # than its content-length", and the connection cut.
            delivered = threading.Event()
            self._post(delivered.set)
            while not delivered.wait(1.0):
                if self.loop.is_closed():  # the server is gone (a thread left past the shutdown's deadline)
                    return True
            ex.send_file_blocking(wrapper.filelike, offset, count)
            self.loop.call_soon_threadsafe(self._on_loop_send, b"", True)
        return True

    def _file_plan(self, wrapper: FileWrapper) -> tuple[int, int, int] | None:
        """(fd, offset, count) to send a wrapped regular file whole, its Content-Length added to the head
        unless the app gave one (then at most that much); None if it is not a real file or the head is
        already on its way."""
        try:
            fd = wrapper.filelike.fileno()
            info = os.fstat(fd)
            offset = wrapper.filelike.tell()
        except (AttributeError, OSError, ValueError):
            return None
        if not stat.S_ISREG(info.st_mode) or self.status is None or self.head_scheduled:
            return None
        count = max(info.st_size - offset, 0)
        declared = [v for n, v in self.headers if n == b"content-length"]
        if declared:
            count = min(count, int(declared[0]))
        else:
            self.headers.append((b"content-length", b"%d" % count))
        if self.ex.method == "HEAD" or self.status in (204, 304):
            count = 0  # GET's headers, no body
        self.file_body = True
        return fd, offset, count

    # -- on the event loop ------------------------------------------------------------------------
    def on_loop(self) -> None:
        """On the loop, once the thread has posted itself (_consume): finish the response it wrote, or send the
        one-piece response it could not write."""
        rest = self.rest
        if rest is not None:
            self.ex.finish_thread_send(rest)
        else:
            body, self.body = self.body, b""
            self._on_loop_send(body, True)

    def _on_loop_send(self, data: bytes, end: bool) -> bool:
        """Send on the loop; False if the client is gone or the response was refused (500 or closed)."""
        ex = self.ex
        try:
            if ex.disconnected:
                return False
            if ex.response_started:
                encoder = self.encoder
                ex.send_body(data if encoder is None else encoder.chunk(data, end), end)
            else:
                assert self.status is not None
                compress = self.gateway.compress
                if compress is None or self.file_body:
                    ex.send_head(self.status, self.headers, data, end)
                else:
                    headers, first, self.encoder = compress.start(ex.headers, self.status, self.headers, data, end)
                    ex.send_head(self.status, headers, first, end)
            return True
        except AppProtocolError as exc:
            _log.error("WSGI app response refused (%s %s): %s", ex.method, ex.raw_path.decode("latin-1"), exc)
            if ex.response_started:
                ex.abort()
            else:
                ex.send_simple(500, b"Internal Server Error\n")
            return False
        finally:
            cond = self._cond
            if cond is not None:
                with cond:
                    self._pending -= len(data)
                    cond.notify_all()

    def _on_loop_hints(self, headers: Headers) -> None:
        """Send a 103 on the loop (checked already in the app's thread), unless the head went first."""
        ex = self.ex
        if ex.response_started or ex.disconnected:
            return
        try:
            ex.send_informational(103, headers)
        except AppProtocolError as exc:  # the fields were checked: only a wire's own refusal gets here
            _log.error("WSGI early hints refused (%s %s): %s", ex.method, ex.raw_path.decode("latin-1"), exc)

    def _on_loop_error(self) -> None:
        ex = self.ex
        if ex.disconnected:
            return
        if ex.response_started:
            ex.abort()
        else:
            ex.send_simple(500, b"Internal Server Error\n")
