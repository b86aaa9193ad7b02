"""The PROXY protocol in the front door (listen/accept.py's Preamble), over real loopback sockets: the
header's endpoints become the connection's for every request on it (HTTP/1.1, HTTP/2, WSGI), its TLVs
mapped (SSL -> https and TLS facts, AUTHORITY -> server name, the header kept on the connection), LOCAL keeps
the real endpoints, bytes after the header go to the next protocol (also over TLS), and a sender that is not
trusted, sends no header, a bad one or a slow one is closed with a log line and no app call."""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import http_exchange, serve_in_thread
from tls_certs import ServerFiles, server_files

from bascule.listen.proxy_protocol import V2_SIGNATURE
from bascule.protocols.h1.connection import H1Connection

V1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 8443\r\n"
REQUEST = b"GET /x HTTP/1.1\r\nHost: inner\r\n\r\n"
calls: list[str] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    calls.append(scope["path"])
    tls = scope["extensions"].get("tls")
    body = json.dumps({"client": scope["client"], "server": scope["server"], "scheme": scope["scheme"],
                       "tls_version": None if tls is None else tls["tls_version"],
                       "cipher_suite": None if tls is None else tls["cipher_suite"],
                       "http_version": scope["http_version"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps([environ["REMOTE_ADDR"], environ["REMOTE_PORT"], environ["SERVER_NAME"],
                       environ["SERVER_PORT"], environ["wsgi.url_scheme"], environ.get("HTTPS")]).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v2(command: int = 0x21, tlvs: bytes = b"") -> bytes:
    body = bytes([203, 0, 113, 5, 198, 51, 100, 9]) + struct.pack("!HH", 51234, 443) + tlvs
    return V2_SIGNATURE + bytes([command, 0x11]) + struct.pack("!H", len(body)) + body


def proxied(**options: Any) -> Any:
    options.setdefault("bind", ("proxy+127.0.0.1:0",))
    return serve_in_thread(options.pop("app", app), port=8000, **options)


def exchange(port: int, data: bytes, **kwargs: Any) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            return http_exchange(sock, data, **kwargs)
        except ConnectionResetError:  # an abort: what the spec asks for, so the sender notices
            return b""


def body(out: bytes) -> Any:
    assert out.startswith(b"HTTP/1.1 200 "), out
    return json.loads(out.partition(b"\r\n\r\n")[2])


def test_v1_header_and_request_in_one_segment() -> None:
    with proxied() as srv:
        seen = body(exchange(srv.port, V1 + REQUEST))
    assert seen["client"] == ["192.0.2.1", 40000] and seen["server"] == ["198.51.100.2", 8443]
    assert seen["scheme"] == "http"


def test_v1_header_in_pieces_then_keep_alive_requests_all_get_its_endpoints() -> None:
    with proxied() as srv, socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        for byte in V1[:-1]:
            sock.sendall(bytes([byte]))
        sock.sendall(V1[-1:])
        for _ in range(2):
            assert body(http_exchange(sock, REQUEST))["client"] == ["192.0.2.1", 40000]


def test_v2_with_authority_ssl_and_unique_id() -> None:
    ssl_tlv = tlv(0x20, bytes([0x01]) + bytes(4) + tlv(0x21, b"TLSv1.3") + tlv(0x23, b"TLS_AES_128_GCM_SHA256"))
    header = v2(tlvs=tlv(0x02, b"shop.example") + ssl_tlv + tlv(0x05, b"req-42"))
    with proxied() as srv, socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        seen = body(http_exchange(sock, header + REQUEST))  # kept alive: the connection is still there
        assert srv.server is not None and srv.server.ctx is not None
        connections = [c for c in srv.server.ctx.connections if isinstance(c, H1Connection)]
        assert [c.proxy_header.unique_id for c in connections] == [b"req-42"]  # no request ids: kept here
    assert seen["client"] == ["203.0.113.5", 51234] and seen["server"] == ["shop.example", 443]
    assert seen["scheme"] == "https" and seen["tls_version"] == 0x0304


@pytest.mark.parametrize(("version", "cipher", "number"), [
    (b"TLSv1.3", b"TLS_AES_256_GCM_SHA384", 0x1302),
    (b"TLSv1.2", b"ECDHE-RSA-AES128-GCM-SHA256", 0xC02F),
    (b"TLSv1.2", b"MADE-UP-CIPHER", None),  # a name this OpenSSL does not know: no number to give
])
def test_v2_ssl_cipher_becomes_the_tls_extensions_cipher_suite(version: bytes, cipher: bytes,
                                                                number: int | None) -> None:
    ssl_tlv = tlv(0x20, bytes([0x01]) + bytes(4) + tlv(0x21, version) + tlv(0x23, cipher))
    with proxied() as srv:
        seen = body(exchange(srv.port, v2(tlvs=ssl_tlv) + REQUEST))
    assert seen["scheme"] == "https" and seen["cipher_suite"] == number


def test_v2_local_keeps_the_real_endpoints() -> None:
    with proxied() as srv:
        seen = body(exchange(srv.port, V2_SIGNATURE + bytes([0x20, 0x00, 0, 0]) + REQUEST))
    assert seen["client"][0] == "127.0.0.1" and seen["server"] == ["127.0.0.1", srv.port]


def test_http2_after_the_header_gets_its_endpoints() -> None:
    import h2.config
    import h2.connection
    import h2.events

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    client.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a")],
                        end_stream=True)
    data = b""
    with proxied() as srv, socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(V1 + client.data_to_send())
        done = False
        while not done:
            chunk = sock.recv(65536)
            assert chunk
            for event in client.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    data += event.data
                done = done or isinstance(event, h2.events.StreamEnded)
            sock.sendall(client.data_to_send())
    seen = json.loads(data)
    assert seen["http_version"] == "2" and seen["client"] == ["192.0.2.1", 40000]


def h2_answer(sock: socket.socket, client: Any, received: bytes = b"") -> Any:
    """The JSON body of stream 1, driving ``client`` (an h2 client connection) over ``sock``."""
    import h2.events

    data = b""
    done = False
    chunk = received
    while not done:
        for event in client.receive_data(chunk):
            if isinstance(event, h2.events.DataReceived):
                data += event.data
            done = done or (isinstance(event, h2.events.StreamEnded) and event.stream_id == 1)
        sock.sendall(client.data_to_send())
        if not done:
            chunk = sock.recv(65536)
            assert chunk
    return json.loads(data)


def test_http2_from_a_preface_in_pieces_gets_the_headers_endpoints() -> None:
    """HTTP/1.1 reads the start of the preface, then hands the connection to HTTP/2 (the upgrade registry):
    the endpoints go along."""
    import h2.config
    import h2.connection

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    client.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a")],
                        end_stream=True)
    opening = client.data_to_send()
    with proxied() as srv, socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(V1 + opening[:3])  # "PRI": HTTP/1.1's until the rest comes
        time.sleep(0.2)
        sock.sendall(opening[3:])
        seen = h2_answer(sock, client)
    assert seen["http_version"] == "2" and seen["client"] == ["192.0.2.1", 40000]
    assert seen["server"] == ["198.51.100.2", 8443]


def test_h2c_upgrade_gets_the_headers_endpoints() -> None:
    import h2.config
    import h2.connection

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    settings = client.initiate_upgrade_connection()
    with proxied() as srv, socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(V1 + b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n")
        early = b""
        while b"\r\n\r\n" not in early:
            chunk = sock.recv(65536)
            assert chunk
            early += chunk
        head, _, rest = early.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        seen = h2_answer(sock, client, rest)
    assert seen["http_version"] == "2" and seen["client"] == ["192.0.2.1", 40000]
    assert seen["server"] == ["198.51.100.2", 8443]


def test_wsgi_sees_the_headers_endpoints() -> None:
    with proxied(app=wsgi_app) as srv:
        out = exchange(srv.port, V1 + REQUEST)
    assert body(out) == ["192.0.2.1", "40000", "198.51.100.2", "8443", "http", None]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ServerFiles:
    return server_files(Path(tmp_path_factory.mktemp("certs")))


def test_the_header_comes_before_tls(certs: ServerFiles) -> None:
    with proxied(ssl_certfile=str(certs.cert), ssl_keyfile=str(certs.key)) as srv:
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        raw.sendall(V1)
        with certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            seen = body(http_exchange(sock, REQUEST))
    assert seen["client"] == ["192.0.2.1", 40000] and seen["scheme"] == "https" and seen["tls_version"] is not None


@pytest.mark.parametrize(("options", "data", "logged"), [
    ({"forwarded_allow_ips": "10.0.0.1"}, V1 + REQUEST, "this peer is not in --forwarded-allow-ips"),
    ({}, REQUEST, "no PROXY protocol header"),
    ({}, b"PROXY TCP4 192.0.2.1 198.51.100.2 040000 8443\r\n" + REQUEST, "PROXY v1 port '040000'"),
    ({}, v2(command=0x31) + REQUEST, "PROXY v2 header has version 3"),
])
def test_refused_senders_are_closed_without_an_app_call(caplog: pytest.LogCaptureFixture, options: dict[str, Any],
                                                        data: bytes, logged: str) -> None:
    calls.clear()
    with caplog.at_level(logging.WARNING, "bascule.error"), proxied(**options) as srv:
        out = exchange(srv.port, data, until_close=True)
    assert out == b"" and calls == []
    assert any(logged in record.getMessage() for record in caplog.records), caplog.text


def test_a_header_not_complete_within_the_deadline_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "bascule.error"), proxied() as srv:
        assert srv.server.ctx is not None
        srv.server.ctx.proxy_header_timeout = 0.5
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            start = time.monotonic()
            try:
                out = http_exchange(sock, V1[:10], until_close=True, timeout=5)
            except ConnectionResetError:
                out = b""
            elapsed = time.monotonic() - start
    assert out == b"" and 0.4 < elapsed < 3
    assert any("no complete PROXY protocol header within 0.5 s" in r.getMessage() for r in caplog.records)


def test_a_listener_without_the_prefix_reads_no_header() -> None:
    with serve_in_thread(app, bind=("127.0.0.1:0",), port=8000) as srv:
        out = exchange(srv.port, V1 + REQUEST, until_close=True)
    assert out.startswith(b"HTTP/1.1 400 ")  # "PROXY" is no HTTP method: never guessed
