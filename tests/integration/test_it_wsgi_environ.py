"""The WSGI environ keys the ecosystem, not PEP 3333, defines (SERVER_SOFTWARE, the addresses over a Unix
socket), compared with gunicorn serving the same app in the same test (issue 12)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from it_support import can_connect, spawn, spawn_gunicorn

pytest.importorskip("gunicorn")


def unix_get(path: str, target: str, host: str) -> dict[str, Any]:
    transport = httpx.HTTPTransport(uds=path)
    with httpx.Client(transport=transport, timeout=5) as client:
        reply = client.get(f"http://{host}{target}")
    assert reply.status_code == 200
    return dict(reply.json())


def comparable(env: dict[str, Any], software: str) -> dict[str, Any]:
    """The environ with the server's own name taken out of SERVER_SOFTWARE (checked separately)."""
    name, _, version = str(env.pop("SERVER_SOFTWARE")).partition("/")
    assert (name, bool(version)) == (software, True)
    return env


@pytest.mark.parametrize("host", ["app.example:8080", "app.example"])
def test_environ_over_a_unix_socket_matches_gunicorn(tmp_path: Path, host: str) -> None:
    ours, theirs = str(tmp_path / "bascule.sock"), str(tmp_path / "gunicorn.sock")
    with spawn(["it_wsgi_environ:app", "--uds", ours], log=tmp_path / "b.log",
               ready=lambda: can_connect(socket.AF_UNIX, ours)), \
         spawn_gunicorn("it_wsgi_environ:app", f"unix:{theirs}", log=tmp_path / "g.log",
                        ready=lambda: can_connect(socket.AF_UNIX, theirs)):
        got = unix_get(ours, "/a/b?x=1", host)
        want = unix_get(theirs, "/a/b?x=1", host)
    assert got["REMOTE_ADDR"] == "" and "REMOTE_ADDR" in got  # present, as apps index it without .get
    assert comparable(got, "bascule") == comparable(want, "gunicorn")


def test_an_ipv6_host_over_a_unix_socket_keeps_its_brackets(tmp_path: Path) -> None:
    """gunicorn splits '[::1]:9000' at the first colon ('[' and ''); we split at the port."""
    ours = str(tmp_path / "bascule.sock")
    with spawn(["it_wsgi_environ:app", "--uds", ours], log=tmp_path / "b.log",
               ready=lambda: can_connect(socket.AF_UNIX, ours)):
        got = unix_get(ours, "/", "[::1]:9000")
    assert (got["SERVER_NAME"], got["SERVER_PORT"]) == ("[::1]", "9000")


def test_environ_over_tcp_matches_gunicorn(tmp_path: Path) -> None:
    ours, theirs = free_port(), free_port()
    with spawn(["it_wsgi_environ:app", "--port", str(ours)], log=tmp_path / "b.log",
               ready=lambda: can_connect(socket.AF_INET, ("127.0.0.1", ours))), \
         spawn_gunicorn("it_wsgi_environ:app", f"127.0.0.1:{theirs}", log=tmp_path / "g.log",
                        ready=lambda: can_connect(socket.AF_INET, ("127.0.0.1", theirs))):
        got = httpx.get(f"http://127.0.0.1:{ours}/p?q", timeout=5).json()
        want = httpx.get(f"http://127.0.0.1:{theirs}/p?q", timeout=5).json()
    for env, port in ((got, ours), (want, theirs)):
        assert env.pop("SERVER_PORT") == str(port)
        assert env.pop("REMOTE_PORT").isdigit()
    assert comparable(got, "bascule") == comparable(want, "gunicorn")
