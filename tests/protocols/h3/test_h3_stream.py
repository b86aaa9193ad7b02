"""HTTP/3 requests end to end: aioquic's client against a real QuicServer with ASGI and WSGI apps.

The server is the real thing (QuicServer on loopback UDP, a ServerContext, the AppTable and its gateways);
the client is aioquic's, an independent HTTP/3 implementation. Here: requests and responses, bodies both ways
under flow control, streaming, trailers, 103, responses without content, WSGI, the scope, the limits.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Any

from h3_support import CHAINS, certs, h3_client, h3_server, run, until
from tls_certs import client_cert

from bascule.protocols.h3.connection import H3Conn

Scope = dict[str, Any]
SCOPES: list[Scope] = []


async def read_all(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    SCOPES.append(scope)
    path = scope["path"]
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
    if path == "/stream":
        await send(start)
        for i in range(5):
            await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/trailers":
        await send({**start, "trailers": True})
        await send({"type": "http.response.body", "body": b"data"})
        await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")]})
    elif path == "/hints":
        await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload; as=style"]})
        await send(start)
        await send({"type": "http.response.body", "body": b"ok"})
    elif path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        headers = [(b"etag", b'"x"')] + ([(b"content-length", b"3")] if status == 304 else [])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if status in (204, 304) else b"abc"})
    elif path == "/echo":
        body = await read_all(receive)
        await send(start)
        await send({"type": "http.response.body", "body": body})
    elif path == "/big":
        await send(start)
        chunk = b"z" * 65536
        for _ in range(32):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/length-lie":
        await send({**start, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        await send({"type": "http.response.body", "body": b"678901234"})
    else:
        body = await read_all(receive)
        await send(start)
        await send({"type": "http.response.body",
                    "body": b"%s %s %s %d" % (scope["method"].encode(), path.encode(),
                                              scope["http_version"].encode(), len(body))})


def test_get_and_post() -> None:
    async def main() -> None:
        async with h3_server(app) as srv, h3_client(srv.port) as client:
            reply = await client.request("/hi")
            assert reply.status == 200
            assert reply.body == b"GET /hi 3 0"
            assert reply.header(b"content-length") == b"11"
            assert reply.header(b"server") == b"bascule" and reply.header(b"date")
            reply = await client.request("/up", "POST", body=b"x" * 5000)
            assert reply.body == b"POST /up 3 5000"
    run(main())


def test_scope_has_http_version_3_and_the_tls_extension() -> None:
    SCOPES.clear()

    async def main() -> None:
        async with h3_server(app) as srv, h3_client(srv.port) as client:
            await client.request("/scope?a=1")
    run(main())
    scope = SCOPES[-1]
    assert scope["http_version"] == "3"
    assert scope["scheme"] == "https"
    assert scope["query_string"] == b"a=1"
    assert scope["client"][0] == "127.0.0.1" and scope["server"][0] == "127.0.0.1"
    tls = scope["extensions"]["tls"]
    assert tls["tls_version"] == 0x0304 and tls["cipher_suite"] in (0x1301, 0x1302, 0x1303)
    assert (b"host", b"127.0.0.1") in scope["headers"]


def test_large_post_is_flow_controlled_by_the_apps_reading() -> None:
    """A 3 MB upload to an app that reads only after a pause: the server holds at most about one stream
    window of it meanwhile (the client waits for MAX_STREAM_DATA), and the whole body arrives intact."""
    window = 64 * 1024
    gate = asyncio.Event()
    held: list[int] = []

    async def slow_reader(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await gate.wait()
        body = await read_all(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d %s" % (len(body), body[-5:])})

    async def main() -> None:
        async with h3_server(slow_reader, h2_initial_window_size=window) as srv, h3_client(srv.port) as client:
            payload = os.urandom(3 * 1024 * 1024 - 5) + b"tail!"
            sid = client.start("/up", "POST", end=False)
            client.send(sid, payload, True)
            await asyncio.sleep(0.5)
            conn = next(c for c in srv.ctx.connections if isinstance(c, H3Conn))
            held.append(conn._held(sid))
            gate.set()
            reply = await client.wait(sid, 20)
            assert reply.body == b"%d tail!" % len(payload)
    run(main())
    assert 0 < held[0] <= 2 * window


def test_streaming_response_trailers_and_early_hints() -> None:
    async def main() -> None:
        async with h3_server(app) as srv, h3_client(srv.port) as client:
            reply = await client.request("/stream")
            assert reply.body == b"part0;part1;part2;part3;part4;" and reply.header(b"content-length") is None
            reply = await client.request("/trailers")
            assert reply.body == b"data" and reply.trailers == [(b"grpc-status", b"0")]
            reply = await client.request("/hints")
            assert reply.informational == [103] and reply.status == 200 and reply.body == b"ok"
    run(main())


def test_responses_without_content() -> None:
    async def main() -> None:
        async with h3_server(app) as srv, h3_client(srv.port) as client:
            reply = await client.request("/status/200", "HEAD")
            assert reply.status == 200 and reply.body == b"" and reply.header(b"content-length") == b"3"
            reply = await client.request("/status/204")
            assert reply.status == 204 and reply.body == b"" and reply.header(b"content-length") is None
            reply = await client.request("/status/304")
            assert reply.status == 304 and reply.body == b"" and reply.header(b"content-length") == b"3"
    run(main())


def test_a_response_longer_than_its_length_is_reset() -> None:
    async def main() -> None:
        async with h3_server(app) as srv, h3_client(srv.port) as client:
            reply = await client.request("/length-lie")
            assert reply.reset == 0x102 and not reply.ended
            assert (await client.request("/after")).status == 200  # the connection goes on
    run(main())


def test_wsgi_app() -> None:
    def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [environ["SERVER_PROTOCOL"].encode(), b" ", environ["wsgi.url_scheme"].encode(), b" ", body]

    async def main() -> None:
        async with h3_server(wsgi, interface="wsgi") as srv, h3_client(srv.port) as client:
            reply = await client.request("/w", "POST", body=b"payload")
            assert reply.status == 201
            assert reply.body == b"HTTP/3 https payload"
    run(main())


def test_echo_of_a_large_body_both_ways() -> None:
    async def main() -> None:
        async with h3_server(app) as srv, h3_client(srv.port) as client:
            payload = os.urandom(1024 * 1024)
            reply = await client.request("/echo", "POST", body=payload, timeout=20)
            assert reply.body == payload
            reply = await client.request("/big", timeout=20)
            assert len(reply.body) == 32 * 65536
    run(main())


def test_many_requests_on_one_connection() -> None:
    async def main() -> None:
        async with h3_server(app) as srv, h3_client(srv.port) as client:
            sids = [client.start(f"/n{i}") for i in range(50)]
            replies = [await client.wait(sid) for sid in sids]
            assert [r.body for r in replies] == [b"GET /n%d 3 0" % i for i in range(50)]
            await until(lambda: srv.ctx.in_flight == 0)
    run(main())


class Observer:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[tuple[str, int, int, bool, bool]] = []

    def request_started(self, ex: Any) -> None:
        self.started.append(ex.raw_path.decode())

    def request_finished(self, ex: Any) -> None:
        self.finished.append((ex.raw_path.decode(), ex.status, ex.sent, ex.dropped, ex.head_time >= ex.perf_start > 0))


def test_observers_and_the_request_id_echo() -> None:
    observer = Observer()

    async def main() -> None:
        async with h3_server(app, request_id="on") as srv, h3_client(srv.port) as client:
            srv.ctx.observe(observer)
            reply = await client.request("/hi")
            rid = reply.header(b"x-request-id")
            assert rid and len(rid) >= 16
            reply = await client.request("/trace", headers=[(b"x-request-id", b"abc-123")])  # loopback: trusted
            assert reply.header(b"x-request-id") == b"abc-123"
            await until(lambda: len(observer.finished) == 2)
    run(main())
    assert observer.started == ["/hi", "/trace"]
    assert observer.finished == [("/hi", 200, 11, False, True), ("/trace", 200, 14, False, True)]


def test_pathsend_sends_a_file_in_pieces(tmp_path: Any) -> None:
    data = os.urandom(300_000)
    (tmp_path / "f.bin").write_bytes(data)

    async def send_path(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(data))]})
        await send({"type": "http.response.pathsend", "path": str(tmp_path / "f.bin")})

    async def main() -> None:
        async with h3_server(send_path) as srv, h3_client(srv.port) as client:
            reply = await client.request("/file", timeout=20)
            assert reply.status == 200 and reply.body == data
    run(main())


def test_expect_100_continue_and_the_request_timeout() -> None:
    async def slow(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            await asyncio.sleep(5)
        body = await read_all(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def main() -> None:
        async with h3_server(slow, timeout_request=0.5) as srv, h3_client(srv.port) as client:
            sid = client.start("/up", "POST", [(b"expect", b"100-continue")], end=False)
            await until(lambda: client.replies[sid].informational == [100])
            client.send(sid, b"body", True)
            assert (await client.wait(sid)).body == b"body"
            reply = await client.request("/slow")
            assert reply.status == 504
    run(main())


def test_aioquic_asks_no_client_certificate(tmp_path: Path) -> None:
    """A limit to know of, pinned here: aioquic's server never sends a CertificateRequest (and would not check
    a client chain against a CA if it did), so the tls extension's chain is empty over HTTP/3 even for a
    client that has a certificate, and --ssl-cert-reqs cannot be enforced by QUIC (listen/quic.py must refuse
    the combination). Should aioquic learn it, this test fails and the chain will flow (H3Conn passes it)."""
    _, _, ca = certs()
    alice = client_cert(ca)
    alice.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "alice.pem"))

    def server_side(configuration: Any) -> None:
        configuration.verify_mode = ssl.CERT_REQUIRED

    def client_side(configuration: Any) -> None:
        configuration.load_cert_chain(tmp_path / "alice.pem")

    CHAINS.clear()

    async def main() -> None:
        async with h3_server(app, configure=server_side) as srv, \
                h3_client(srv.port, configure=client_side) as client:
            assert (await client.request("/tls")).status == 200
    run(main())
    assert CHAINS == [[]]


def test_wsgi_streams_a_large_body_under_flow_control() -> None:
    """A WSGI generator's items leave under the stream's send bound: the worker thread waits (writable_hook)
    while the client acknowledges, and the whole body arrives in order."""
    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (bytes([i % 251]) * 65536 for i in range(64))  # 4 MB

    async def main() -> None:
        async with h3_server(wsgi, interface="wsgi") as srv, h3_client(srv.port) as client:
            reply = await client.request("/big", timeout=30)
            assert reply.status == 200 and len(reply.body) == 64 * 65536
            assert reply.body == b"".join(bytes([i % 251]) * 65536 for i in range(64))
    run(main(), timeout=60)
