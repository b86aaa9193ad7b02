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
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from it_support import tcp_ready
from nginx_support import PARAMS_DIR, bascule, have_nginx, server, uwsgi_binary, uwsgi_server
from nginx_support import nginx as nginx_with

pytestmark = pytest.mark.skipif(not have_nginx("uwsgi_params"), reason="nginx is not installed (apt-get install nginx)")

APPS_BY_KIND = {"flask": "it_uwsgi_apps:flask_app", "fastapi": "it_uwsgi_apps:fastapi_app"}
MIB = 1024 * 1024


@contextlib.contextmanager
def nginx(tmp: Path, upstream: str, *extra: str) -> Iterator[str]:
    """nginx on a free loopback port, passing everything to ``upstream`` over uwsgi (after the ``extra``
    directives); yields its base URL."""
    port = free_port()
    block = server(port, " ".join((f"include {PARAMS_DIR / 'uwsgi_params'};", *extra, f"uwsgi_pass {upstream};")))
    with nginx_with(tmp / "nginx", block, [port]):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def bascule_uwsgi(tmp: Path, app: str, where: str | None = None) -> Iterator[str]:
    """bascule serving ``app`` on a uwsgi listener; yields nginx's name for it (``uwsgi_pass``'s argument)."""
    upstream = f"127.0.0.1:{free_port()}" if where is None else f"unix:{where}"
    with bascule(tmp / "bascule.log", app, [f"uwsgi://{upstream}"], "--no-access-log"):
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


@pytest.mark.parametrize("kind", sorted(APPS_BY_KIND))
def test_deployment_variable(tmp_path: Path, kind: str) -> None:
    """A deployment's own ``uwsgi_param APP_ENV prod`` reaches the WSGI environ (from a trusted peer) as
    ``APP_ENV``, never a key of the ASGI scope; the stock params' SCRIPT_NAME (none) leaves the mount point
    empty."""
    with bascule_uwsgi(tmp_path, APPS_BY_KIND[kind]) as upstream, \
            nginx(tmp_path, upstream, "uwsgi_param APP_ENV prod;") as url:
        if kind == "flask":
            seen = httpx.get(url + "/echo/a%2Fb", headers={"X-Show-Environ": "1"}).json()
            assert seen["APP_ENV"] == "prod" and seen["SCRIPT_NAME"] == "" and seen["PATH_INFO"] == "/echo/a/b"
        else:
            seen = httpx.get(url + "/scope/a%2Fb").json()
            assert "APP_ENV" not in seen["keys"] and seen["root_path"] == "" and seen["raw_path"] == "/scope/a%2Fb"


@pytest.mark.skipif(uwsgi_binary() is None, reason="uWSGI (PyPI pyuwsgi) is not installed")
def test_agrees_with_uwsgi(tmp_path: Path) -> None:
    """The same Flask app behind the same nginx, served by uWSGI and by bascule, sees the same request."""
    port = free_port()
    target = "/echo/a%2Fb/caf%C3%A9?x=1&y=%2F"
    body = os.urandom(MIB + 3)
    with uwsgi_server(tmp_path / "uwsgi.log", APPS_BY_KIND["flask"], "--socket", f"127.0.0.1:{port}",
                      ready=tcp_ready(port)), nginx(tmp_path, f"127.0.0.1:{port}") as url:
        theirs = httpx.get(url + target).json(), httpx.post(url + "/upload", content=body).json()
    (tmp_path / "nginx").rename(tmp_path / "nginx-uwsgi")
    with bascule_uwsgi(tmp_path, APPS_BY_KIND["flask"]) as upstream, nginx(tmp_path, upstream) as url:
        ours = httpx.get(url + target).json(), httpx.post(url + "/upload", content=body).json()
    assert ours == theirs
    assert ours[0]["client"] == "127.0.0.1" and ours[0]["path"] == "/echo/a/b/café"
