"""103 Early Hints side by side with the servers that define the messages: the same apps on bascule, gunicorn
(its ASGI worker's ``http.response.informational``, its ``wsgi.early_hints``) and hypercorn (asgiref's
``http.response.early_hint``, which hypercorn sends on HTTP/2 only). Each pair must put the same 1xx status
and fields before the same final response; names compared case-insensitively (gunicorn keeps a WSGI app's
``Link``, bascule lowercases as HTTP/2 must)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import free_port
from it_support import clean_env, spawn, spawn_gunicorn, stop, tcp_ready, wait_for

CSS = "</app.css>; rel=preload; as=style"

APP = f'''
async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/informational":
        await send({{"type": "http.response.informational", "status": 103, "headers": [(b"link", b"{CSS}")]}})
    else:
        await send({{"type": "http.response.early_hint", "links": [b"{CSS}"]}})
    await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}})
    await send({{"type": "http.response.body", "body": b"ok"}})


def wsgi(environ, start_response):
    environ["wsgi.early_hints"]([("Link", "{CSS}")])
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
'''

Interim = list[tuple[int, list[tuple[str, str]]]]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "hints_app.py").write_text(APP)
    return tmp_path


@contextlib.contextmanager
def bascule(app_dir: Path, app: str, *flags: str) -> Iterator[int]:
    port = free_port()
    with spawn([app, "--port", str(port), "--no-access-log", *flags], cwd=app_dir, log=app_dir / "bascule.log",
               ready=tcp_ready(port)):
        yield port


@contextlib.contextmanager
def hypercorn(app_dir: Path) -> Iterator[int]:
    pytest.importorskip("hypercorn")
    port = free_port()
    with open(app_dir / "hypercorn.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hypercorn", "hints_app:asgi", "-b", f"127.0.0.1:{port}"],
                                cwd=app_dir, env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        assert wait_for(lambda: proc.poll() is not None or tcp_ready(port)(), 15) and proc.poll() is None, \
            (app_dir / "hypercorn.log").read_text(errors="replace")
        yield port
    finally:
        stop(proc)


@contextlib.contextmanager
def gunicorn(app_dir: Path, app: str, *flags: str) -> Iterator[int]:
    pytest.importorskip("gunicorn")
    port = free_port()
    with spawn_gunicorn(app, f"127.0.0.1:{port}", ready=tcp_ready(port), cwd=app_dir, log=app_dir / "gunicorn.log",
                        flags=flags):
        yield port


def http1(port: int, path: str = "/", version: str = "1.1") -> tuple[Interim, int, bytes]:
    """(each 1xx as (status, fields)), the final status, the body) from raw HTTP/1.x bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    interim: Interim = []
    while True:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
        if status >= 200:
            return interim, status, data
        interim.append((status, fields))


def http2(port: int, path: str = "/") -> tuple[Interim, int, bytes]:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="latin-1"))
    conn.initiate_connection()
    interim: Interim = []
    status, body, ended = 0, b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "x")],
                          end_stream=True)
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + 5
        while not ended and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.InformationalResponseReceived):
                    fields = [(str(n), str(v)) for n, v in ev.headers]
                    interim.append((int(fields[0][1]), fields[1:]))
                elif isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
    return interim, status, body


def links(interim: Interim) -> list[tuple[int, list[str]]]:
    """The 1xx statuses and their Link values (a server may add its own date/server fields to a 103)."""
    return [(status, [v for n, v in fields if n == "link"]) for status, fields in interim]


HINTED = [(103, [CSS])]


def test_early_hint_over_http2_as_hypercorn_sends_it(app_dir: Path) -> None:
    with hypercorn(app_dir) as port:
        theirs = http2(port)
    with bascule(app_dir, "hints_app:asgi") as port:
        ours = http2(port)
    assert links(theirs[0]) == links(ours[0]) == HINTED
    assert theirs[1:] == ours[1:] == (200, b"ok")


def test_informational_over_http11_as_gunicorn_sends_it(app_dir: Path) -> None:
    with gunicorn(app_dir, "hints_app:asgi", "--worker-class", "asgi") as port:
        theirs = [http1(port, "/informational"), http1(port, "/informational", "1.0")]
    with bascule(app_dir, "hints_app:asgi") as port:
        ours = [http1(port, "/informational"), http1(port, "/informational", "1.0"), http1(port)]
    assert theirs[0][0] == ours[0][0] == [(103, [("link", CSS)])]  # the whole 103: status and every field
    assert theirs[1][0] == ours[1][0] == []  # never to HTTP/1.0
    assert ours[2][0] == ours[0][0]  # asgiref's message makes the same 103 (gunicorn does not take it)
    assert [r[1:] for r in theirs] == [r[1:] for r in ours[:2]] == [(200, b"ok")] * 2


@pytest.mark.parametrize("mode", ["threads", "loop"])
def test_wsgi_early_hints_as_gunicorn_sends_them(app_dir: Path, mode: str) -> None:
    with gunicorn(app_dir, "hints_app:wsgi") as port:
        theirs = [http1(port), http1(port, version="1.0")]
    with bascule(app_dir, "hints_app:wsgi", "--interface", "wsgi", "--wsgi-mode", mode) as port:
        ours = [http1(port), http1(port, version="1.0")]
        ours_h2 = http2(port)
    assert theirs[0][0] == ours[0][0] == [(103, [("link", CSS)])]
    assert theirs[1][0] == ours[1][0] == []
    assert [r[1:] for r in theirs] == [r[1:] for r in ours] == [(200, b"ok")] * 2
    assert links(ours_h2[0]) == HINTED and ours_h2[1:] == (200, b"ok")
