"""Exchange.send_file on every wire, through ASGI http.response.pathsend and WSGI loop mode's file_wrapper.

Cleartext HTTP/1.1 sends with os.sendfile (counted); TLS HTTP/1.1 and HTTP/2 read pieces and send them under
flow control (a file larger than the windows and the transport's high-water mark). Starlette's FileResponse
uses pathsend when the scope advertises it; the bytes must be the file's, with Starlette's headers.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import serve_in_thread
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route
from tls_certs import server_files

import bascule.protocols.sendfile as sendfile_module

SIZE = 3 * 1024 * 1024 + 123


@pytest.fixture
def big(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(SIZE)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.sendfile

    def spy(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        calls.append(n)
        return n

    monkeypatch.setattr(sendfile_module.os, "sendfile", spy)
    return calls


def pathsend_app(path: Path) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.pathsend", "path": str(path)})

    return app


def test_cleartext_http1_uses_sendfile(big: tuple[Path, bytes], sendfile_calls: list[int]) -> None:
    path, data = big
    with serve_in_thread(pathsend_app(path)) as srv, httpx.Client() as client:
        reply = client.get(srv.url + "/")
        head = client.head(srv.url + "/")
        again = client.get(srv.url + "/")  # the same connection goes on after a sendfile response
    assert reply.status_code == 200 and reply.content == data
    assert reply.headers["content-length"] == str(SIZE)
    assert sum(sendfile_calls) == 2 * SIZE
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(SIZE)
    assert again.content == data


def test_tls_http1_sends_pieces(big: tuple[Path, bytes], sendfile_calls: list[int], tmp_path: Path) -> None:
    path, data = big
    files = server_files(tmp_path)
    with serve_in_thread(pathsend_app(path), ssl_certfile=str(files.cert), ssl_keyfile=str(files.key),
                         http2=False) as srv, httpx.Client(verify=files.client_context()) as client:
        reply = client.get(f"https://localhost:{srv.port}/")
    assert reply.status_code == 200 and reply.content == data
    assert sendfile_calls == []


def test_http2_sends_pieces_under_flow_control(big: tuple[Path, bytes], sendfile_calls: list[int]) -> None:
    path, data = big
    with serve_in_thread(pathsend_app(path)) as srv, httpx.Client(http1=False, http2=True) as client:
        replies = [client.get(srv.url + f"/{i}") for i in range(2)]
        head = client.head(srv.url + "/")
    assert all(r.http_version == "HTTP/2" and r.content == data for r in replies)
    assert head.content == b"" and head.headers["content-length"] == str(SIZE)
    assert sendfile_calls == []


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_client_gone_mid_file_closes_the_file(big: tuple[Path, bytes], http2: bool) -> None:
    path, _ = big
    with serve_in_thread(pathsend_app(path)) as srv:
        before = open_fds()
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            if http2:
                with httpx.Client(http1=False, http2=True) as client, client.stream("GET", srv.url + "/") as r:
                    next(r.iter_bytes())
            else:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        end = time.monotonic() + 5
        while open_fds() > before and time.monotonic() < end:
            time.sleep(0.05)
        assert open_fds() <= before
        assert httpx.get(srv.url + "/").status_code == 200  # still serving


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_starlette_file_response(big: tuple[Path, bytes], http2: bool, sendfile_calls: list[int]) -> None:
    path, data = big
    app = Starlette(routes=[Route("/f", lambda request: FileResponse(path, filename="big.bin"))])
    with serve_in_thread(app) as srv, httpx.Client(http1=not http2, http2=http2) as client:
        reply = client.get(srv.url + "/f")
    assert reply.content == data
    expected = FileResponse(path, filename="big.bin", stat_result=os.stat(path)).headers
    for name in ("content-length", "content-type", "etag", "last-modified", "accept-ranges", "content-disposition"):
        assert reply.headers[name] == expected[name]
    assert (sum(sendfile_calls) == SIZE) is not http2


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_wsgi_loop_mode_file_wrapper(big: tuple[Path, bytes], http2: bool, sendfile_calls: list[int]) -> None:
    path, data = big

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    with serve_in_thread(app, wsgi_mode="loop") as srv, httpx.Client(http1=not http2, http2=http2) as client:
        reply = client.get(srv.url + "/")
    assert reply.content == data and reply.headers["content-length"] == str(SIZE)
    assert (sum(sendfile_calls) == SIZE) is not http2


def test_reads_pieces_from_a_thread_when_not_cached(big: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """preadv(RWF_NOWAIT) saying the disk would be waited for: the piece is read on a worker thread."""
    import asyncio

    path, data = big

    def would_block(*_args: Any) -> int:
        raise BlockingIOError

    monkeypatch.setattr(sendfile_module.os, "preadv", would_block)

    async def go() -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            reader = sendfile_module.ChunkReader(asyncio.get_running_loop(), fd)
            return await reader.read(10, 100)
        finally:
            os.close(fd)

    assert asyncio.run(go()) == data[10:110]



def chunked_pathsend_app(path: Path) -> Any:
    """A body piece before the file, no Content-Length: the response is chunked (HTTP/1.1) or unframed (HTTP/2)."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"<", "more_body": True})
        await send({"type": "http.response.pathsend", "path": str(path)})

    return app


@pytest.mark.parametrize("wire", ["tls", "h2"])
def test_file_shrinking_mid_send_is_not_a_complete_response(big: tuple[Path, bytes], wire: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The file shrinks after its size was taken: the pieces path must end the response as cut short (as
    cleartext HTTP/1.1's sendfile does), never with a clean end the client takes for the whole file."""
    path, _ = big
    inode = path.stat().st_ino
    real_preadv, real_pread = os.preadv, os.pread
    shrunk: list[bool] = []

    def shrink_first(fd: int, offset: int) -> None:
        # the read functions are patched on the os module, not on ChunkReader: a compiled class's methods
        # cannot be replaced, and a module attribute is looked up at each call in both builds
        if offset == 0 and not shrunk and os.fstat(fd).st_ino == inode:
            shrunk.append(True)
            os.truncate(path, 1000)

    def preadv(fd: int, buffers: Any, offset: int, *flags: int) -> int:
        shrink_first(fd, offset)
        return real_preadv(fd, buffers, offset, *flags)

    def pread(fd: int, size: int, offset: int) -> bytes:
        shrink_first(fd, offset)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(sendfile_module.os, "preadv", preadv)
    monkeypatch.setattr(sendfile_module.os, "pread", pread)
    files = server_files(tmp_path)
    options: dict[str, Any] = ({"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key), "http2": False}
                               if wire == "tls" else {})
    with serve_in_thread(chunked_pathsend_app(path), **options) as srv:
        if wire == "tls":
            client = httpx.Client(verify=files.client_context())
            url = f"https://localhost:{srv.port}/"
        else:
            client = httpx.Client(http1=False, http2=True)
            url = srv.url + "/"
        with client, pytest.raises(httpx.HTTPError):
            client.get(url)


def test_set_cork_on_tcp_and_not_elsewhere() -> None:
    """TCP_CORK is set and cleared on the connection's socket itself, which stays open and usable (the socket
    object made around its descriptor is detached, never closed); an IPv6 socket works too; a Unix socket or
    a closed descriptor answers False instead of raising."""
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname()) as client:
        server, _ = listener.accept()
        with server:
            before = len(os.listdir("/proc/self/fd"))
            assert sendfile_module.set_cork(server.fileno(), True)
            assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1
            assert sendfile_module.set_cork(server.fileno(), False)
            assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
            assert len(os.listdir("/proc/self/fd")) == before
            client.sendall(b"x")  # both ends still work
            assert server.recv(1) == b"x"
    if socket.has_ipv6:
        try:
            listener6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        except OSError:
            listener6 = None
        if listener6 is not None:
            with listener6, socket.create_connection(listener6.getsockname()[:2]) as client6:
                server6, _ = listener6.accept()
                with server6:
                    assert sendfile_module.set_cork(server6.fileno(), True)
                    assert server6.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1
                    client6.sendall(b"y")
                    assert server6.recv(1) == b"y"
    a, b = socket.socketpair()
    with a, b:
        assert not sendfile_module.set_cork(a.fileno(), True)
        a.sendall(b"z")  # the descriptor was not closed by the failed attempt
        assert b.recv(1) == b"z"
    assert not sendfile_module.set_cork(10_000, True)

