"""Proxy headers on the wire: what an ASGI and a WSGI app see once a trusted proxy's X-Forwarded-* or
Forwarded fields are believed, over HTTP/1.1, HTTP/2 and WebSocket over both; and what they see when the peer
is not trusted or --no-proxy-headers is set (nothing changes). The resolution rules themselves are
tests/test_trust.py's; here, that they are applied once, before dispatch, to every field the app reads."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import http_exchange, serve_in_thread

from bascule.accesslog import format_access


async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the scope fields a proxy may change, as JSON (a WebSocket: in its first message)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    seen = {
        "client": scope["client"], "server": scope["server"], "scheme": scope["scheme"],
        "root_path": scope["root_path"], "path": scope["path"], "raw_path": scope["raw_path"].decode(),
        "host": dict(scope["headers"]).get(b"host", b"").decode(),
        "peer": scope["extensions"].get("bascule.peer"),
    }
    body = json.dumps(seen).encode()
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": body.decode()})
        await send({"type": "websocket.close"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def wsgi_echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    keys = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTPS", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT",
            "SCRIPT_NAME", "PATH_INFO", "bascule.peer")
    body = json.dumps({key: environ.get(key) for key in keys}).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def get(port: int, fields: str = "", path: str = "/x") -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        out = http_exchange(sock, f"GET {path} HTTP/1.1\r\nHost: inner:8000\r\n{fields}\r\n".encode())
    assert out.startswith(b"HTTP/1.1 200 "), out
    result: dict[str, Any] = json.loads(out.partition(b"\r\n\r\n")[2])
    return result


def get_h2(port: int, fields: list[tuple[str, str]], path: str = "/x") -> dict[str, Any]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    client.send_headers(1, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "inner:8000"),
                            *fields], end_stream=True)
    body = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(client.data_to_send())
        while True:
            data = sock.recv(65536)
            assert data, "closed before the response"
            events = client.receive_data(data)
            for event in events:
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
            if any(isinstance(event, h2.events.StreamEnded) for event in events):
                break
            sock.sendall(client.data_to_send())
    result: dict[str, Any] = json.loads(body)
    return result


def websocket_h1(port: int, fields: str = "") -> dict[str, Any]:
    key = base64.b64encode(b"0123456789abcdef").decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET /ws HTTP/1.1\r\nHost: inner:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{fields}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F if rest[1] & 0x7F < 126 else 2):
            rest += sock.recv(65536)
        size = rest[1] & 0x7F
        start = 2
        if size == 126:
            size, start = int.from_bytes(rest[2:4], "big"), 4
        while len(rest) < start + size:
            rest += sock.recv(65536)
        result: dict[str, Any] = json.loads(rest[start:start + size])
        return result


XFF = "X-Forwarded-For: 198.51.100.7, 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"
ALL = XFF + "X-Forwarded-Host: shop.example\r\nX-Forwarded-Port: 8443\r\nX-Forwarded-Prefix: /shop\r\n"


def test_asgi_over_http11_sees_the_rightmost_untrusted_hop_and_the_scheme() -> None:
    with serve_in_thread(asgi_echo) as srv:
        seen = get(srv.port, XFF)
    assert seen["client"] == ["203.0.113.9", 0]  # 198.51.100.7 was written by that client: never believed
    assert seen["scheme"] == "https" and seen["host"] == "inner:8000" and seen["root_path"] == ""
    assert seen["server"] == ["127.0.0.1", srv.port]
    assert seen["peer"]["client"][0] == "127.0.0.1"  # the connection's own client, kept for the app


def test_asgi_opt_ins_host_port_prefix() -> None:
    with serve_in_thread(asgi_echo, forwarded_host=True, forwarded_port=True, forwarded_prefix=True,
                         root_path="/static-root") as srv:
        seen = get(srv.port, ALL)
    assert seen["host"] == "shop.example:8443" and seen["server"] == ["shop.example", 8443]
    # the proxy's prefix replaces --root-path (both say where the proxy mounted the server)
    assert (seen["root_path"], seen["path"], seen["raw_path"]) == ("/shop", "/shop/x", "/shop/x")


def test_an_untrusted_peer_or_no_proxy_headers_changes_nothing() -> None:
    for options in ({"forwarded_allow_ips": "10.9.9.9"}, {"proxy_headers": False}):
        with serve_in_thread(asgi_echo, forwarded_host=True, forwarded_prefix=True, **options) as srv:
            seen = get(srv.port, ALL)
        assert seen["client"][0] == "127.0.0.1" and seen["scheme"] == "http" and seen["peer"] is None
        assert seen["host"] == "inner:8000" and seen["root_path"] == "" and seen["path"] == "/x"


def test_forwarded_mode_reads_forwarded_and_ignores_x_forwarded() -> None:
    fields = 'X-Forwarded-For: 192.0.2.66\r\nForwarded: for=198.51.100.7, for="[2001:db8::9]:4711";proto=https\r\n'
    with serve_in_thread(asgi_echo, proxy_headers_mode="forwarded") as srv:
        seen = get(srv.port, fields)
    assert seen["client"] == ["2001:db8::9", 4711] and seen["scheme"] == "https"
    with serve_in_thread(asgi_echo) as srv:  # x-forwarded mode ignores Forwarded
        seen = get(srv.port, fields)
    assert seen["client"] == ["192.0.2.66", 0] and seen["scheme"] == "http"


def test_wsgi_environ() -> None:
    with serve_in_thread(wsgi_echo, forwarded_host=True, forwarded_prefix=True) as srv:
        seen = get(srv.port, ALL)
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("203.0.113.9", "0")
    assert (seen["wsgi.url_scheme"], seen["HTTPS"]) == ("https", "on")
    assert (seen["HTTP_HOST"], seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("shop.example", "shop.example", "443")
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/shop", "/x")
    assert seen["bascule.peer"][0] == "127.0.0.1"
    with serve_in_thread(wsgi_echo, forwarded_allow_ips="") as srv:
        seen = get(srv.port, ALL)
    assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"], seen["HTTPS"], seen["HTTP_HOST"], seen["SCRIPT_NAME"]) == \
        ("127.0.0.1", "http", None, "inner:8000", "")


def test_http2_streams_are_resolved_like_http11_requests() -> None:
    with serve_in_thread(asgi_echo, forwarded_host=True) as srv:
        seen = get_h2(srv.port, [("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https"),
                                 ("x-forwarded-host", "shop.example")])
        plain = get_h2(srv.port, [])
    assert seen["client"] == ["203.0.113.9", 0] and seen["scheme"] == "https" and seen["host"] == "shop.example"
    assert plain["client"][0] == "127.0.0.1" and plain["scheme"] == "http" and plain["peer"] is None


def test_websocket_over_http11_gets_wss_and_the_client() -> None:
    with serve_in_thread(asgi_echo) as srv:
        seen = websocket_h1(srv.port, XFF)
        plain = websocket_h1(srv.port)
    assert seen["scheme"] == "wss" and seen["client"] == ["203.0.113.9", 0] and seen["peer"]["client"][0] == "127.0.0.1"
    assert plain["scheme"] == "ws" and plain["client"][0] == "127.0.0.1"


def websocket_h2(port: int, fields: list[tuple[str, str]]) -> dict[str, Any]:
    """An RFC 8441 WebSocket: the app's first message (the JSON), from the stream's DATA."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(client.data_to_send())
        while client.remote_settings.get(8) != 1:  # SETTINGS_ENABLE_CONNECT_PROTOCOL
            client.receive_data(sock.recv(65536))
            sock.sendall(client.data_to_send())
        client.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"), (":path", "/ws"),
                                (":scheme", "http"), (":authority", "inner:8000"), ("sec-websocket-version", "13"),
                                *fields])
        sock.sendall(client.data_to_send())
        while len(data) < 2 or len(data) < 4 + int.from_bytes(data[2:4], "big"):
            for event in client.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.DataReceived):
                    data += event.data
            sock.sendall(client.data_to_send())
    assert data[1] == 126  # a text frame of 126..65535 bytes: the JSON
    result: dict[str, Any] = json.loads(data[4:4 + int.from_bytes(data[2:4], "big")])
    return result


def test_websocket_over_http2_gets_wss_and_the_client() -> None:
    with serve_in_thread(asgi_echo) as srv:
        seen = websocket_h2(srv.port, [("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")])
        plain = websocket_h2(srv.port, [])
    assert seen["scheme"] == "wss" and seen["client"] == ["203.0.113.9", 0] and seen["peer"]["client"][0] == "127.0.0.1"
    assert plain["scheme"] == "ws" and plain["client"][0] == "127.0.0.1" and plain["peer"] is None


class _Proxied:
    method = "GET"
    raw_path = b"/"
    query_string = b""
    http_version = "1.1"
    status = 200
    client = ("203.0.113.9", 0)
    proxied = True
    peer = ("127.0.0.1", 5555)
    headers: list[tuple[bytes, bytes]] = []


@pytest.mark.parametrize(("proxied", "expected"), [(True, "127.0.0.1:5555 203.0.113.9:0"),
                                                   (False, "203.0.113.9:0 203.0.113.9:0")])
def test_the_access_log_shows_the_connections_peer_and_app_client_the_resolved_one(proxied: bool,
                                                                                   expected: str) -> None:
    record = _Proxied()
    record.proxied = proxied
    assert format_access("{client} {app_client}", record, 0, 0.0) == expected
