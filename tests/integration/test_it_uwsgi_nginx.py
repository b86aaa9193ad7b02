"""bascule behind a real nginx over uwsgi_pass (issue 14), with the stock /etc/nginx/uwsgi_params.

The test starts its own nginx (Debian's package; .ci/run installs it) in a temporary directory on loopback:
one process (``master_process off``, so nothing switches users or writes outside the directory), the
browser's side spoken with httpx. Behind it, bascule as a real process with ``--bind uwsgi://``, serving a
Flask app and a FastAPI app: the path with ``%2F`` and UTF-8, the query, the client address the app sees
(nginx's ``$remote_addr``), a POST body, a large streamed response. uWSGI itself (PyPI ``pyuwsgi``), when
installed, serves the same Flask app behind the same nginx, and the two must agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from it_support import APPS, can_connect, clean_env, spawn, stop, tcp_ready, wait_for

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
UWSGI_PARAMS = Path("/etc/nginx/uwsgi_params")
pytestmark = pytest.mark.skipif(NGINX is None or not UWSGI_PARAMS.exists(),
                                reason="nginx is not installed (apt-get install nginx)")

APPS_BY_KIND = {"flask": "it_uwsgi_apps:flask_app", "fastapi": "it_uwsgi_apps:fastapi_app"}
MIB = 1024 * 1024


@contextlib.contextmanager
def nginx(tmp: Path, upstream: str) -> Iterator[str]:
    """nginx on a free loopback port, passing everything to ``upstream`` over uwsgi; yields its base URL."""
    assert NGINX is not None
    port = free_port()
    root = tmp / "nginx"
    root.mkdir()
    temp = " ".join(f"{kind}_temp_path {root}/{kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
    (root / "nginx.conf").write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    {temp}
    client_max_body_size 64m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include {UWSGI_PARAMS};
            uwsgi_pass {upstream};
        }}
    }}
}}
""")
    log = root / "stdout.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_for(lambda: proc.poll() is not None or tcp_ready(port)(), 10) or proc.poll() is not None:
            raise AssertionError(f"nginx did not start: {log.read_text()} {(root / 'error.log').read_text()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextlib.contextmanager
def bascule_uwsgi(tmp: Path, app: str, where: str | None = None) -> Iterator[str]:
    """bascule serving ``app`` on a uwsgi listener; yields nginx's name for it (``uwsgi_pass``'s argument)."""
    if where is None:
        port = free_port()
        bind, upstream, ready = f"uwsgi://127.0.0.1:{port}", f"127.0.0.1:{port}", tcp_ready(port)
    else:
        bind, upstream = f"uwsgi://unix:{where}", f"unix:{where}"

        def ready() -> bool:
            return os.path.exists(where) and can_connect(socket.AF_UNIX, where)
    with spawn([app, "--bind", bind, "--no-access-log"], log=tmp / "bascule.log", ready=ready):
        yield upstream


@pytest.fixture(params=sorted(APPS_BY_KIND))
def behind_nginx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    kind = request.param
    with bascule_uwsgi(tmp_path, APPS_BY_KIND[kind]) as upstream, nginx(tmp_path, upstream) as url:
        yield kind, url


def test_path_query_and_client(behind_nginx: tuple[str, str]) -> None:
    kind, url = behind_nginx
    reply = httpx.get(url + "/echo/a%2Fb/caf%C3%A9?x=1&y=%2F&z=%C3%A9")
    assert reply.status_code == 200, reply.text
    seen = reply.json()
    assert seen["path"] == "/echo/a/b/café" and seen["query"] == "x=1&y=%2F&z=%C3%A9"
    assert seen["args"] == {"x": "1", "y": "/", "z": "é"}
    assert seen["client"] == "127.0.0.1" and seen["scheme"] == "http" and seen["method"] == "GET"
    assert seen["host"] == "127.0.0.1"  # the stock params' HTTP_HOST ($host), not the client's header beside it
    if kind == "fastapi":
        assert seen["raw_path"] == "/echo/a%2Fb/caf%C3%A9"  # never decoded: %2F stays apart from /


def test_post_body(behind_nginx: tuple[str, str]) -> None:
    _, url = behind_nginx
    body = os.urandom(5 * MIB + 17)
    reply = httpx.post(url + "/upload", content=body, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    empty = httpx.post(url + "/upload", content=b"")
    assert empty.json()["size"] == 0


def test_large_streamed_response(behind_nginx: tuple[str, str]) -> None:
    _, url = behind_nginx
    with httpx.stream("GET", url + "/big?n=24", timeout=30) as reply:
        data = b"".join(reply.iter_bytes())
    assert reply.status_code == 200
    assert len(data) == 24 * MIB
    assert all(data[i * MIB:i * MIB + 8] == b"%08d" % i for i in range(24))


def test_unix_socket_upstream(tmp_path: Path) -> None:
    where = str(tmp_path / "app.sock")
    with bascule_uwsgi(tmp_path, APPS_BY_KIND["fastapi"], where) as upstream, nginx(tmp_path, upstream) as url:
        seen = httpx.get(url + "/echo/u%2Fv?q=1").json()
    assert seen["raw_path"] == "/echo/u%2Fv" and seen["client"] == "127.0.0.1" and seen["query"] == "q=1"


def uwsgi_binary() -> str | None:
    """pyuwsgi's ``uwsgi`` beside this Python (its venv), else one on PATH."""
    return shutil.which("uwsgi", path=os.path.dirname(sys.executable)) or shutil.which("uwsgi")


@pytest.mark.skipif(uwsgi_binary() is None, reason="uWSGI (PyPI pyuwsgi) is not installed")
def test_agrees_with_uwsgi(tmp_path: Path) -> None:
    """The same Flask app behind the same nginx, served by uWSGI and by bascule, sees the same request."""
    binary = uwsgi_binary()
    assert binary is not None
    port = free_port()
    target = "/echo/a%2Fb/caf%C3%A9?x=1&y=%2F"
    body = os.urandom(MIB + 3)
    log = tmp_path / "uwsgi.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "--socket", f"127.0.0.1:{port}", "--module", APPS_BY_KIND["flask"],
                                 "--chdir", str(APPS), "--processes", "1", "--disable-logging"],
                                cwd=APPS, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        assert wait_for(lambda: proc.poll() is not None or tcp_ready(port)(), 15) and proc.poll() is None, \
            log.read_text()
        with nginx(tmp_path, f"127.0.0.1:{port}") as url:
            theirs = httpx.get(url + target).json(), httpx.post(url + "/upload", content=body).json()
    finally:
        stop(proc)
    (tmp_path / "nginx").rename(tmp_path / "nginx-uwsgi")
    with bascule_uwsgi(tmp_path, APPS_BY_KIND["flask"]) as upstream, nginx(tmp_path, upstream) as url:
        ours = httpx.get(url + target).json(), httpx.post(url + "/upload", content=body).json()
    assert ours == theirs
    assert ours[0]["client"] == "127.0.0.1" and ours[0]["path"] == "/echo/a/b/café"
