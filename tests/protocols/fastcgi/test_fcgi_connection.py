"""The FastCGI listener (protocols/fastcgi): raw records over a real loopback socket, to ASGI and WSGI apps.

What nginx's fastcgi_pass sends, byte for byte (BEGIN_REQUEST, PARAMS, STDIN), and what other web servers
do that nginx does not (several requests multiplexed on one connection, FCGI_GET_VALUES). Also keep-alive
both ways, ABORT_REQUEST, FCGI_OVERLOADED, the limits and deadlines, bad records, and the server unharmed.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Running, serve_in_thread

from bascule.listen.listeners import Listener
from bascule.protocols.fastcgi_wire import (
    ABORT_REQUEST,
    BEGIN_REQUEST,
    END_REQUEST,
    GET_VALUES,
    GET_VALUES_RESULT,
    KEEP_CONN,
    OVERLOADED,
    PARAMS,
    REQUEST_COMPLETE,
    STDIN,
    STDOUT,
    encode_pairs,
    parse_pairs,
    record,
)
from bascule.specs import bind_wire, parse_bind

Vars = list[tuple[bytes, bytes]]


def params(method: bytes = b"GET", uri: bytes = b"/", length: int | None = 0, extra: Vars | None = None) -> Vars:
    """What nginx sends with the stock fastcgi_params, for a client at 203.0.113.7 over HTTPS."""
    path = uri.partition(b"?")[0]
    pairs: Vars = [(b"QUERY_STRING", uri.partition(b"?")[2]), (b"REQUEST_METHOD", method),
                   (b"CONTENT_TYPE", b""), (b"CONTENT_LENGTH", b"" if length is None else str(length).encode()),
                   (b"SCRIPT_NAME", path), (b"REQUEST_URI", uri), (b"DOCUMENT_URI", path),
                   (b"DOCUMENT_ROOT", b"/srv"), (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REQUEST_SCHEME", b"https"),
                   (b"HTTPS", b"on"), (b"GATEWAY_INTERFACE", b"CGI/1.1"), (b"REMOTE_ADDR", b"203.0.113.7"),
                   (b"REMOTE_PORT", b"50123"), (b"SERVER_ADDR", b"127.0.0.1"), (b"SERVER_PORT", b"443"),
                   (b"SERVER_NAME", b"example.com"), (b"HTTP_HOST", b"example.com")]
    return pairs + (extra or [])


def request(rid: int = 1, method: bytes = b"GET", uri: bytes = b"/", body: bytes | None = b"", keep: bool = True,
            extra: Vars | None = None, declare: bool = True) -> bytes:
    """A whole request: BEGIN_REQUEST, PARAMS and their end, STDIN (the body) and its end."""
    begin = record(BEGIN_REQUEST, rid, struct.pack("!HB5x", 1, KEEP_CONN if keep else 0))
    pairs = params(method, uri, len(body or b"") if declare else None, extra)
    out = begin + record(PARAMS, rid, encode_pairs(pairs)) + record(PARAMS, rid)
    if body is None:
        return out
    for i in range(0, len(body), 65535):
        out += record(STDIN, rid, body[i:i + 65535])
    return out + record(STDIN, rid)


def records_of(data: bytes) -> list[bytes]:
    """``data`` cut into its records."""
    out = []
    while data:
        length, padding = struct.unpack("!HB", data[4:7])
        out.append(data[:8 + length + padding])
        data = data[8 + length + padding:]
    return out


class Reader:
    """Reads records off a socket, gathering each request's STDOUT and its END_REQUEST."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.stdout: dict[int, bytes] = {}
        self.ended: dict[int, tuple[int, int]] = {}
        self.management: list[tuple[int, bytes]] = []
        self.eof = False

    def read_record(self) -> tuple[int, int, bytes] | None:
        while True:
            if len(self.buffer) >= 8:
                _, kind, rid, length, padding = struct.unpack("!BBHHBx", self.buffer[:8])
                if len(self.buffer) >= 8 + length + padding:
                    content = self.buffer[8:8 + length]
                    self.buffer = self.buffer[8 + length + padding:]
                    return kind, rid, content
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                return None
            self.buffer += chunk

    def until_end(self, *rids: int) -> None:
        while not all(rid in self.ended for rid in rids):
            rec = self.read_record()
            assert rec is not None, f"connection closed before END_REQUEST for {rids}: {self.stdout}"
            self.take(*rec)

    def take(self, kind: int, rid: int, content: bytes) -> None:
        if kind == STDOUT:
            assert rid not in self.ended
            self.stdout[rid] = self.stdout.get(rid, b"") + content
        elif kind == END_REQUEST:
            app_status, protocol_status = struct.unpack("!IB3x", content)
            self.ended[rid] = (app_status, protocol_status)
        else:
            self.management.append((kind, content))

    def closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        while (rec := self.read_record()) is not None:
            self.take(*rec)
        return self.eof


@contextlib.contextmanager
def fcgi_server(app: Any, where: str = "127.0.0.1:0", **options: Any) -> Iterator[Running]:
    options.setdefault("port", 8000)
    with serve_in_thread(app, bind=(f"fastcgi://{where}",), **options) as srv:
        yield srv


@contextlib.contextmanager
def connected(srv: Running) -> Iterator[tuple[socket.socket, Reader]]:
    with srv.connect(timeout=10) as sock:
        yield sock, Reader(sock)


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("Status: ")
    fields = dict((name.lower(), value) for name, value in (line.split(": ", 1) for line in lines[1:]))
    return lines[0][8:], fields, body


async def echo_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The scope's facts on a line, then the body echoed in pieces as it arrives (no content-length)."""
    if scope["type"] != "http":
        return
    facts = repr((scope["method"], scope["client"], scope["scheme"], scope["server"], scope["path"],
                  scope["raw_path"], scope["query_string"], scope["root_path"]))
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


def facts_of(body: bytes) -> tuple[Any, ...]:
    return tuple(ast.literal_eval(body.partition(b"\n")[0].decode()))


# -- the listener spec ----------------------------------------------------------------------------------------
def test_bind_fastcgi_names_the_wire() -> None:
    assert bind_wire("fastcgi://127.0.0.1:9000") == ("fastcgi", "127.0.0.1:9000")
    assert bind_wire("fastcgi://unix:/run/app.sock") == ("fastcgi", "unix:/run/app.sock")
    assert parse_bind("fastcgi://unix:/run/app.sock") == ("unix", "/run/app.sock")
    spec = Listener("tcp", ("127.0.0.1", 9000), protocol="fastcgi")
    assert Listener.from_json(spec.to_json()) == spec and spec.scheme == "fastcgi"


# -- requests -------------------------------------------------------------------------------------------------
def test_keep_conn_serves_requests_one_after_another_on_one_connection() -> None:
    with fcgi_server(echo_asgi) as srv, connected(srv) as (sock, reader):
        for rid, uri in ((1, b"/a%2Fb/caf%C3%A9?x=1"), (1, b"/second"), (7, b"/third")):
            sock.sendall(request(rid, b"POST", uri, b"hello"))
            reader.until_end(rid)
            status, fields, body = split(reader.stdout.pop(rid))
            assert reader.ended.pop(rid) == (0, REQUEST_COMPLETE)
            assert status == "200 OK" and "content-length" not in fields and "transfer-encoding" not in fields
            method, client, scheme, server, path, raw_path, query, root = facts_of(body)
            assert (method, client, scheme, server) == ("POST", ("203.0.113.7", 50123), "https", ("example.com", 443))
            assert raw_path == uri.partition(b"?")[0] and query == uri.partition(b"?")[2]
            assert root == ""  # SCRIPT_NAME is the whole path (stock fastcgi_params): not a mount point
            assert body.endswith(b"\nhello")
        assert path == "/third"
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # still open


def test_without_keep_conn_the_connection_closes_after_the_response() -> None:
    with fcgi_server(echo_asgi) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1, keep=False))
        reader.until_end(1)
        assert reader.closed()
        assert split(reader.stdout[1])[0] == "200 OK"


def test_a_body_without_content_length_ends_with_stdin() -> None:
    """nginx with fastcgi_request_buffering off and a chunked request: no CONTENT_LENGTH, STDIN in pieces."""
    body = os.urandom(300_000)
    with fcgi_server(echo_asgi) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1, b"POST", b"/stream", None, declare=False))
        for i in range(0, len(body), 50_000):
            sock.sendall(record(STDIN, 1, body[i:i + 50_000]))
            time.sleep(0.002)
        sock.sendall(record(STDIN, 1))
        reader.until_end(1)
    assert split(reader.stdout[1])[2].partition(b"\n")[2] == body


def test_multiplexed_requests_are_answered_each_in_its_own_records() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        delay = float(scope["query_string"] or b"0")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": scope["path"].encode() + b"%d;" % i,
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with fcgi_server(app) as srv, connected(srv) as (sock, reader):
        records = [records_of(request(1, uri=b"/slow?0.05")), records_of(request(2, uri=b"/fast?0.01"))]
        stream = b"".join(a + b for a, b in zip(*records, strict=True))  # the two requests' records alternate
        for i in range(0, len(stream), 37):  # and the stream is cut anywhere
            sock.sendall(stream[i:i + 37])
            time.sleep(0.001)
        reader.until_end(1, 2)
    assert split(reader.stdout[1])[2] == b"/slow0;/slow1;/slow2;"
    assert split(reader.stdout[2])[2] == b"/fast0;/fast1;/fast2;"
    assert reader.ended == {1: (0, REQUEST_COMPLETE), 2: (0, REQUEST_COMPLETE)}


def test_get_values_advertises_multiplexing() -> None:
    with fcgi_server(echo_asgi, limit_concurrency=50) as srv, connected(srv) as (sock, reader):
        sock.sendall(record(GET_VALUES, 0, encode_pairs([(b"FCGI_MPXS_CONNS", b""), (b"FCGI_MAX_REQS", b""),
                                                         (b"FCGI_UNKNOWN", b"")])))
        rec = reader.read_record()
    assert rec is not None and rec[0] == GET_VALUES_RESULT and rec[1] == 0
    assert dict(parse_pairs(rec[2])) == {b"FCGI_MPXS_CONNS": b"1", b"FCGI_MAX_REQS": b"50"}


def test_abort_request_is_a_disconnect_and_ends_the_request(tmp_path: Path) -> None:
    seen: list[str] = []
    started = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/wait":
            started.set()
            while (await receive())["type"] != "http.disconnect":
                pass
            seen.append("disconnect")
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": repr(seen).encode()})

    with fcgi_server(app) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(3, b"POST", b"/wait", None))  # body still to come: the app waits on receive
        time.sleep(0.2)
        sock.sendall(record(ABORT_REQUEST, 3))
        reader.until_end(3)
        assert reader.stdout.get(3, b"") == b"" and reader.ended[3] == (0, REQUEST_COMPLETE)
        sock.sendall(record(STDIN, 3, b"late") + record(STDIN, 3))  # ignored: the request is over
        sock.sendall(request(4, uri=b"/after"))  # the same connection goes on
        reader.until_end(4)
    assert split(reader.stdout[4])[2] == b"['disconnect']"


def test_limit_concurrency_answers_overloaded() -> None:
    release = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/hold":
            for _ in range(500):
                if release.is_set():
                    break
                await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    with fcgi_server(app, limit_concurrency=1) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1, uri=b"/hold"))
        time.sleep(0.2)
        sock.sendall(request(2, uri=b"/other"))
        reader.until_end(2)
        assert reader.ended[2] == (0, OVERLOADED) and 2 not in reader.stdout
        release.set()
        reader.until_end(1)
    assert split(reader.stdout[1])[2] == b"done"


@pytest.mark.parametrize("mode", ["threads", "loop"])
def test_wsgi_request_environ(mode: str) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        keys = ("REQUEST_METHOD", "REMOTE_ADDR", "wsgi.url_scheme", "SERVER_NAME", "SCRIPT_NAME", "PATH_INFO",
                "QUERY_STRING", "CONTENT_LENGTH", "DOCUMENT_ROOT", "APP_ENV", "GATEWAY_INTERFACE")
        facts = repr({key: environ.get(key) for key in keys}).encode() + b"\n"
        body = environ["wsgi.input"].read()
        start_response("201 Created", [("Content-Length", str(len(facts) + len(body)))])
        return [facts, body]

    with fcgi_server(app, interface="wsgi", wsgi_mode=mode) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1, b"PUT", b"/w%2Fx?q=1", b"data" * 5000, extra=[(b"APP_ENV", b"prod")]))
        reader.until_end(1)
    status, fields, body = split(reader.stdout[1])
    env = ast.literal_eval(body.partition(b"\n")[0].decode())
    assert status == "201 Created" and int(fields["content-length"]) == len(body)
    assert env == {"REQUEST_METHOD": "PUT", "REMOTE_ADDR": "203.0.113.7", "wsgi.url_scheme": "https",
                   "SERVER_NAME": "example.com", "SCRIPT_NAME": "", "PATH_INFO": "/w/x", "QUERY_STRING": "q=1",
                   "CONTENT_LENGTH": "20000", "DOCUMENT_ROOT": "/srv", "APP_ENV": "prod",
                   "GATEWAY_INTERFACE": "CGI/1.1"}
    assert body.partition(b"\n")[2] == b"data" * 5000


def test_a_script_name_prefix_is_the_mount_point() -> None:
    with fcgi_server(echo_asgi) as srv, connected(srv) as (sock, reader):
        pairs = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/app/users?id=1"), (b"SCRIPT_NAME", b"/app"),
                 (b"PATH_INFO", b"/users"), (b"CONTENT_LENGTH", b"0")]
        sock.sendall(record(BEGIN_REQUEST, 1, struct.pack("!HB5x", 1, KEEP_CONN)) + record(PARAMS, 1, encode_pairs(
            pairs)) + record(PARAMS, 1) + record(STDIN, 1))
        reader.until_end(1)
    *_, path, raw_path, query, root = facts_of(split(reader.stdout[1])[2])
    assert (root, path, raw_path, query) == ("/app", "/app/users", b"/app/users", b"id=1")


def test_over_the_body_limit_is_413_declared_or_streamed() -> None:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        called.append(scope["path"])
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with fcgi_server(app, limit_request_body=1000) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1, b"POST", b"/declared", b"x" * 5000))
        reader.until_end(1)
        sock.sendall(request(2, b"POST", b"/streamed", b"y" * 5000, declare=False))
        reader.until_end(2)
        sock.sendall(request(3, b"POST", b"/small", b"z" * 10))
        reader.until_end(3)
        sock.sendall(request(4, b"POST", b"/late", None, declare=False))  # the app runs, then too much comes
        time.sleep(0.2)
        sock.sendall(record(STDIN, 4, b"w" * 600) + record(STDIN, 4, b"w" * 600) + record(STDIN, 4))
        reader.until_end(4)
    assert split(reader.stdout[1])[0].startswith("413")
    assert called == ["/small", "/late"]  # /streamed was over the limit before its app was called: never called
    assert split(reader.stdout[4])[0].startswith("413")
    assert split(reader.stdout[2])[0].startswith("413") and b"--limit-request-body" in reader.stdout[2]
    assert split(reader.stdout[3])[2] == b"ok"


def test_variables_that_describe_no_request_get_a_400_and_the_connection_goes_on() -> None:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            called.append(scope["path"])
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    bad = record(BEGIN_REQUEST, 1, struct.pack("!HB5x", 1, KEEP_CONN)) + record(
        PARAMS, 1, encode_pairs([(b"REQUEST_URI", b"/")])) + record(PARAMS, 1) + record(STDIN, 1)
    with fcgi_server(app) as srv, connected(srv) as (sock, reader):
        sock.sendall(bad)
        reader.until_end(1)
        sock.sendall(request(2, uri=b"/ok"))
        reader.until_end(2)
    assert split(reader.stdout[1])[0] == "400 Bad Request" and b"REQUEST_METHOD" in reader.stdout[1]
    assert split(reader.stdout[2])[0] == "204 No Content" and called == ["/ok"]


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # an HTTP client on the FastCGI port
    b"\x02" + record(BEGIN_REQUEST, 1, bytes(8))[1:],  # version 2
    record(BEGIN_REQUEST, 1, bytes(5)),  # a BEGIN_REQUEST of the wrong size
    record(BEGIN_REQUEST, 1, struct.pack("!HB5x", 1, 0)) + record(STDIN, 1, b"x"),  # STDIN before the params end
    record(BEGIN_REQUEST, 1, struct.pack("!HB5x", 1, 0)) + record(PARAMS, 1, b"\x05\x05abc") + record(PARAMS, 1),
    record(STDOUT, 1, b"x"),  # a type only applications send
], ids=["http-client", "version", "begin-size", "stdin-early", "bad-pair", "app-type"])
def test_broken_records_close_without_calling_the_app(data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            called.append(scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    with caplog.at_level(logging.INFO, logger="bascule.error"), fcgi_server(app) as srv:
        with connected(srv) as (sock, reader):
            sock.sendall(data)
            assert reader.closed() and not reader.stdout
        with connected(srv) as (sock, reader):  # the server is unharmed
            sock.sendall(request(1, uri=b"/fine"))
            reader.until_end(1)
    assert called == ["/fine"] and split(reader.stdout[1])[2] == b"ok"
    assert any("closed a FastCGI connection from 127.0.0.1" in r.getMessage() for r in caplog.records)


def test_idle_kept_connection_closes_after_keep_alive_timeout() -> None:
    with fcgi_server(echo_asgi, timeout_keep_alive=0.5) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1))
        reader.until_end(1)
        start = time.monotonic()
        assert reader.closed(timeout=5) and time.monotonic() - start < 4


def test_incomplete_params_are_closed_at_the_head_deadline() -> None:
    with fcgi_server(echo_asgi, timeout_request_head=0.5) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1)[:60])
        start = time.monotonic()
        assert reader.closed(timeout=5) and time.monotonic() - start < 4


def test_app_deadline_answers_504() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(30)

    with fcgi_server(app, timeout_request=0.5) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1))
        reader.until_end(1)
    assert split(reader.stdout[1])[0] == "504 Gateway Timeout"


def test_app_error_is_a_500_and_the_connection_goes_on() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"fine"})

    with fcgi_server(app) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1, uri=b"/boom") + request(2, uri=b"/"))
        reader.until_end(1, 2)
    assert split(reader.stdout[1])[0] == "500 Internal Server Error" and split(reader.stdout[2])[2] == b"fine"


def test_app_error_after_a_complete_response_ends_only_its_request() -> None:
    """An app that raises once its response is complete (Starlette's error middleware re-raises after its 500)
    has had its END_REQUEST: the connection is not closed under the request beside it, nor under the web
    server, which already put it back in its keepalive pool (nginx then logged a reset and retried, or
    answered 502 for a POST)."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/slow":
            await send({"type": "http.response.body", "body": b"first;", "more_body": True})
            await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b"done"})
        if scope["path"] == "/raise":
            raise RuntimeError("raised after a complete response")

    with fcgi_server(app) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1, uri=b"/slow") + request(2, uri=b"/raise"))
        reader.until_end(1, 2)
        sock.sendall(request(2, uri=b"/after"))
        del reader.ended[2], reader.stdout[2]
        reader.until_end(2)
    assert split(reader.stdout[1])[2] == b"first;done" and split(reader.stdout[2])[2] == b"done"
    assert reader.ended == {1: (0, REQUEST_COMPLETE), 2: (0, REQUEST_COMPLETE)}


def test_pathsend_and_head(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(path)})

    with fcgi_server(app) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1) + request(2, b"HEAD"))
        reader.until_end(1, 2)
    _, fields, body = split(reader.stdout[1])
    assert body == data and fields["content-length"] == str(len(data))
    assert split(reader.stdout[2])[1]["content-length"] == str(len(data)) and split(reader.stdout[2])[2] == b""


def test_a_request_past_its_deadline_leaves_the_kept_connection_and_its_neighbours_alone() -> None:
    """The 504 ends that request alone: the app's cancellation that follows must not close the connection
    (CGIExchange.abort closed it even for a request already answered), which carries other requests."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            await asyncio.sleep(30)
        await asyncio.sleep(float(scope["query_string"] or b"0"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    with fcgi_server(app, timeout_request=0.5) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1, uri=b"/slow") + request(2, uri=b"/neighbour?0.45"))
        reader.until_end(1, 2)
        time.sleep(0.3)  # the cancelled app's end
        sock.sendall(request(3, uri=b"/after"))
        reader.until_end(3)
    assert split(reader.stdout[1])[0] == "504 Gateway Timeout"
    assert split(reader.stdout[2])[2] == b"/neighbour" and split(reader.stdout[3])[2] == b"/after"


def test_requests_after_a_close_without_keep_conn_are_not_served_and_the_connection_closes() -> None:
    """A request without FCGI_KEEP_CONN ends while another has begun: the connection lingers (FIN sent) and
    closes. What comes meanwhile is read and dropped: a request started then wrote after the FIN, which
    raised in the flush, and the close (which flushes first) never happened."""
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        called.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with fcgi_server(app) as srv, connected(srv) as (sock, reader):
        second = request(2, uri=b"/second")
        sock.sendall(request(1, uri=b"/first", keep=False) + second[:16])  # request 2 begun, no params yet
        reader.until_end(1)
        sock.sendall(second[16:])
        start = time.monotonic()
        assert reader.closed(timeout=6) and time.monotonic() - start < 5  # the FIN
        time.sleep(2.5)  # past the linger: the server's side is closed too, and answers with a reset
        with pytest.raises(OSError):
            for _ in range(10):
                sock.sendall(record(STDIN, 9, b"x" * 1000))  # ignored records: only a close ends it
                time.sleep(0.05)
    assert called == ["/first"] and 2 not in reader.ended


def test_a_body_all_received_but_not_read_yet_is_not_idle() -> None:
    """--timeout-body-idle watches the web server's STDIN, not the app: a body whose STDIN has ended is
    complete, however long the app takes to read it (it was counted as idle and the connection closed)."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(1.5)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    with fcgi_server(app, timeout_body_idle=0.5) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1, b"POST", b"/slow-reader", b"payload"))
        reader.until_end(1)
    assert split(reader.stdout[1])[2] == b"payload"


@pytest.mark.parametrize(("stdin", "what"), [(b"x" * 11, "longer than its CONTENT_LENGTH"),
                                             (b"x" * 9, "bytes short of its CONTENT_LENGTH")])
def test_stdin_that_disagrees_with_content_length_closes(stdin: bytes, what: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            called.append(scope["path"])

    begin = record(BEGIN_REQUEST, 1, struct.pack("!HB5x", 1, KEEP_CONN))
    data = begin + record(PARAMS, 1, encode_pairs(params(b"POST", b"/p", 10))) + record(PARAMS, 1)
    data += record(STDIN, 1, stdin) + record(STDIN, 1)
    with caplog.at_level(logging.INFO, logger="bascule.error"), fcgi_server(app) as srv, \
            connected(srv) as (sock, reader):
        sock.sendall(data)
        assert reader.closed() and not reader.ended
    assert called == []
    assert any(what in r.getMessage() for r in caplog.records)


def test_params_deadline_holds_while_another_request_runs() -> None:
    """A request's params that never complete are a slow head even while the connection serves another."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            while (await receive())["type"] != "http.disconnect":  # runs until the connection goes
                pass

    with fcgi_server(app, timeout_request_head=0.5) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1, uri=b"/long"))
        time.sleep(0.2)
        sock.sendall(request(2)[:40])  # BEGIN_REQUEST and a piece of the params, then nothing
        start = time.monotonic()
        assert reader.closed(timeout=8) and time.monotonic() - start < 5


def test_a_half_closed_connection_closes_after_its_last_response() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(0.3)  # still running when the half-close comes
            await echo_asgi(scope, receive, send)

    with fcgi_server(app, timeout_keep_alive=30) as srv, connected(srv) as (sock, reader):
        sock.sendall(request(1, b"POST", b"/h", b"abc"))
        sock.shutdown(socket.SHUT_WR)
        start = time.monotonic()
        assert reader.closed(timeout=10) and time.monotonic() - start < 5  # not the keep-alive timeout
        assert reader.ended == {1: (0, REQUEST_COMPLETE)} and split(reader.stdout[1])[2].endswith(b"\nabc")
