"""--compress end to end: real servers on loopback, ASGI and WSGI (threads and loop), HTTP/1.1 and HTTP/2,
read by httpx (which decodes gzip, and br / zstd when their libraries are installed) and by raw sockets
where the wire bytes matter. Starlette's GZipMiddleware is the peer for the same app's output."""

from __future__ import annotations

import socket
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bascule.compress import decoders

PAGE = b"<!doctype html><p>" + b"compress me please " * 200 + b"</p>\n"
GZ = {"accept-encoding": "gzip"}


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"etag", b'"v1"')]
    status = 200
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/small":
        body = b"<p>tiny</p>"
    elif path == "/png":
        headers = [(b"content-type", b"image/png")]
        body = PAGE
    elif path == "/range":
        status = 206
        headers.append((b"content-range", b"bytes 0-%d/99999" % (len(PAGE) - 1)))
        body = PAGE
    elif path == "/no-transform":
        headers.append((b"cache-control", b"no-transform"))
        body = PAGE
    elif path == "/304":
        status = 304
        body = b""
    else:
        headers.append((b"content-length", b"%d" % len(PAGE)))
        body = PAGE
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one ", b"two ", b"three"])
    if environ["PATH_INFO"] == "/small":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"tiny"]  # one item: whole, so its size is known
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(PAGE))),
                              ("ETag", '"w1"')])
    return iter([PAGE])


def raw_get(port: int, path: str, accept: str = "gzip", method: str = "GET") -> tuple[bytes, bytes]:
    """One HTTP/1.1 request on a raw socket: (head, body bytes as sent, chunked framing included)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nhost: x\r\naccept-encoding: {accept}\r\n"
                     f"connection: close\r\n\r\n".encode())
        data = b""
        end = time.monotonic() + 5
        while time.monotonic() < end:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    return head.lower(), body


def test_off_by_default_nothing_changes(serve: Any) -> None:
    with serve(asgi_app, lifespan="off") as srv:
        response = httpx.get(srv.url, headers=GZ)
    assert "content-encoding" not in response.headers and "vary" not in response.headers
    assert response.headers["etag"] == '"v1"' and response.headers["content-length"] == str(len(PAGE))


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_asgi_responses(serve: Any, http2: bool) -> None:
    with serve(asgi_app, lifespan="off", compress=True) as srv, \
            httpx.Client(http1=not http2, http2=http2, base_url=srv.url) as client:
        page = client.get("/", headers=GZ)
        assert page.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert page.content == PAGE and page.headers["content-encoding"] == "gzip"
        assert page.headers["vary"] == "Accept-Encoding" and page.headers["etag"] == 'W/"v1"'
        assert int(page.headers.get("content-length", 0)) != len(PAGE)
        stream = client.get("/stream", headers=GZ)
        assert stream.headers["content-encoding"] == "gzip"
        assert stream.content == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        for path in ("/small", "/png", "/range", "/no-transform"):
            response = client.get(path, headers=GZ)
            assert "content-encoding" not in response.headers, path
        assert client.get("/small", headers=GZ).headers["vary"] == "Accept-Encoding"
        assert client.get("/304", headers=GZ).status_code == 304
        plain = client.get("/", headers={"accept-encoding": "identity"})
        assert plain.content == PAGE and plain.headers["content-length"] == str(len(PAGE))
        assert plain.headers["etag"] == '"v1"' and plain.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize("coding", sorted(decoders()))
def test_every_available_coding_on_the_wire(serve: Any, coding: str) -> None:
    with serve(asgi_app, lifespan="off", compress=True) as srv:
        head, body = raw_get(srv.port, "/", accept=coding)
    assert f"content-encoding: {coding}".encode() in head
    assert b"content-length: %d" % len(body) in head  # whole in one message: the exchange counts it
    assert decoders()[coding](body) == PAGE


def test_a_stream_is_chunked_and_each_chunk_decodes_as_it_comes(serve: Any) -> None:
    with serve(asgi_app, lifespan="off", compress=True) as srv:
        head, body = raw_get(srv.port, "/stream")
    assert b"transfer-encoding: chunked" in head and b"content-length" not in head
    decoder = zlib.decompressobj(47)
    seen = []
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        chunk, body = body[:size], body[size + 2:]
        if size:
            seen.append(decoder.decompress(chunk))
    assert seen[:3] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]  # each event whole on its own
    assert decoder.eof


def test_head_gets_the_get_fields_and_no_body(serve: Any) -> None:
    with serve(asgi_app, lifespan="off", compress=True) as srv:
        get_head, _ = raw_get(srv.port, "/")
        head_head, head_body = raw_get(srv.port, "/", method="HEAD")
    assert head_body == b""
    assert b"content-encoding: gzip" in head_head and b"vary: accept-encoding" in head_head
    assert b'etag: w/"v1"' in head_head

    def length(head: bytes) -> bytes:
        return next(line for line in head.split(b"\r\n") if line.startswith(b"content-length"))
    assert length(get_head) == length(head_head)


def test_a_head_answered_without_its_body_claims_no_length(serve: Any) -> None:
    """An app that answers HEAD with the fields only (Content-Length declared, no body): the compressed length
    is unknown, so none is sent (not the identity length, not an empty gzip stream's)."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html"), (b"content-length", b"%d" % len(PAGE))]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else PAGE})

    with serve(app, lifespan="off", compress=True) as srv:
        head, body = raw_get(srv.port, "/", method="HEAD")
    assert body == b"" and b"content-encoding: gzip" in head and b"content-length" not in head


@pytest.mark.parametrize("mode", ["threads", "loop"])
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_wsgi_responses(serve: Any, mode: str, http2: bool) -> None:
    with serve(wsgi_app, interface="wsgi", wsgi_mode=mode, compress=True) as srv, \
            httpx.Client(http1=not http2, http2=http2, base_url=srv.url) as client:
        page = client.get("/", headers=GZ)
        assert page.content == PAGE and page.headers["content-encoding"] == "gzip"
        assert page.headers["etag"] == 'W/"w1"' and page.headers["vary"] == "Accept-Encoding"
        stream = client.get("/stream", headers=GZ)
        assert stream.content == b"one two three" and stream.headers["content-encoding"] == "gzip"
        small = client.get("/small", headers=GZ)
        assert small.content == b"tiny" and "content-encoding" not in small.headers


def test_the_same_bytes_and_fields_as_starlettes_gzip_middleware(serve: Any) -> None:
    from starlette.applications import Starlette
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.decode())

    plain = Starlette(routes=[Route("/", page)])
    peer = GZipMiddleware(Starlette(routes=[Route("/", page)]))
    with serve(plain, lifespan="off", compress=True) as ours, serve(peer, lifespan="off") as theirs:
        mine = httpx.get(ours.url, headers=GZ)
        other = httpx.get(theirs.url, headers=GZ)
    assert mine.content == other.content == PAGE
    for name in ("content-encoding", "vary"):
        assert mine.headers[name].lower() == other.headers[name].lower()


def test_a_pathsend_after_the_start_is_sent_as_it_is(serve: Any, tmp_path: Any) -> None:
    path = tmp_path / "page.html"
    path.write_bytes(PAGE)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        if scope["path"] == "/after-body":
            await send({"type": "http.response.body", "body": b"<!-- first -->", "more_body": True})
        await send({"type": "http.response.pathsend", "path": str(path)})

    with serve(app, lifespan="off", compress=True) as srv:
        whole = httpx.get(srv.url + "/", headers=GZ)
        mixed = httpx.get(srv.url + "/after-body", headers=GZ)
    assert whole.content == PAGE and "content-encoding" not in whole.headers
    assert mixed.headers["content-encoding"] == "gzip" and mixed.content == b"<!-- first -->" + PAGE


def test_zerocopysend_alone_goes_as_it_is_and_inside_a_compressed_stream_is_compressed(serve: Any,
                                                                                      tmp_path: Any) -> None:
    path = tmp_path / "page.html"
    path.write_bytes(PAGE)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        with open(path, "rb") as file:
            if scope["path"] == "/mixed":
                await send({"type": "http.response.body", "body": b"<!-- a -->", "more_body": True})
                await send({"type": "http.response.zerocopysend", "file": file, "offset": 0, "count": 100,
                            "more_body": True})
                await send({"type": "http.response.body", "body": b"<!-- b -->", "more_body": True})
                await send({"type": "http.response.zerocopysend", "file": file, "offset": 100})
            else:
                await send({"type": "http.response.zerocopysend", "file": file})

    with serve(app, lifespan="off", compress=True) as srv:
        whole = httpx.get(srv.url + "/", headers=GZ)
        mixed = httpx.get(srv.url + "/mixed", headers=GZ)
    assert whole.content == PAGE and "content-encoding" not in whole.headers
    assert mixed.headers["content-encoding"] == "gzip"
    assert mixed.content == b"<!-- a -->" + PAGE[:100] + b"<!-- b -->" + PAGE[100:]


def test_an_http10_client_gets_a_compressed_stream_ended_by_the_close(serve: Any) -> None:
    with serve(asgi_app, lifespan="off", compress=True) as srv, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b"GET /stream HTTP/1.0\r\nhost: x\r\naccept-encoding: gzip\r\n\r\n")
        data = b""
        end = time.monotonic() + 5
        while time.monotonic() < end:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head.lower() and b"transfer-encoding" not in head.lower()
    assert zlib.decompress(body, 47) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
