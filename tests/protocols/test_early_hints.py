"""103 Early Hints end to end: the seam's check (check_interim), HTTP/1.1 bytes on a raw socket, HTTP/2 frames
read by the ``h2`` library, httpx reading past the 103, the ASGI messages (asgiref's ``http.response.early_hint``
and gunicorn's ``http.response.informational``) and the WSGI ``environ["wsgi.early_hints"]`` callable in
both WSGI modes. The same apps on gunicorn and hypercorn are compared in tests/integration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from conftest import Running
from fakes import FakeTransport

from bascule.config import Config
from bascule.context import ServerContext
from bascule.errors import AppProtocolError
from bascule.protocols.exchange import check_interim
from bascule.protocols.h1.connection import H1Connection
from bascule.protocols.h1.exchange import H1Exchange
from bascule.protocols.h2.connection import H2Connection
from bascule.protocols.h2.stream import H2Stream
from bascule.protocols.uwsgi_wire import encode_vars

Serve = Callable[..., contextlib.AbstractContextManager[Running]]
Message = dict[str, Any]

CSS = b"</app.css>; rel=preload; as=style"
JS = b"</app.js>; rel=preload; as=script"
HINT_103 = b"HTTP/1.1 103 Early Hints\r\nlink: " + CSS + b"\r\n\r\n"


# -- the seam's check ----------------------------------------------------------------------------------


def test_check_interim_takes_103_and_other_app_1xx() -> None:
    assert check_interim(103, [(b"link", CSS), (b"link", JS)]) == 103
    assert check_interim(102, []) == 102
    assert check_interim(199, []) == 199


@pytest.mark.parametrize("status", [100, 101, 200, 99, 204, True, "103", 103.0])
def test_check_interim_refuses_statuses_not_the_apps(status: object) -> None:
    """100 is the server's (Expect: 100-continue), 101 an upgrade the server makes, the rest no 1xx."""
    with pytest.raises(AppProtocolError):
        check_interim(status, [])


@pytest.mark.parametrize("pair", [
    (b"bad name", CSS), (b"link", CSS + b"\r\nx-injected: 1"), (b"link", b"a\x00b"), (b"", CSS),
    ("link", CSS), (b"content-length", b"0"), (b"Transfer-Encoding", b"chunked"), (b"connection", b"close"),
])
def test_check_interim_refuses_fields_that_cannot_be_written(pair: tuple[Any, Any]) -> None:
    with pytest.raises(AppProtocolError):
        check_interim(103, [pair])


# -- helpers ---------------------------------------------------------------------------------------------


def raw_request(srv: Running, request: bytes) -> bytes:
    """Send one request that ends the connection, read everything."""
    with srv.connect() as sock:
        sock.settimeout(5)
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


GET_11 = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
GET_10 = b"GET / HTTP/1.0\r\nhost: x\r\n\r\n"


def h2_get(srv: Running, path: str = "/") -> tuple[list[list[tuple[bytes, bytes]]], int, bytes, bool]:
    """One request with prior knowledge: (each 1xx's fields, final status, body, whether it ended), read with
    the ``h2`` library, which checks that a 1xx precedes the final response and does not end the stream."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    interim: list[list[tuple[bytes, bytes]]] = []
    status, body, ended = 0, b"", False
    with srv.connect() as sock:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", path),
                                (":authority", "127.0.0.1")], end_stream=True)
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + 5
        while not ended and time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = sock.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.InformationalResponseReceived):
                    assert status == 0, "a 1xx after the final response"
                    interim.append(list(ev.headers))
                elif isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
                elif isinstance(ev, h2.events.StreamReset):
                    raise AssertionError(f"stream reset: {ev.error_code}")
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    return interim, status, body, ended


# -- ASGI ------------------------------------------------------------------------------------------------


class HintingApp:
    """Sends ``hints`` (ASGI messages) before a 200 'ok' (or ``after`` them once started); records errors."""

    def __init__(self, hints: Iterable[Message], after: Iterable[Message] = ()) -> None:
        self.hints = list(hints)
        self.after = list(after)
        self.errors: list[BaseException] = []
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        try:
            for hint in self.hints:
                await send(hint)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
            for late in self.after:
                await send(late)
        except AppProtocolError as exc:
            self.errors.append(exc)
            raise
        await send({"type": "http.response.body", "body": b"ok"})


EARLY_HINT = {"type": "http.response.early_hint", "links": [CSS]}
INFORMATIONAL = {"type": "http.response.informational", "status": 103, "headers": [(b"link", JS)]}


def test_asgi_early_hint_over_http11_is_a_103_before_the_200(serve: Serve) -> None:
    app = HintingApp([EARLY_HINT])
    with serve(app) as srv:
        data = raw_request(srv, GET_11)
    assert data.startswith(HINT_103 + b"HTTP/1.1 200 OK\r\n"), data
    assert data.endswith(b"\r\n\r\nok")
    assert app.scopes[0]["extensions"]["http.response.early_hint"] == {}


def test_asgi_informational_alias_and_several_hints(serve: Serve) -> None:
    """gunicorn's message with its own fields, and two 103s (RFC 8297 allows several), in the order sent."""
    links = {"type": "http.response.early_hint", "links": [CSS, bytearray(JS)]}
    app = HintingApp([INFORMATIONAL, links])
    with serve(app) as srv:
        data = raw_request(srv, GET_11)
    assert data.startswith(b"HTTP/1.1 103 Early Hints\r\nlink: " + JS + b"\r\n\r\n"
                           b"HTTP/1.1 103 Early Hints\r\nlink: " + CSS + b"\r\nlink: " + JS + b"\r\n\r\n"
                           b"HTTP/1.1 200 OK\r\n"), data


def test_asgi_hints_never_reach_an_http10_client(serve: Serve) -> None:
    app = HintingApp([EARLY_HINT, INFORMATIONAL])
    with serve(app) as srv:
        data = raw_request(srv, GET_10)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert b"103" not in data and b"link" not in data
    assert not app.errors


def test_httpx_reads_the_final_response_past_the_103(serve: Serve) -> None:
    with serve(HintingApp([EARLY_HINT])) as srv, httpx.Client() as client:
        for _ in range(2):  # the same keep-alive connection: the 103 left nothing behind
            reply = client.get(srv.url + "/")
            assert (reply.status_code, reply.text) == (200, "ok")


def test_asgi_early_hint_over_http2_is_a_headers_frame_before_the_response(serve: Serve) -> None:
    with serve(HintingApp([EARLY_HINT, INFORMATIONAL])) as srv:
        interim, status, body, ended = h2_get(srv)
    assert interim == [[(b":status", b"103"), (b"link", CSS)], [(b":status", b"103"), (b"link", JS)]]
    assert (status, body, ended) == (200, b"ok", True)


@pytest.mark.parametrize("hint", [EARLY_HINT, INFORMATIONAL], ids=["early_hint", "informational"])
def test_asgi_hint_after_the_start_is_the_apps_error(serve: Serve, hint: Message,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """After http.response.start the final head is the next thing on the wire: a 1xx there is refused
    (AppProtocolError, as for any out-of-order message), and the head not sent yet becomes a 500."""
    app = HintingApp([], after=[hint])
    with caplog.at_level(logging.ERROR, "bascule.error"), serve(app) as srv:
        data = raw_request(srv, GET_11)
    assert data.startswith(b"HTTP/1.1 500 "), data
    assert b"103" not in data
    assert len(app.errors) == 1 and "not allowed" in str(app.errors[0])


@pytest.mark.parametrize("hint", [
    {"type": "http.response.informational", "status": 103, "headers": [(b"link", b"a\r\nx-injected: 1")]},
    {"type": "http.response.informational", "status": 103, "headers": [(b"bad name", b"x")]},
    {"type": "http.response.informational", "status": 100, "headers": []},
    {"type": "http.response.informational", "status": 101, "headers": []},
    {"type": "http.response.informational", "status": 200, "headers": []},
    {"type": "http.response.informational", "headers": []},
    {"type": "http.response.early_hint", "links": [b"</a>\r\nx-injected: 1"]},
    {"type": "http.response.early_hint", "links": b"</a>"},
    {"type": "http.response.early_hint", "links": ["</a>"]},
    {"type": "http.response.early_hint"},
], ids=["crlf", "name", "100", "101", "200", "no-status", "link-crlf", "links-bytes", "links-str", "no-links"])
@pytest.mark.parametrize("version", ["1.1", "2"])
def test_asgi_bad_hint_is_the_apps_error_and_nothing_is_written(serve: Serve, hint: Message, version: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    app = HintingApp([hint])
    with caplog.at_level(logging.ERROR, "bascule.error"), serve(app) as srv:
        if version == "2":
            interim, status, _, _ = h2_get(srv)
            assert (interim, status) == ([], 500)
        else:
            data = raw_request(srv, GET_11)
            assert data.startswith(b"HTTP/1.1 500 "), data
    assert len(app.errors) == 1


def test_asgi_hint_from_a_gone_client_is_client_disconnected(serve: Serve) -> None:
    """As for every allowed message: the app learns the client left (an OSError), nothing is written."""
    seen: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"
        try:
            await send(EARLY_HINT)
        except OSError as exc:
            seen.append(exc)

    with serve(app) as srv:
        with srv.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            time.sleep(0.1)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(seen) == 1 and type(seen[0]).__name__ == "ClientDisconnected"


# -- WSGI ------------------------------------------------------------------------------------------------


class WSGIHints:
    """Calls ``environ['wsgi.early_hints']`` with ``hints`` (each a list of str pairs) before its response;
    with ``late``, once more after its first body item was yielded; records what the callable raised."""

    def __init__(self, hints: list[list[tuple[Any, Any]]], *, late: bool = False) -> None:
        self.hints = hints
        self.late = late
        self.errors: list[BaseException] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        send_hints = environ["wsgi.early_hints"]
        try:
            for hint in self.hints:
                send_hints(hint)
        except AppProtocolError as exc:
            self.errors.append(exc)
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"o"
        if self.late:
            send_hints([("Link", CSS.decode())])  # the head is on its way: ignored, as on gunicorn
        yield b"k"


WSGI_HINTS = [[("Link", CSS.decode())], [("Link", JS.decode()), ("X-Hint", "2")]]
WSGI_103 = (b"HTTP/1.1 103 Early Hints\r\nlink: " + CSS + b"\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nlink: " + JS + b"\r\nx-hint: 2\r\n\r\n")


@pytest.mark.parametrize("mode", ["threads", "loop"])
def test_wsgi_early_hints_over_http11(serve: Serve, mode: str) -> None:
    app = WSGIHints(WSGI_HINTS)
    with serve(app, interface="wsgi", wsgi_mode=mode) as srv:
        data = raw_request(srv, GET_11)
        data10 = raw_request(srv, GET_10)
    assert data.startswith(WSGI_103 + b"HTTP/1.1 200 OK\r\n"), data
    assert data10.startswith(b"HTTP/1.1 200 OK\r\n") and b"103" not in data10, data10
    assert not app.errors


@pytest.mark.parametrize("mode", ["threads", "loop"])
def test_wsgi_early_hints_over_http2(serve: Serve, mode: str) -> None:
    with serve(WSGIHints(WSGI_HINTS), interface="wsgi", wsgi_mode=mode) as srv:
        interim, status, body, ended = h2_get(srv)
    assert interim == [[(b":status", b"103"), (b"link", CSS)],
                       [(b":status", b"103"), (b"link", JS), (b"x-hint", b"2")]]
    assert (status, body, ended) == (200, b"ok", True)


@pytest.mark.parametrize("mode", ["threads", "loop"])
def test_wsgi_early_hints_after_the_head_are_ignored(serve: Serve, mode: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    app = WSGIHints([], late=True)
    with caplog.at_level(logging.ERROR, "bascule.error"), serve(app, interface="wsgi", wsgi_mode=mode) as srv:
        data = raw_request(srv, GET_11)
    assert not [r for r in caplog.records if r.name == "bascule.error"]  # ignored, not refused on the loop
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"103" not in data and b"link" not in data, data
    assert data.endswith(b"\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n")  # one chunk per item
    assert not app.errors


@pytest.mark.parametrize("hint", [
    [("Link", "</a>\r\nx-injected: 1")], [("Bad Name", "x")], [(b"link", b"</a>")], [("Link", "</\u2603>")],
    [("Content-Length", "0")], "Link: </a>", [("Link",)],
], ids=["crlf", "name", "bytes", "not-latin1", "framing", "str", "short-pair"])
@pytest.mark.parametrize("mode", ["threads", "loop"])
def test_wsgi_bad_early_hints_are_the_apps_error(serve: Serve, mode: str, hint: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    app = WSGIHints([hint])
    with caplog.at_level(logging.ERROR, "bascule.error"), serve(app, interface="wsgi", wsgi_mode=mode) as srv:
        data = raw_request(srv, GET_11)
    assert data.startswith(b"HTTP/1.1 500 "), data
    assert b"103" not in data
    assert len(app.errors) == 1


def test_wsgi_early_hints_do_not_wait_for_the_loop(serve: Serve) -> None:
    """Threads mode: the callable only queues the 103 for the loop, so many calls return at once."""
    took: list[float] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        hints = environ["wsgi.early_hints"]
        began = time.perf_counter()
        for _ in range(50):
            hints([("Link", CSS.decode())])
        took.append(time.perf_counter() - began)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with serve(app, interface="wsgi") as srv:
        data = raw_request(srv, GET_11)
    assert data.count(HINT_103) == 50
    assert data.endswith(b"\r\n\r\nok")
    assert took and took[0] < 1.0


def test_raw_socket_sees_no_bytes_between_hint_and_head(serve: Serve) -> None:
    """The 103 goes out before the app's final head is known (the point of a hint): a client reading
    slowly sees it alone first."""
    gate: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(EARLY_HINT)
        while not gate:
            await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    with serve(app) as srv, srv.connect() as sock:
        sock.settimeout(5)
        sock.sendall(GET_11)
        first = b""
        while len(first) < len(HINT_103):
            first += sock.recv(65536)
        assert first == HINT_103
        gate.append(True)
        rest = b""
        with contextlib.suppress(socket.timeout):
            while chunk := sock.recv(65536):
                rest += chunk
    assert rest.startswith(b"HTTP/1.1 204 No Content\r\n"), rest


# -- the examples in docs/early-hints.md -------------------------------------------------------------------


def doc_example(first_line: str) -> str:
    """The docs' Python block that begins with ``first_line``."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "early-hints.md").read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    return next(block for block in blocks if block.startswith(first_line))


def test_docs_fastapi_middleware_sends_the_hint_on_both_versions(serve: Serve) -> None:
    pytest.importorskip("fastapi")
    namespace: dict[str, Any] = {}
    exec(doc_example("from fastapi import FastAPI"), namespace)  # our own docs
    app = namespace["app"]
    app.get("/")(lambda: {"ok": True})
    with serve(app) as srv:
        data = raw_request(srv, GET_11)
        interim, status, body, _ = h2_get(srv)
        other = raw_request(srv, b"GET /other HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    both = b"link: </static/app.css>; rel=preload; as=style\r\nlink: </static/app.js>; rel=preload; as=script\r\n"
    assert data.startswith(b"HTTP/1.1 103 Early Hints\r\n" + both + b"\r\nHTTP/1.1 200 OK\r\n"), data
    assert data.endswith(b'{"ok":true}')
    assert [n for n, _ in interim[0]] == [b":status", b"link", b"link"] and (status, body) == (200, b'{"ok":true}')
    assert other.startswith(b"HTTP/1.1 404 ")  # only the page that needs them


def test_docs_flask_view_sends_the_hint(serve: Serve) -> None:
    flask = pytest.importorskip("flask")
    source = doc_example("from flask import Flask").replace('render_template("index.html")', '"page"')
    namespace: dict[str, Any] = {"__name__": "hints_doc"}
    exec(source, namespace)  # our own docs
    assert isinstance(namespace["app"], flask.Flask)
    with serve(namespace["app"], interface="wsgi") as srv:
        data = raw_request(srv, GET_11)
        interim, status, body, _ = h2_get(srv)
    assert data.startswith(b"HTTP/1.1 103 Early Hints\r\nlink: </static/app.css>; rel=preload; as=style\r\n\r\n"
                           b"HTTP/1.1 200 OK\r\n"), data
    assert data.endswith(b"page")
    assert interim == [[(b":status", b"103"), (b"link", b"</static/app.css>; rel=preload; as=style")]]
    assert (status, body) == (200, b"page")


# -- wires without 1xx: uwsgi (nginx reads one HTTP/1.x head per response) -------------------------------


def uwsgi_get(srv: Running) -> bytes:
    pairs = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/"), (b"PATH_INFO", b"/"), (b"QUERY_STRING", b""),
             (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"SERVER_NAME", b"x"), (b"SERVER_PORT", b"80"),
             (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"5000"), (b"HTTP_HOST", b"x")]
    return raw_request(srv, encode_vars(pairs))


@pytest.mark.parametrize("kind", ["asgi", "wsgi-threads", "wsgi-loop"])
def test_uwsgi_drops_hints_and_still_checks_them(serve: Serve, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    if kind == "asgi":
        good: Any = HintingApp([EARLY_HINT, INFORMATIONAL])
        bad: Any = HintingApp([{"type": "http.response.early_hint", "links": [b"a\nb"]}])
        options: dict[str, Any] = {}
    else:
        good, bad = WSGIHints(WSGI_HINTS), WSGIHints([[("Link", "a\nb")]])
        options = {"interface": "wsgi", "wsgi_mode": kind.split("-")[1]}
    with serve(good, bind=("uwsgi://127.0.0.1:0",), port=8000, **options) as srv:
        data = uwsgi_get(srv)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"103" not in data, data
    assert not good.errors
    with caplog.at_level(logging.ERROR, "bascule.error"), \
            serve(bad, bind=("uwsgi://127.0.0.1:0",), port=8000, **options) as srv:
        data = uwsgi_get(srv)
    assert data.startswith(b"HTTP/1.1 500 "), data
    assert len(bad.errors) == 1


# -- the seam on each protocol, without a gateway: the exchange's own guard ------------------------------


def h1_exchanges(loop: asyncio.AbstractEventLoop, request: bytes) -> tuple[H1Exchange, FakeTransport]:
    dispatched: list[H1Exchange] = []
    ctx = ServerContext(Config(app="x:y", access_log=False, http2=False), loop,
                        dispatched.append, access_log=False)  # type: ignore[arg-type]
    conn = H1Connection(ctx)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(request)
    assert len(dispatched) == 1
    return dispatched[0], transport


def settle(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0))  # one loop pass: queued writes reach the transport


def test_h1_exchange_writes_hints_only_before_the_head() -> None:
    loop = asyncio.new_event_loop()
    try:
        ex, transport = h1_exchanges(loop, GET_11)
        ex.send_informational(103, [(b"link", CSS)])
        ex.send_head(204, [], end=True)
        with pytest.raises(AppProtocolError, match="after the response started"):
            ex.send_informational(103, [(b"link", JS)])
        settle(loop)
        assert bytes(transport.out).startswith(HINT_103 + b"HTTP/1.1 204 No Content\r\n")
        assert JS not in transport.out

        ex10, transport10 = h1_exchanges(loop, GET_10)
        ex10.send_informational(103, [(b"link", CSS)])  # accepted, and dropped
        with pytest.raises(AppProtocolError):
            ex10.send_informational(103, [(b"link", b"a\rb")])  # still checked
        ex10.send_head(204, [], end=True)
        settle(loop)
        assert bytes(transport10.out).startswith(b"HTTP/1.1 204 No Content\r\n")
    finally:
        loop.close()


def test_h2_stream_sends_hints_only_before_the_head() -> None:
    loop = asyncio.new_event_loop()
    try:
        dispatched: list[H2Stream] = []
        ctx = ServerContext(Config(app="x:y", access_log=False), loop, dispatched.append,  # type: ignore[arg-type]
                            access_log=False)
        conn = H2Connection(ctx, "http", None)
        conn.connection_made(FakeTransport())
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        client.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a")],
                            end_stream=True)
        conn.data_received(client.data_to_send())
        (st,) = dispatched
        st.send_informational(103, [(b"link", CSS)])
        st.send_head(204, [], end=True)
        with pytest.raises(AppProtocolError, match="after the response started"):
            st.send_informational(103, [(b"link", JS)])
        settle(loop)
        transport = conn.transport
        assert isinstance(transport, FakeTransport)
        events = client.receive_data(bytes(transport.out))
        kinds = [type(ev).__name__ for ev in events if getattr(ev, "stream_id", None) == 1]
        assert kinds == ["InformationalResponseReceived", "ResponseReceived", "StreamEnded"], kinds
        interim = next(ev for ev in events if isinstance(ev, h2.events.InformationalResponseReceived))
        assert list(interim.headers) == [(b":status", b"103"), (b"link", CSS)]
    finally:
        loop.close()
