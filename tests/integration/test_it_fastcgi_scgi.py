"""bascule's FastCGI and SCGI listeners with real parts (issue 14): nginx's fastcgi_pass and scgi_pass with the
stock /etc/nginx/fastcgi_params and scgi_params, libfcgi's cgi-fcgi, raw FastCGI records, and uWSGI beside it.

One bascule process per app (the Flask and the FastAPI app of it_uwsgi_apps) listens on four sockets at once
(``fastcgi://`` and ``scgi://``, TCP and Unix), and one nginx (nginx_support: its own prefix, loopback only)
has a server per way in: FastCGI with ``fastcgi_keep_conn on`` and an upstream ``keepalive`` pool, FastCGI
closed after each response, FastCGI with ``fastcgi_request_buffering off`` (a chunked body streams through
without a length), FastCGI over a Unix socket, SCGI over TCP and over a Unix socket. Every server adds a
deployment's own variable (``fastcgi_param APP_ENV prod``). The browser's side is http.client from
127.0.0.2, so the app's client (nginx's ``$remote_addr`` and ``$remote_port``) is told apart from the
connection's own peer (nginx, on 127.0.0.1).

What must hold: the path as the client sent it (``%2F`` never decoded into ``/`` in raw_path), the query,
the client, bodies both ways (1 MiB up, a streamed 8 MiB down), HEAD, the app's 404 and 500 (the worker
lives on), the stock params' ``SCRIPT_NAME`` (the whole path, for PHP) never taken as the app's mount point,
one upstream connection reused with keep_conn and a new one per request without. Then the FastCGI protocol
itself on raw records (fastcgi_wire's encoders): GET_VALUES, two requests multiplexed on one connection,
ABORT_REQUEST reaching the app as ``http.disconnect``, OVERLOADED at --limit-concurrency, a close after a
response without KEEP_CONN, and the CGI facts (REMOTE_ADDR, HTTPS, extra variables) believed only from a
--forwarded-allow-ips peer. uWSGI (PyPI pyuwsgi), behind the same nginx configuration, is the peer whose
behaviour bascule is compared with.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from fcgi_support import cgi_vars, fcgi_connection, request, split_cgi
from it_support import tcp_ready
from nginx_support import (
    PARAMS_DIR,
    bascule,
    error_log_size,
    have_nginx,
    nginx,
    nginx_errors,
    server,
    upstream,
    uwsgi_binary,
    uwsgi_server,
)

from bascule.protocols.fastcgi_wire import (
    REQUEST_COMPLETE,
)
from bascule.protocols.scgi_wire import encode_head

CGI_FCGI = shutil.which("cgi-fcgi")
pytestmark = pytest.mark.skipif(not have_nginx("fastcgi_params", "scgi_params"),
                                reason="nginx is not installed (apt-get install nginx)")

APPS_BY_KIND = {"flask": "it_uwsgi_apps:flask_app", "fastapi": "it_uwsgi_apps:fastapi_app"}
ROUTES = ("fcgi-keep", "fcgi-close", "fcgi-unbuffered", "fcgi-unix", "scgi", "scgi-unix")
"""The ways through nginx (one server each): FastCGI keep_conn + keepalive pool, FastCGI without keep_conn,
FastCGI keep_conn with request buffering off, FastCGI over a Unix socket, SCGI over TCP and a Unix socket."""
CASES = [(kind, route) for kind in APPS_BY_KIND for route in ROUTES]
CLIENT = "127.0.0.2"
"""The browser's address: nginx listens on 127.0.0.1, so the app's client and its peer differ."""
MIB = 1024 * 1024
HELLO = b"hello\n" * 100
TARGET = "/echo/a%2Fb/caf%C3%A9?x=1&y=%2F&z=%C3%A9"
DECODED = "/echo/a/b/café"
WSGI_DECODED = DECODED.encode("utf-8").decode("latin-1")  # PEP 3333: bytes as latin-1 str


@dataclass
class Listeners:
    """One bascule process's four listeners."""

    fcgi_port: int
    scgi_port: int
    fcgi_sock: str
    scgi_sock: str

    @property
    def binds(self) -> list[str]:
        return [f"fastcgi://127.0.0.1:{self.fcgi_port}", f"scgi://127.0.0.1:{self.scgi_port}",
                f"fastcgi://unix:{self.fcgi_sock}", f"scgi://unix:{self.scgi_sock}"]


@dataclass
class Stack:
    nginx_root: Path
    ports: dict[tuple[str, str], int] = field(default_factory=dict)
    """(kind, route) -> the nginx port serving it."""
    listeners: dict[str, Listeners] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)


def fcgi_location(upstream_name: str, *extra: str) -> str:
    return " ".join((f"include {PARAMS_DIR / 'fastcgi_params'};", "fastcgi_param APP_ENV prod;", *extra,
                     f"fastcgi_pass {upstream_name};"))


def scgi_location(upstream_name: str, *extra: str) -> str:
    return " ".join((f"include {PARAMS_DIR / 'scgi_params'};", "scgi_param APP_ENV prod;", *extra,
                     f"scgi_pass {upstream_name};"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("fcgi")
    result = Stack(tmp / "nginx")
    blocks = []
    with contextlib.ExitStack() as stack:
        for kind, app in APPS_BY_KIND.items():
            listen = Listeners(free_port(), free_port(), str(tmp / f"{kind}-f.sock"), str(tmp / f"{kind}-s.sock"))
            result.listeners[kind] = listen
            result.logs[kind] = tmp / f"bascule-{kind}.log"
            stack.enter_context(bascule(result.logs[kind], app, listen.binds))
            blocks.append(upstream(f"keep_{kind}", f"127.0.0.1:{listen.fcgi_port}", keepalive=8))
            blocks.append(upstream(f"unbuf_{kind}", f"127.0.0.1:{listen.fcgi_port}", keepalive=8))
            locations = {
                "fcgi-keep": fcgi_location(f"keep_{kind}", "fastcgi_keep_conn on;"),
                "fcgi-close": fcgi_location(f"127.0.0.1:{listen.fcgi_port}"),
                "fcgi-unbuffered": fcgi_location(f"unbuf_{kind}", "fastcgi_keep_conn on;",
                                                 "fastcgi_request_buffering off;"),
                "fcgi-unix": fcgi_location(f"unix:{listen.fcgi_sock}"),
                "scgi": scgi_location(f"127.0.0.1:{listen.scgi_port}"),
                "scgi-unix": scgi_location(f"unix:{listen.scgi_sock}"),
            }
            for route, location in locations.items():
                port = free_port()
                result.ports[kind, route] = port
                blocks.append(server(port, location))
        stack.enter_context(nginx(result.nginx_root, "".join(blocks), list(result.ports.values())))
        yield result


@pytest.fixture
def nginx_stack(stack: Stack) -> Iterator[Stack]:
    """The stack, and after the test: no new line at level error in nginx's log (an upstream that reset a kept
    connection, broke FastCGI or closed early shows there even when nginx's retry hid it from the client)."""
    start = error_log_size(stack.nginx_root)
    yield stack
    errors = nginx_errors(stack.nginx_root, start)
    assert not errors, errors


# -- the browser's side ------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    local: tuple[str, int]
    """The browser's own address and port (what the app must see as its client)."""

    def json(self) -> Any:
        return json.loads(self.body)


def call(port: int, method: str, target: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    """One request on a new connection from 127.0.0.2 to nginx's ``port``, read whole (30 s at most)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(CLIENT, 0))
    try:
        conn.request(method, target, body=body, headers=headers or {})
        assert conn.sock is not None
        local = conn.sock.getsockname()
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read(), (local[0], local[1]))
    finally:
        conn.close()


def environ(port: int, target: str = TARGET) -> tuple[dict[str, Any], tuple[str, int]]:
    """What the Flask app's environ holds for ``target`` (its X-Show-Environ middleware), and the client."""
    reply = call(port, "GET", target, headers={"X-Show-Environ": "1"})
    assert reply.status == 200, reply.body[:500]
    return reply.json(), reply.local


def seen_by(kind: str, port: int, target: str) -> tuple[dict[str, Any], tuple[str, int]]:
    """The app's view of one request: the environ (Flask) or the scope (FastAPI's /scope route)."""
    if kind == "flask":
        return environ(port, target)
    reply = call(port, "GET", target.replace("/echo/", "/scope/", 1))
    assert reply.status == 200, reply.body[:500]
    return reply.json(), reply.local


def is_unix(route: str) -> bool:
    return route.endswith("-unix")


# -- through nginx -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "route"), CASES, ids=[f"{k}-{r}" for k, r in CASES])
def test_path_query_and_client(nginx_stack: Stack, kind: str, route: str) -> None:
    port = nginx_stack.ports[kind, route]
    reply = call(port, "GET", TARGET)
    assert reply.status == 200, reply.body[:500]
    seen = reply.json()
    assert seen["path"] == DECODED and seen["query"] == "x=1&y=%2F&z=%C3%A9"
    assert seen["args"] == {"x": "1", "y": "/", "z": "é"}
    assert seen["client"] == CLIENT and seen["scheme"] == "http" and seen["method"] == "GET"
    assert seen["host"] == "127.0.0.1"  # the stock params' HTTP_HOST ($host)
    if kind == "fastapi":
        assert seen["raw_path"] == "/echo/a%2Fb/caf%C3%A9"  # never decoded: %2F stays apart from /


@pytest.mark.parametrize(("kind", "route"), CASES, ids=[f"{k}-{r}" for k, r in CASES])
def test_what_the_app_sees(nginx_stack: Stack, kind: str, route: str) -> None:
    """The interface's own keys: nginx's client (trusted loopback/unix peer) with its port; the whole path as
    PATH_INFO and no SCRIPT_NAME although fastcgi_params send SCRIPT_NAME=$fastcgi_script_name; the
    deployment's APP_ENV in the WSGI environ only (never a scope key)."""
    port = nginx_stack.ports[kind, route]
    seen, local = seen_by(kind, port, TARGET)
    if kind == "flask":
        assert seen["PATH_INFO"] == WSGI_DECODED and seen["SCRIPT_NAME"] == ""
        assert seen["QUERY_STRING"] == "x=1&y=%2F&z=%C3%A9" and seen["REQUEST_METHOD"] == "GET"
        assert seen["REMOTE_ADDR"] == CLIENT and seen["REMOTE_PORT"] == str(local[1])
        assert seen["wsgi.url_scheme"] == "http" and seen["HTTPS"] is None
        assert seen["APP_ENV"] == "prod"
        for key in ("REQUEST_URI", "RAW_URI"):  # where the server sets them, the target as sent
            assert seen[key] in (None, TARGET), key
        peer = seen["peer"]
    else:
        assert seen["path"] == "/scope/a/b/café" and seen["raw_path"] == "/scope/a%2Fb/caf%C3%A9"
        assert seen["root_path"] == "" and seen["query"] == "x=1&y=%2F&z=%C3%A9"
        assert seen["client"] == [CLIENT, local[1]] and seen["scheme"] == "http"
        assert "APP_ENV" not in seen["keys"] and all(key.islower() for key in seen["keys"]), seen["keys"]
        sync = call(port, "GET", TARGET.replace("/echo/", "/sync-scope/", 1))  # a sync endpoint, in a thread
        assert sync.status == 200 and sync.json()["raw_path"] == "/sync-scope/a%2Fb/caf%C3%A9"
        assert sync.json()["client"] == [CLIENT, sync.local[1]]
        peer = seen["peer"]
    if not is_unix(route):  # the connection's own peer: nginx, not the browser
        assert peer is not None and peer[0] == "127.0.0.1" and peer[1] != local[1], peer


@pytest.mark.parametrize(("kind", "route"), CASES, ids=[f"{k}-{r}" for k, r in CASES])
def test_post_body(nginx_stack: Stack, kind: str, route: str) -> None:
    port = nginx_stack.ports[kind, route]
    body = os.urandom(MIB + 17)
    reply = call(port, "POST", "/upload", body=body)
    assert reply.status == 200, reply.body[:500]
    assert reply.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    empty = call(port, "POST", "/upload", body=b"")
    assert empty.status == 200 and empty.json()["size"] == 0


@pytest.mark.parametrize(("kind", "route"), CASES, ids=[f"{k}-{r}" for k, r in CASES])
def test_large_streamed_response(nginx_stack: Stack, kind: str, route: str) -> None:
    reply = call(nginx_stack.ports[kind, route], "GET", "/big?n=8")
    assert reply.status == 200 and reply.headers.get("transfer-encoding") == "chunked"  # nginx frames it
    assert len(reply.body) == 8 * MIB
    assert all(reply.body[i * MIB:i * MIB + 8] == b"%08d" % i for i in range(8))


@pytest.mark.parametrize(("kind", "route"), CASES, ids=[f"{k}-{r}" for k, r in CASES])
def test_head_404_and_500(nginx_stack: Stack, kind: str, route: str) -> None:
    port = nginx_stack.ports[kind, route]
    head = call(port, "HEAD", "/hello")
    assert head.status == 200 and head.body == b"" and head.headers["content-length"] == str(len(HELLO))
    assert call(port, "GET", "/no/such/route").status == 404
    broken = call(port, "GET", "/boom")
    assert broken.status == 500
    # the worker lives on, and with keep_conn the connection too: a POST nginx would not retry on a reset
    after = call(port, "POST", "/upload", body=b"abc")
    assert after.status == 200 and after.json()["size"] == 3, after.body[:500]
    again = call(port, "GET", "/hello")
    assert again.status == 200 and again.body == HELLO
    assert "boom (on purpose)" in nginx_stack.logs[kind].read_text(errors="replace")


TCP_ROUTES = [(kind, route) for kind in APPS_BY_KIND
              for route in ("fcgi-keep", "fcgi-close", "fcgi-unbuffered", "scgi")]


@pytest.mark.parametrize(("kind", "route"), TCP_ROUTES, ids=[f"{k}-{r}" for k, r in TCP_ROUTES])
def test_upstream_connections(nginx_stack: Stack, kind: str, route: str) -> None:
    """fastcgi_keep_conn on with a keepalive pool: every request on one upstream connection (bascule leaves it
    open after each response); off: bascule closes it, so each request comes on a new one, as over SCGI (one
    request per connection)."""
    port = nginx_stack.ports[kind, route]
    peers = set()
    for i in range(6):
        seen, _ = seen_by(kind, port, f"/echo/n{i}")
        peers.add(tuple(seen["peer"]))
    if route in ("fcgi-close", "scgi"):
        assert len(peers) == 6, peers
    else:
        assert len(peers) == 1, peers


@pytest.mark.parametrize("kind", sorted(APPS_BY_KIND))
def test_chunked_body_unbuffered(nginx_stack: Stack, kind: str) -> None:
    """fastcgi_request_buffering off and a chunked request: nginx streams STDIN without CONTENT_LENGTH; the body
    ends where STDIN ends, and the upstream connection is reused for the next request."""
    port = nginx_stack.ports[kind, "fcgi-unbuffered"]
    pieces = [os.urandom(size) for size in (1, 70000, 3, 300000, 65536, 12345)]
    whole = b"".join(pieces)

    for _ in range(2):
        reply = call(port, "POST", "/upload", body=iter(pieces))  # http.client: chunked
        assert reply.status == 200, reply.body[:500]
        assert reply.json() == {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    if kind == "flask":  # what nginx sent: no CONTENT_LENGTH (empty), so the body ends with STDIN
        reply = call(port, "POST", "/echo/x", body=iter(pieces), headers={"X-Show-Environ": "1"})
        assert reply.status == 200 and reply.json()["CONTENT_LENGTH"] in (None, ""), reply.body[:500]
    peers = {tuple(seen_by(kind, port, f"/echo/after{i}")[0]["peer"]) for i in range(3)}
    assert len(peers) == 1, peers  # the chunked bodies left the kept connection in step


# -- cgi-fcgi: libfcgi's client -----------------------------------------------------------------------


def cgi_fcgi(port: int, env: dict[str, str], stdin: bytes = b"") -> tuple[bytes, bytes]:
    """Run ``cgi-fcgi -bind -connect``: it sends ``env`` (its whole environment) as PARAMS and stdin as STDIN,
    and prints the CGI response. Returns (head, body)."""
    assert CGI_FCGI is not None
    base = {"SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "example.com", "SERVER_PORT": "80",
            "HTTP_HOST": "example.com", "GATEWAY_INTERFACE": "CGI/1.1"}
    result = subprocess.run([CGI_FCGI, "-bind", "-connect", f"127.0.0.1:{port}"], input=stdin, env={**base, **env},
                            capture_output=True, timeout=20)
    assert result.returncode == 0, result
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.skipif(CGI_FCGI is None, reason="cgi-fcgi (Debian libfcgi-bin) is not installed")
@pytest.mark.parametrize("kind", sorted(APPS_BY_KIND))
def test_cgi_fcgi(stack: Stack, kind: str) -> None:
    port = stack.listeners[kind].fcgi_port
    head, body = cgi_fcgi(port, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/echo/x%2Fy?q=1", "QUERY_STRING": "q=1",
                                 "REMOTE_ADDR": "192.0.2.7", "REMOTE_PORT": "5555"})
    assert head.startswith(b"Status: 200 OK\r\n"), (head, body)
    seen = json.loads(body)
    assert seen["path"] == "/echo/x/y" and seen["query"] == "q=1" and seen["args"] == {"q": "1"}
    assert seen["client"] == "192.0.2.7"  # a trusted peer (loopback): its REMOTE_ADDR is the client
    assert seen["host"] == "example.com"
    if kind == "fastapi":
        assert seen["raw_path"] == "/echo/x%2Fy"
    data = os.urandom(200_000)
    head, body = cgi_fcgi(port, {"REQUEST_METHOD": "POST", "REQUEST_URI": "/upload", "CONTENT_LENGTH": str(len(data)),
                                 "CONTENT_TYPE": "application/octet-stream"}, data)
    assert head.startswith(b"Status: 200 OK\r\n"), (head, body)
    assert json.loads(body) == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# -- trust: the CGI facts from trusted peers only --------------------------------------------------


PROXY_FACTS = {"REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": "4444", "HTTPS": "on", "APP_ENV": "prod",
               "HTTP_X_SHOW_ENVIRON": "1"}


def fcgi_environ(port: int, target: str = "/echo/t") -> dict[str, Any]:
    with fcgi_connection(port) as (sock, records):
        sock.sendall(request(1, cgi_vars("GET", target, **PROXY_FACTS)))
        out, ends, _ = records.responses({1})
    assert ends == {1: (0, REQUEST_COMPLETE)}
    head, body = split_cgi(out[1])
    assert head.startswith(b"Status: 200 OK\r\n"), (head, body)
    result: dict[str, Any] = json.loads(body)
    return result


def scgi_environ(port: int, target: str = "/echo/t") -> dict[str, Any]:
    """One SCGI request (scgi_wire.encode_head): the CGI response, then bascule closes the connection."""
    pairs = [(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"), *cgi_vars("GET", target, None, **PROXY_FACTS)]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(encode_head(pairs))
        data = b""
        while chunk := sock.recv(65536):  # to the close: one request per connection
            data += chunk
    head, body = split_cgi(data)
    assert head.startswith(b"Status: 200 OK\r\n"), (head, body)
    result: dict[str, Any] = json.loads(body)
    return result


def test_trusted_peer_facts(stack: Stack) -> None:
    """From a --forwarded-allow-ips peer (the default 127.0.0.1): REMOTE_ADDR/PORT, HTTPS and the extra
    variable are the app's."""
    listen = stack.listeners["flask"]
    for seen in (fcgi_environ(listen.fcgi_port), scgi_environ(listen.scgi_port)):
        assert seen["REMOTE_ADDR"] == "203.0.113.9" and seen["REMOTE_PORT"] == "4444", seen
        assert seen["wsgi.url_scheme"] == "https" and seen["HTTPS"] == "on" and seen["APP_ENV"] == "prod", seen
        assert seen["PATH_INFO"] == "/echo/t" and seen["SCRIPT_NAME"] == "", seen  # SCRIPT_NAME=/echo/t was sent


def test_untrusted_peer_facts(tmp_path: Path) -> None:
    """From a peer outside --forwarded-allow-ips, the same variables are ignored: the client is the socket's
    peer, the scheme the socket's, and the deployment variable never reaches the environ."""
    fcgi_port, scgi_port = free_port(), free_port()
    with bascule(tmp_path / "bascule.log", APPS_BY_KIND["flask"],
                 [f"fastcgi://127.0.0.1:{fcgi_port}", f"scgi://127.0.0.1:{scgi_port}"],
                 "--forwarded-allow-ips", "10.9.9.9"):
        for seen in (fcgi_environ(fcgi_port), scgi_environ(scgi_port)):
            assert seen["REMOTE_ADDR"] == "127.0.0.1" and seen["REMOTE_PORT"] != "4444", seen
            assert seen["wsgi.url_scheme"] == "http" and seen["HTTPS"] is None and seen["APP_ENV"] is None, seen
            assert seen["PATH_INFO"] == "/echo/t" and seen["SCRIPT_NAME"] == "", seen


def test_root_path_beside_script_name(tmp_path: Path) -> None:
    """With --root-path (a mount point the web server strips, as uvicorn's), the app's SCRIPT_NAME is that
    mount point and PATH_INFO the path received, whatever SCRIPT_NAME the web server sent (fastcgi_params:
    the whole path)."""
    fcgi_port, scgi_port = free_port(), free_port()
    with bascule(tmp_path / "bascule.log", APPS_BY_KIND["flask"],
                 [f"fastcgi://127.0.0.1:{fcgi_port}", f"scgi://127.0.0.1:{scgi_port}"], "--root-path", "/mnt"):
        for seen in (fcgi_environ(fcgi_port, "/echo/t?q=1"), scgi_environ(scgi_port, "/echo/t?q=1")):
            assert seen["SCRIPT_NAME"] == "/mnt" and seen["PATH_INFO"] == "/echo/t", seen
            assert seen["QUERY_STRING"] == "q=1", seen


# -- uWSGI behind the same nginx ---------------------------------------------------------------------


@pytest.mark.skipif(uwsgi_binary() is None, reason="uWSGI (PyPI pyuwsgi) is not installed")
def test_compared_with_uwsgi(stack: Stack, tmp_path: Path) -> None:
    """The Flask app on uWSGI's --fastcgi-socket and --scgi-socket and on bascule, behind one nginx with the
    same locations for both. With the stock params alone uWSGI hands the app no PATH_INFO (and, over FastCGI,
    SCRIPT_NAME = the whole path), so Flask routes every request to / and answers 404; bascule gives the app
    the whole path as PATH_INFO and SCRIPT_NAME "" (deliberately better). With ``PATH_INFO $uri`` added both
    route, and the app sees the same request: same status and bodies, same PATH_INFO, QUERY_STRING and
    client; SCRIPT_NAME still differs (uWSGI passes $fastcgi_script_name through)."""
    fcgi_port, scgi_port = free_port(), free_port()
    ours = stack.listeners["flask"]
    upstreams = {("uwsgi", "fcgi"): f"127.0.0.1:{fcgi_port}", ("uwsgi", "scgi"): f"127.0.0.1:{scgi_port}",
                 ("bascule", "fcgi"): f"127.0.0.1:{ours.fcgi_port}", ("bascule", "scgi"): f"127.0.0.1:{ours.scgi_port}"}
    ports: dict[tuple[str, str, str], int] = {}
    blocks = ""
    for (who, proto), address in upstreams.items():
        for params in ("stock", "routed"):
            port = ports[who, proto, params] = free_port()
            if proto == "fcgi":
                location = fcgi_location(address, *(["fastcgi_param PATH_INFO $uri;"] if params == "routed" else []))
            else:
                location = scgi_location(address, *(["scgi_param PATH_INFO $uri;"] if params == "routed" else []))
            blocks += server(port, location)
    target = "/echo/a%2Fb/caf%C3%A9?x=1&y=%2F"
    body = os.urandom(MIB + 3)
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    with uwsgi_server(tmp_path / "uwsgi.log", APPS_BY_KIND["flask"], "--fastcgi-socket", upstreams["uwsgi", "fcgi"],
                      "--scgi-socket", upstreams["uwsgi", "scgi"],
                      ready=lambda: tcp_ready(fcgi_port)() and tcp_ready(scgi_port)()), \
            nginx(tmp_path / "nginx", blocks, list(ports.values())):
        for key, port in ports.items():
            env, _ = environ(port, target)
            echo = call(port, "GET", target)
            seen[key] = {"environ": env, "echo": (echo.status, echo.json() if echo.status == 200 else None)}
            if key[2] == "routed":
                upload = call(port, "POST", "/upload", body=body)
                seen[key]["upload"] = upload.status, upload.json()
    for proto in ("fcgi", "scgi"):
        theirs, mine = seen["uwsgi", proto, "stock"], seen["bascule", proto, "stock"]
        assert theirs["echo"][0] == 404 and theirs["environ"]["PATH_INFO"] is None, theirs
        assert theirs["environ"]["SCRIPT_NAME"] == (WSGI_DECODED if proto == "fcgi" else None), theirs
        assert mine["echo"][0] == 200 and mine["echo"][1]["path"] == DECODED, mine
        assert mine["environ"]["PATH_INFO"] == WSGI_DECODED and mine["environ"]["SCRIPT_NAME"] == "", mine
        theirs, mine = seen["uwsgi", proto, "routed"], seen["bascule", proto, "routed"]
        assert mine["echo"] == theirs["echo"] and mine["echo"][0] == 200, (mine, theirs)
        expected = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        assert mine["upload"] == theirs["upload"] == (200, expected)
        assert mine["environ"]["SCRIPT_NAME"] == ""
        for params in ("stock", "routed"):
            theirs_env, mine_env = seen["uwsgi", proto, params]["environ"], seen["bascule", proto, params]["environ"]
            for key in ("QUERY_STRING", "REMOTE_ADDR", "REQUEST_METHOD", "APP_ENV", "wsgi.url_scheme", "HTTPS"):
                assert mine_env[key] == theirs_env[key], (proto, params, key, mine_env, theirs_env)
            if params == "routed":
                assert mine_env["PATH_INFO"] == theirs_env["PATH_INFO"] == WSGI_DECODED
            assert mine_env["REQUEST_URI"] in (None, theirs_env["REQUEST_URI"])
            assert mine_env["REMOTE_ADDR"] == CLIENT
