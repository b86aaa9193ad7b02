"""A real nginx for the integration tests (test_it_uwsgi_nginx, test_it_fastcgi_scgi), and bascule behind it.

nginx is Debian's package (.ci/run installs it), run as one process (``daemon off``, ``master_process off``,
so nothing switches users or writes outside its prefix) with its own configuration, temp paths and logs in
the test's directory, listening on loopback only. The caller writes the ``http {}`` block's servers and
upstreams; :func:`server` and :func:`upstream` write the common shapes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from it_support import APPS, can_connect, clean_env, spawn, stop, tcp_ready, wait_for

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
PARAMS_DIR = Path("/etc/nginx")
"""Where Debian keeps the stock uwsgi_params, fastcgi_params and scgi_params."""


def have_nginx(*params: str) -> bool:
    """nginx is installed, with the named stock params files (``"fastcgi_params"``...)."""
    return NGINX is not None and all((PARAMS_DIR / name).exists() for name in params)


def upstream(name: str, address: str, keepalive: int = 0) -> str:
    """An ``upstream`` block: one server, and a pool of ``keepalive`` idle connections when not 0."""
    pool = f"keepalive {keepalive};" if keepalive else ""
    return f"upstream {name} {{ server {address}; {pool} }}\n"


def server(port: int, location: str) -> str:
    """A ``server`` on 127.0.0.1:``port`` whose ``location /`` holds ``location`` (directives)."""
    return f"server {{ listen 127.0.0.1:{port}; location / {{ {location} }} }}\n"


@contextlib.contextmanager
def nginx(root: Path, blocks: str, ports: list[int]) -> Iterator[Path]:
    """nginx with ``blocks`` (servers, upstreams) in its ``http {}``, its prefix ``root`` (created); ready once
    every port in ``ports`` accepts. Yields ``root`` (``root / "error.log"`` is its error log)."""
    assert NGINX is not None
    root.mkdir()
    temp = " ".join(f"{kind}_temp_path {root}/{kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
    (root / "nginx.conf").write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    {temp}
    client_max_body_size 64m;
{blocks}
}}
""")
    log = root / "stdout.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def up() -> bool:
            return all(tcp_ready(port)() for port in ports)
        if not wait_for(lambda: proc.poll() is not None or up(), 10) or proc.poll() is not None:
            raise AssertionError(f"nginx did not start: {log.read_text()} {error_log(root)}")
        yield root
    finally:
        stop(proc)


def error_log(root: Path) -> str:
    path = root / "error.log"
    return path.read_text(errors="replace") if path.exists() else ""


def error_log_size(root: Path) -> int:
    path = root / "error.log"
    return path.stat().st_size if path.exists() else 0


def nginx_errors(root: Path, since: int = 0) -> list[str]:
    """The error log's lines at level error or worse written after byte ``since`` (an upstream that broke the
    protocol, reset a kept connection or closed early: there even when a retry hid it from the client)."""
    with open(root / "error.log", "rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    levels = ("[error]", "[crit]", "[alert]", "[emerg]")
    return [line for line in lines if any(level in line for level in levels)]


def bind_ready(bind: str) -> Callable[[], bool]:
    """Whether a ``--bind`` value's listener accepts: ``KIND://HOST:PORT`` or ``KIND://unix:PATH``."""
    address = bind.split("://", 1)[-1]
    if address.startswith("unix:"):
        path = address[5:]
        return lambda: os.path.exists(path) and can_connect(socket.AF_UNIX, path)
    host, _, port = address.rpartition(":")
    return tcp_ready(int(port), host.strip("[]"))


@contextlib.contextmanager
def bascule(log: Path, app: str, binds: list[str], *extra: str) -> Iterator[None]:
    """bascule serving ``app`` on every listener of ``binds`` (``--bind`` values), ready once all accept."""
    args = [app]
    for bind in binds:
        args += ["--bind", bind]
    readies = [bind_ready(bind) for bind in binds]
    with spawn([*args, *extra], log=log, ready=lambda: all(ready() for ready in readies)):
        yield


def uwsgi_binary() -> str | None:
    """pyuwsgi's ``uwsgi`` beside this Python (its venv), else one on PATH."""
    return shutil.which("uwsgi", path=os.path.dirname(sys.executable)) or shutil.which("uwsgi")


@contextlib.contextmanager
def uwsgi_server(log: Path, module: str, *options: str, ready: Callable[[], bool]) -> Iterator[None]:
    """Real uWSGI (PyPI pyuwsgi) serving the WSGI ``module`` from the apps directory, with ``options`` (its
    sockets: ``--socket``, ``--fastcgi-socket``, ``--scgi-socket``), one process, no request log."""
    binary = uwsgi_binary()
    assert binary is not None
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, *options, "--module", module, "--chdir", str(APPS), "--processes", "1",
                                 "--disable-logging"],
                                cwd=APPS, env=clean_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_for(lambda: proc.poll() is not None or ready(), 15) or proc.poll() is not None:
            raise AssertionError(f"uWSGI did not start: {log.read_text(errors='replace')}")
        yield
    finally:
        stop(proc)
