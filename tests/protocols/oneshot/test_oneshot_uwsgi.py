"""The uwsgi listener (protocols/oneshot, uwsgi dialect): raw uwsgi packets over loopback, to ASGI and WSGI apps.

What nginx's uwsgi_pass does, byte for byte: one packet of CGI variables, the body, then read the HTTP/1.x
response until the server closes. Also the listener spec (``--bind uwsgi://``), the limits, bad input (the
app never called), trusted and untrusted peers, send_file, and the back-pressure on an unread body.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Running, serve_in_thread
from fakes import FakeTransport

import bascule.protocols.sendfile as sendfile_module
from bascule.config import Config
from bascule.context import ServerContext
from bascule.listen.accept import FrontDoor
from bascule.listen.listeners import Listener, listener_specs
from bascule.protocols.oneshot.connection import UWSGI, OneshotConnection
from bascule.protocols.uwsgi_wire import encode_vars
from bascule.specs import Endpoint, bind_wire, parse_bind
from bascule.trust import TrustedProxies

Vars = list[tuple[bytes, bytes]]


def packet(method: bytes = b"GET", uri: bytes = b"/", body: bytes = b"", extra: Vars | None = None,
           length: bytes | None = None) -> bytes:
    """What nginx sends with the stock uwsgi_params, for a client at 203.0.113.7 over HTTPS."""
    pairs: Vars = [(b"QUERY_STRING", uri.partition(b"?")[2]), (b"REQUEST_METHOD", method),
                   (b"CONTENT_TYPE", b"text/plain" if body else b""),
                   (b"CONTENT_LENGTH", str(len(body)).encode() if length is None else length),
                   (b"REQUEST_URI", uri), (b"PATH_INFO", uri.partition(b"?")[0]), (b"DOCUMENT_ROOT", b"/srv"),
                   (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REQUEST_SCHEME", b"https"), (b"HTTPS", b"on"),
                   (b"REMOTE_ADDR", b"203.0.113.7"), (b"REMOTE_PORT", b"50123"), (b"SERVER_PORT", b"443"),
                   (b"SERVER_NAME", b"example.com"), (b"HTTP_HOST", b"example.com"),
                   (b"HTTP_USER_AGENT", b"test")]
    return encode_vars(pairs + (extra or [])) + body


@contextlib.contextmanager
def uwsgi_server(app: Any, where: str = "127.0.0.1:0", **options: Any) -> Iterator[Running]:
    options.setdefault("port", 8000)  # --bind replaces --port (left at its default)
    with serve_in_thread(app, bind=(f"uwsgi://{where}",), **options) as srv:
        yield srv


def exchange(srv: Running | str, data: bytes, *, shut: bool = False, timeout: float = 10.0) -> bytes:
    """Send ``data``, read until the server closes."""
    if isinstance(srv, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(srv)
    else:
        sock = socket.create_connection((srv.host, srv.port))
    with sock:
        sock.settimeout(timeout)
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        out = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                out += chunk
    return out


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
    return lines[0], fields, body


async def echo_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Streams the body back in pieces as it arrives (no content-length), after a line of scope facts."""
    if scope["type"] != "http":
        return
    facts = repr((scope["method"], scope["client"], scope["scheme"], scope["server"], scope["path"],
                  scope["raw_path"], scope["query_string"], scope["http_version"], dict(scope["headers"])))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": facts.encode() + b"\n", "more_body": True})
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        await send({"type": "http.response.body", "body": message.get("body", b""), "more_body": True})
        if not message.get("more_body"):
            break
    await send({"type": "http.response.body", "body": b""})


def echo_wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    keys = ("REQUEST_METHOD", "REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "SERVER_NAME", "SERVER_PORT",
            "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "HTTP_HOST", "CONTENT_LENGTH")
    facts = repr({key: environ.get(key) for key in keys}).encode() + b"\n"
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(facts) + len(body)))])
    return [facts, body]


# -- the listener spec and the front door --------------------------------------------------------------------
def test_bind_uwsgi_names_the_wire_and_keeps_the_other_forms() -> None:
    assert bind_wire("uwsgi://127.0.0.1:3031") == ("uwsgi", "127.0.0.1:3031")
    assert bind_wire("uwsgi://unix:/run/app.sock") == ("uwsgi", "unix:/run/app.sock")
    assert bind_wire("127.0.0.1:8000") == ("http", "127.0.0.1:8000")
    assert bind_wire("http://[::1]:8000") == ("http", "[::1]:8000")
    assert parse_bind("uwsgi://127.0.0.1:3031") == ("tcp", ("127.0.0.1", 3031))
    assert parse_bind("uwsgi://unix:/run/app.sock") == ("unix", "/run/app.sock")
    config = Config(app="x:y", bind=("uwsgi://127.0.0.1:3031", "uwsgi://unix:/run/a.sock", "127.0.0.1:8001"))
    assert listener_specs(config) == [Listener("tcp", ("127.0.0.1", 3031), protocol="uwsgi"),
                                      Listener("unix", "/run/a.sock", protocol="uwsgi"),
                                      Listener("tcp", ("127.0.0.1", 8001))]
    spec = Listener("unix", "/run/a.sock", protocol="uwsgi")
    assert Listener.from_json(spec.to_json()) == spec and spec.scheme == "uwsgi"
    old = {"kind": "tcp", "address": ["::1", 1], "tls": False, "proxy_protocol": False}  # a master before this
    assert Listener.from_json(old).protocol == "http"


def test_a_uwsgi_listener_never_gets_tls() -> None:
    assert Listener.at(Endpoint("tcp", ("", 1)), tls=True, protocol="uwsgi").tls is False
    assert Listener.at(Endpoint("tcp", ("", 1)), tls=True).tls is True


def test_the_front_door_gives_a_uwsgi_listener_the_uwsgi_protocol() -> None:
    loop = asyncio.new_event_loop()
    try:
        ctx = ServerContext(Config(app="x:y", access_log=False), loop, lambda ex: None, access_log=False)
        door = FrontDoor(ctx, Listener("tcp", ("", 1), protocol="uwsgi"))
        assert isinstance(door.protocol_factory()(), OneshotConnection)
        assert door.ssl_context is None
    finally:
        loop.close()


# -- requests -------------------------------------------------------------------------------------------------
def test_asgi_request_from_a_trusted_peer() -> None:
    with uwsgi_server(echo_asgi) as srv:
        reply = exchange(srv, packet(b"POST", b"/a%2Fb/caf%C3%A9?x=1&y=%2F", b"hello"))
    status, fields, body = split(reply)
    assert status == "HTTP/1.1 200 OK"
    assert "content-length" not in fields and "transfer-encoding" not in fields  # delimited by the close
    facts, _, echoed = body.partition(b"\n")
    method, client, scheme, server, path, raw_path, query, version, headers = ast.literal_eval(facts.decode())
    assert (method, client, scheme, server) == ("POST", ("203.0.113.7", 50123), "https", ("example.com", 443))
    assert (path, raw_path, query, version) == ("/a/b/café", b"/a%2Fb/caf%C3%A9", b"x=1&y=%2F", "1.1")
    assert headers[b"host"] == b"example.com" and headers[b"content-length"] == b"5"
    assert echoed == b"hello"


def test_untrusted_peer_gets_the_socket_facts() -> None:
    with uwsgi_server(echo_asgi) as srv:
        assert srv.server is not None and srv.server.ctx is not None
        srv.server.ctx.trusted_proxies = TrustedProxies("10.0.0.0/8")  # not loopback
        reply = exchange(srv, packet(uri=b"/x"))
    _, _, body = split(reply)
    _, client, scheme, server, *_ = ast.literal_eval(body.partition(b"\n")[0].decode())
    assert client[0] == "127.0.0.1" and client[1] != 50123
    assert scheme == "http" and server == ("127.0.0.1", srv.port)


def test_unix_socket_peer_is_trusted_by_default(tmp_path: Path) -> None:
    path = str(tmp_path / "u.sock")
    with uwsgi_server(echo_asgi, f"unix:{path}"):
        reply = exchange(path, packet(uri=b"/u"))
    _, _, body = split(reply)
    _, client, scheme, *_ = ast.literal_eval(body.partition(b"\n")[0].decode())
    assert client == ("203.0.113.7", 50123) and scheme == "https"


@pytest.mark.parametrize("mode", ["threads", "loop"])
def test_wsgi_request(mode: str) -> None:
    with uwsgi_server(echo_wsgi, wsgi_mode=mode, interface="wsgi") as srv:
        reply = exchange(srv, packet(b"PUT", b"/w%2Fx?q=%C3%A9", b"data" * 1000))
        empty = exchange(srv, packet(b"GET", b"/", length=b""))  # an empty CONTENT_LENGTH is no body
    status, fields, body = split(reply)
    facts, _, echoed = body.partition(b"\n")
    env = ast.literal_eval(facts.decode())
    assert status == "HTTP/1.1 200 OK" and int(fields["content-length"]) == len(body)
    assert env == {"REQUEST_METHOD": "PUT", "REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "50123",
                   "wsgi.url_scheme": "https", "SERVER_NAME": "example.com", "SERVER_PORT": "443",
                   "PATH_INFO": "/w/x", "QUERY_STRING": "q=%C3%A9", "SERVER_PROTOCOL": "HTTP/1.1",
                   "HTTP_HOST": "example.com", "CONTENT_LENGTH": "4000"}
    assert echoed == b"data" * 1000
    assert split(empty)[0] == "HTTP/1.1 200 OK" and split(empty)[2].endswith(b"\n")


def test_body_streams_both_ways() -> None:
    """A body larger than the buffers, sent in pieces, echoed back in pieces as it arrives (no length)."""
    body = os.urandom(2 * 1024 * 1024 + 3)
    head = encode_vars([(b"REQUEST_METHOD", b"POST"), (b"REQUEST_URI", b"/big"),
                        (b"CONTENT_LENGTH", str(len(body)).encode())])
    with uwsgi_server(echo_asgi) as srv, srv.connect() as sock:
        sock.settimeout(20)
        received = bytearray()

        def read() -> None:
            while chunk := sock.recv(1 << 16):
                received.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        sock.sendall(head)
        for i in range(0, len(body), 100_000):
            sock.sendall(body[i:i + 100_000])
            time.sleep(0.001)
        reader.join(20)
    _, _, out = split(bytes(received))
    assert out.partition(b"\n")[2] == body


def test_head_keeps_the_declared_length_and_sends_no_body() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"twelve bytes"})

    with uwsgi_server(app) as srv:
        head = exchange(srv, packet(b"HEAD"))
        get = exchange(srv, packet(b"GET"))
    assert split(head)[1]["content-length"] == "12" and split(head)[2] == b""
    assert split(get)[1]["content-length"] == "12" and split(get)[2] == b"twelve bytes"


def test_app_error_is_a_500_and_the_server_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with uwsgi_server(app) as srv:
        boom = exchange(srv, packet(uri=b"/boom"))
        fine = exchange(srv, packet(uri=b"/"))
    assert split(boom)[0] == "HTTP/1.1 500 Internal Server Error"
    assert split(fine)[0] == "HTTP/1.1 204 No Content" and "content-length" not in split(fine)[1]


def test_over_the_body_limit_is_413_without_the_app() -> None:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        called.append(scope["path"])

    with uwsgi_server(app, limit_request_body=100) as srv:
        start = time.monotonic()
        reply = exchange(srv, packet(b"POST", b"/up", b"x" * 1000))
        took = time.monotonic() - start
    status, _, body = split(reply)
    assert took < 1.5  # the body had all arrived: closed at once, not after the linger
    assert status.startswith("HTTP/1.1 413 ")
    assert b"--limit-request-body" in body and called == []


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # an HTTP client on the uwsgi port
    b"\x05\x00\x00\x00",  # modifier1 5: not a WSGI request
    encode_vars([(b"REQUEST_URI", b"/")]),  # no REQUEST_METHOD
    b"\x00\x08\x00\x00\x03\x00abc\x09\x00x",  # a value running past the block
    encode_vars([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/"), (b"CONTENT_LENGTH", b"x1")]),
    encode_vars([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/")]) + b"surplus",  # bytes past the body
], ids=["http-client", "modifier1", "no-method", "overlong-value", "bad-length", "after-body"])
def test_bad_input_closes_without_calling_the_app(data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        called.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with caplog.at_level(logging.INFO, logger="bascule.error"), uwsgi_server(app) as srv:
        reply = exchange(srv, data)
        after = exchange(srv, packet())  # the server is unharmed
    assert reply == b"" and called == ["/"]
    assert split(after)[2] == b"ok"
    assert any("closed a uwsgi connection from 127.0.0.1" in r.getMessage() for r in caplog.records)
    if data.startswith(b"GET "):
        assert any("uwsgi_pass, not proxy_pass" in r.getMessage() for r in caplog.records)


def test_half_closed_peer_still_gets_its_response() -> None:
    with uwsgi_server(echo_asgi) as srv:
        reply = exchange(srv, packet(b"POST", b"/h", b"abc"), shut=True)
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"abc")


def test_incomplete_packet_is_closed_at_the_head_deadline() -> None:
    with uwsgi_server(echo_asgi, timeout_request_head=0.5) as srv:
        start = time.monotonic()
        reply = exchange(srv, packet()[:10])
    assert reply == b"" and time.monotonic() - start < 5


def test_send_file_uses_sendfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(1024 * 1024 + 5)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    calls: list[int] = []
    real = os.sendfile

    def spy(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        calls.append(n)
        return n

    monkeypatch.setattr(sendfile_module.os, "sendfile", spy)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(path)})

    with uwsgi_server(app) as srv:
        reply = exchange(srv, packet())
        head = exchange(srv, packet(b"HEAD"))
    _, fields, body = split(reply)
    assert body == data and fields["content-length"] == str(len(data)) and sum(calls) == len(data)
    assert split(head)[1]["content-length"] == str(len(data)) and split(head)[2] == b""


@pytest.mark.parametrize("mode", ["threads", "loop"])
def test_wsgi_file_wrapper(tmp_path: Path, mode: str) -> None:
    """Thread mode iterates the file (no blocking sendfile over uwsgi); loop mode goes through send_file."""
    data = os.urandom(300_000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    with uwsgi_server(app, interface="wsgi", wsgi_mode=mode) as srv:
        reply = exchange(srv, packet())
        head = exchange(srv, packet(b"HEAD"))
    assert split(reply)[2] == data and split(head)[2] == b""


# -- back-pressure, without a socket ----------------------------------------------------------------------------
def test_an_unread_body_pauses_reading_until_the_app_reads_it() -> None:
    loop = asyncio.new_event_loop()
    try:
        served: list[Any] = []
        ctx = ServerContext(Config(app="x:y", access_log=False), loop, served.append, access_log=False)
        conn = OneshotConnection(ctx, UWSGI)
        transport = FakeTransport()
        conn.connection_made(transport)
        body = b"z" * (600 * 1024)
        conn.data_received(packet(b"POST", b"/", body)[:-len(body)] + body[:300 * 1024])
        assert len(served) == 1 and transport.paused  # past the high-water mark, nobody reading
        ex = served[0]
        got = loop.run_until_complete(ex.receive_body())
        assert len(got) == 300 * 1024 and not transport.paused
        conn.data_received(body[300 * 1024:])
        assert ex.take_buffered_body() == body[300 * 1024:]
        ex.send_head(200, [], b"done", end=True)
        loop.run_until_complete(asyncio.sleep(0))
        assert transport.out.startswith(b"HTTP/1.1 200 OK\r\n") and transport.out.endswith(b"\r\n\r\ndone")
        assert b"content-length: 4\r\n" in transport.out and transport.closing
    finally:
        loop.close()


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, int, int]] = []

    def request_started(self, ex: Any) -> None:
        self.events.append(("started", ex.raw_path.decode(), ex.status, ex.sent))

    def request_finished(self, ex: Any) -> None:
        self.events.append(("finished", ex.raw_path.decode(), ex.status, ex.sent))


def test_observers_hear_of_each_request_once() -> None:
    recorder = Recorder()
    with uwsgi_server(echo_asgi) as srv:
        assert srv.server is not None and srv.server.ctx is not None
        srv.server.ctx.observe(recorder)
        reply = exchange(srv, packet(b"POST", b"/o", b"abc"))
        exchange(srv, b"GET / HTTP/1.1\r\n\r\n")  # refused: never a request
        time.sleep(0.1)
    assert recorder.events == [("started", "/o", 0, 0), ("finished", "/o", 200, len(split(reply)[2]))]


def test_app_deadline_answers_504() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(30)

    with uwsgi_server(app, timeout_request=0.5) as srv:
        start = time.monotonic()
        reply = exchange(srv, packet())
    assert split(reply)[0] == "HTTP/1.1 504 Gateway Timeout" and time.monotonic() - start < 5


def test_an_answer_before_the_body_is_read_waits_for_the_rest_then_closes() -> None:
    """An app that answers an upload without reading it (a 401): the response ends with a FIN at once, the
    rest of the declared body is read and dropped, then the connection closes (no reset to lose the answer)."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no"})

    body = b"u" * 200_000
    with uwsgi_server(app) as srv, srv.connect() as sock:
        sock.settimeout(5)
        sock.sendall(packet(b"POST", b"/up", body)[:-150_000])
        reply = b""
        while chunk := sock.recv(65536):  # the FIN comes before the body is complete
            reply += chunk
        sock.sendall(body[-150_000:])
        start = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - start < 1.5
    assert split(reply)[0] == "HTTP/1.1 401 Unauthorized" and split(reply)[2] == b"no"


def test_bytes_past_the_body_while_lingering_are_dropped_not_reset(caplog: pytest.LogCaptureFixture) -> None:
    """Answered before the body was read: what comes after, even past CONTENT_LENGTH, is dropped and the
    connection closed in order; not refused as bad input with a reset (which could destroy the answer before
    the web server has read it)."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 403, "headers": []})
            await send({"type": "http.response.body", "body": b"no"})

    body = b"u" * 100_000
    with caplog.at_level(logging.INFO, logger="bascule.error"), uwsgi_server(app) as srv, srv.connect() as sock:
        sock.settimeout(5)
        sock.sendall(packet(b"POST", b"/up", body)[:-50_000])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        sock.sendall(body[-50_000:] + b"surplus after the body")
        time.sleep(0.3)
    assert split(reply)[0] == "HTTP/1.1 403 Forbidden"
    assert not [r for r in caplog.records if "closed a uwsgi connection" in r.getMessage()]
