"""The SCGI listener (protocols/oneshot, SCGI dialect): raw SCGI requests over loopback, to ASGI and WSGI apps.

What nginx's scgi_pass does, byte for byte: the netstring of CGI variables (CONTENT_LENGTH first, SCGI=1),
the body, then read the CGI response (``Status:`` first) until the server closes. The uwsgi dialect's tests
(test_oneshot_uwsgi.py) cover what the two share (back-pressure, sendfile, deadlines); these check what the
SCGI dialect changes, plus the mount point and extra variables a trusted web server gives.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Running, serve_in_thread

from bascule.config import Config
from bascule.listen.listeners import Listener, listener_specs
from bascule.protocols.scgi_wire import encode_head
from bascule.specs import bind_wire
from bascule.trust import TrustedProxies

Vars = list[tuple[bytes, bytes]]


def scgi_request(method: bytes = b"GET", uri: bytes = b"/", body: bytes = b"", extra: Vars | None = None) -> bytes:
    """What nginx sends with the stock scgi_params, for a client at 203.0.113.7 over HTTPS."""
    pairs: Vars = [(b"CONTENT_LENGTH", str(len(body)).encode()), (b"SCGI", b"1"),
                   (b"REQUEST_METHOD", method), (b"REQUEST_URI", uri), (b"QUERY_STRING", uri.partition(b"?")[2]),
                   (b"CONTENT_TYPE", b""), (b"DOCUMENT_URI", uri.partition(b"?")[0]), (b"DOCUMENT_ROOT", b"/srv"),
                   (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REQUEST_SCHEME", b"https"),
                   (b"HTTPS", b"on"), (b"REMOTE_ADDR", b"203.0.113.7"), (b"REMOTE_PORT", b"50123"),
                   (b"SERVER_PORT", b"443"), (b"SERVER_NAME", b"example.com"), (b"HTTP_HOST", b"example.com")]
    return encode_head(pairs + (extra or [])) + body


@contextlib.contextmanager
def scgi_server(app: Any, **options: Any) -> Iterator[Running]:
    options.setdefault("port", 8000)
    with serve_in_thread(app, bind=("scgi://127.0.0.1:0",), **options) as srv:
        yield srv


def exchange(srv: Running, data: bytes) -> bytes:
    with socket.create_connection((srv.host, srv.port)) as sock:
        sock.settimeout(10)
        sock.sendall(data)
        out = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                out += chunk
    return out


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("Status: "), lines[0]
    return lines[0][8:], dict((n.lower(), v) for n, v in (line.split(": ", 1) for line in lines[1:])), body


async def echo_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    facts = repr((scope["method"], scope["client"], scope["scheme"], scope["server"], scope["path"],
                  scope["raw_path"], scope["query_string"], scope["root_path"]))
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": facts.encode() + b"\n" + body})


def test_bind_scgi_names_the_wire() -> None:
    assert bind_wire("scgi://127.0.0.1:4000") == ("scgi", "127.0.0.1:4000")
    assert bind_wire("scgi://unix:/run/app.sock") == ("scgi", "unix:/run/app.sock")
    config = Config(app="x:y", bind=("scgi://unix:/run/a.sock", "fastcgi://127.0.0.1:9000"))
    assert listener_specs(config) == [Listener("unix", "/run/a.sock", protocol="scgi"),
                                      Listener("tcp", ("127.0.0.1", 9000), protocol="fastcgi")]


def test_asgi_request_gets_a_cgi_response() -> None:
    with scgi_server(echo_asgi) as srv:
        reply = exchange(srv, scgi_request(b"POST", b"/a%2Fb?x=1", b"hello"))
    status, fields, body = split(reply)
    assert status == "200 OK" and fields["content-length"] == str(len(body))
    facts = ast.literal_eval(body.partition(b"\n")[0].decode())
    assert facts == ("POST", ("203.0.113.7", 50123), "https", ("example.com", 443), "/a/b", b"/a%2Fb", b"x=1", "")
    assert body.endswith(b"\nhello")


def test_untrusted_peer_gets_the_socket_facts_and_no_extras() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return [repr((environ["REMOTE_ADDR"], environ["wsgi.url_scheme"], environ.get("DOCUMENT_ROOT"),
                      environ["SCRIPT_NAME"], environ["PATH_INFO"])).encode()]

    with scgi_server(app, interface="wsgi") as srv:
        assert srv.server is not None and srv.server.ctx is not None
        srv.server.ctx.trusted_proxies = TrustedProxies("10.0.0.0/8")  # not loopback
        reply = exchange(srv, scgi_request(uri=b"/app/x", extra=[(b"SCRIPT_NAME", b"/app")]))
    assert ast.literal_eval(split(reply)[2].decode()) == ("127.0.0.1", "http", None, "", "/app/x")


@pytest.mark.parametrize("mode", ["threads", "loop"])
def test_wsgi_mount_point_and_extra_variables(mode: str) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        keys = ("SCRIPT_NAME", "PATH_INFO", "REMOTE_ADDR", "DOCUMENT_ROOT", "APP_ENV", "REQUEST_METHOD", "SCGI")
        return [repr({key: environ.get(key) for key in keys}).encode()]

    extra = [(b"SCRIPT_NAME", b"/app"), (b"APP_ENV", b"prod"), (b"PATH_INFO", b"/users")]
    with scgi_server(app, interface="wsgi", wsgi_mode=mode) as srv:
        reply = exchange(srv, scgi_request(uri=b"/app/users", extra=extra))
    assert ast.literal_eval(split(reply)[2].decode()) == {
        "SCRIPT_NAME": "/app", "PATH_INFO": "/users", "REMOTE_ADDR": "203.0.113.7", "DOCUMENT_ROOT": "/srv",
        "APP_ENV": "prod", "REQUEST_METHOD": "GET", "SCGI": "1"}


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # an HTTP client on the SCGI port
    b"3:abc,",  # a payload without NULs
    encode_head([(b"REQUEST_METHOD", b"GET"), (b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1")]),  # not first
    encode_head([(b"CONTENT_LENGTH", b"0"), (b"REQUEST_METHOD", b"GET")]),  # no SCGI=1
    encode_head([(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"), (b"REQUEST_URI", b"/")]),  # no method
    b"99999999:",  # over the limit
], ids=["http-client", "no-nul", "length-not-first", "no-scgi", "no-method", "oversize"])
def test_bad_input_closes_without_calling_the_app(data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            called.append(scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    with caplog.at_level(logging.INFO, logger="bascule.error"), scgi_server(app) as srv:
        reply = exchange(srv, data)
        after = exchange(srv, scgi_request())
    assert reply == b"" and called == ["/"] and split(after)[2] == b"ok"
    assert any("closed a SCGI connection from 127.0.0.1" in r.getMessage() for r in caplog.records)


def test_over_the_body_limit_is_a_cgi_413() -> None:
    with scgi_server(echo_asgi, limit_request_body=10) as srv:
        reply = exchange(srv, scgi_request(b"POST", b"/", b"x" * 100))
    status, _, body = split(reply)
    assert status.startswith("413 ") and b"--limit-request-body" in body
