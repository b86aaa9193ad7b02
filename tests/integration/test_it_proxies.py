"""bascule behind a real HAProxy and a real nginx, each started by the test on loopback with its own config.

- HAProxy (``mode tcp``) sends PROXY v1 (``send-proxy``), v2 (``send-proxy-v2``) and v2 with SSL TLVs
  (``send-proxy-v2-ssl`` with ``proxy-v2-options ssl-cipher``, HAProxy terminating TLS itself) to a
  ``--bind proxy+...`` listener: the app sees the client's own address and port (the test's socket), the address
  it connected to, and https over the terminated TLS, with its version and cipher suite number.
- nginx ``proxy_pass`` with X-Forwarded-For/-Proto and, in another server block, RFC 7239 Forwarded: what an
  ASGI and a WSGI app see. The same ASGI app behind the same nginx on uvicorn (``--proxy-headers``) for
  comparison where the ecosystem defines the behaviour: both take the rightmost untrusted hop with an explicit
  list; with ``*`` uvicorn takes the leftmost hop, which the client wrote (the intended difference).

Skipped when haproxy or nginx is not installed (.ci/run installs both).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from it_support import APPS, clean_env, spawn, stop, tcp_ready, wait_for
from tls_certs import ServerFiles, server_files

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def foreground(cmd: list[str], log: Path, ready_port: int) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_for(lambda: proc.poll() is not None or tcp_ready(ready_port)(), 15) or proc.poll() is not None:
            raise AssertionError(f"{cmd[0]} did not start: {log.read_text(errors='replace')}")
        yield proc
    finally:
        stop(proc)


def get(port: int, path: str = "/", fields: str = "", tls: ssl.SSLContext | None = None) -> tuple[Any, tuple[str, int]]:
    """One GET through the proxy: the app's JSON, and this client's own (address, port)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock: socket.socket = raw if tls is None else tls.wrap_socket(raw, server_hostname="127.0.0.1")
    with sock:
        mine = sock.getsockname()[:2]
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: front.example\r\nConnection: close\r\n{fields}\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return json.loads(body), (mine[0], mine[1])


def dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if not size:
            return out
        out += rest[:size]
        body = rest[size + 2:]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ServerFiles:
    return server_files(Path(tmp_path_factory.mktemp("proxy-certs")))


@contextlib.contextmanager
def bascule(tmp: Path, name: str, *args: str, bind: str) -> Iterator[None]:
    port = int(bind.rpartition(":")[2])
    with spawn(["--bind", bind, "--no-access-log", *args], cwd=APPS, log=tmp / f"bascule-{name}.log",
               ready=tcp_ready(port)):
        yield


# -- HAProxy: the PROXY protocol ------------------------------------------------------------------------------
@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (apt-get install haproxy)")
@pytest.mark.parametrize("app", ["it_proxy_echo:app", "it_proxy_echo:wsgi"])
def test_haproxy_send_proxy_v1_v2_and_v2_ssl(tmp_path: Path, certs: ServerFiles, app: str) -> None:
    assert HAPROXY is not None
    backend = free_port()
    fronts = {"v1": free_port(), "v2": free_port(), "ssl": free_port()}
    combined = tmp_path / "haproxy.pem"
    combined.write_bytes(certs.cert.read_bytes() + certs.key.read_bytes())
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v1
    bind 127.0.0.1:{fronts["v1"]}
    default_backend v1
backend v1
    server app 127.0.0.1:{backend} send-proxy
frontend v2
    bind 127.0.0.1:{fronts["v2"]}
    default_backend v2
backend v2
    server app 127.0.0.1:{backend} send-proxy-v2
frontend ssl
    bind 127.0.0.1:{fronts["ssl"]} ssl crt {combined}
    default_backend ssl
backend ssl
    server app 127.0.0.1:{backend} send-proxy-v2-ssl proxy-v2-options ssl-cipher
""")
    with bascule(tmp_path, "haproxy", app, bind=f"proxy+127.0.0.1:{backend}"), \
            foreground([HAPROXY, "-db", "-f", str(config)], tmp_path / "haproxy.log", fronts["ssl"]):
        for kind, front in fronts.items():
            seen, mine = get(front, tls=certs.client_context() if kind == "ssl" else None)
            if app.endswith(":app"):
                assert seen["client"] == list(mine), kind  # the test's own socket, not HAProxy's
                assert seen["server"] == ["127.0.0.1", front], kind  # the address the client connected to
                assert seen["scheme"] == ("https" if kind == "ssl" else "http"), kind
                assert (seen["tls_version"] is not None) == (kind == "ssl"), kind
                assert isinstance(seen["cipher_suite"], int) == (kind == "ssl"), kind  # HAProxy's SSL_CIPHER TLV
            else:
                assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == (mine[0], str(mine[1])), kind
                assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("127.0.0.1", str(front)), kind
                assert seen["wsgi.url_scheme"] == ("https" if kind == "ssl" else "http"), kind
                assert seen["HTTPS"] == ("on" if kind == "ssl" else None), kind


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (apt-get install haproxy)")
def test_a_direct_connection_to_a_proxy_listener_is_refused(tmp_path: Path) -> None:
    backend = free_port()
    with bascule(tmp_path, "direct", "it_proxy_echo:app", bind=f"proxy+127.0.0.1:{backend}"), \
            socket.create_connection(("127.0.0.1", backend), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):  # an abort, as the spec asks
            assert sock.recv(65536) == b""
    assert "no PROXY protocol header" in (tmp_path / "bascule-direct.log").read_text()


# -- nginx: proxy headers ----------------------------------------------------------------------------------------
NGINX_LOCATION = """
        proxy_pass http://127.0.0.1:{upstream};
        proxy_bind 127.0.0.2;
        proxy_set_header Host $host;
"""


@contextlib.contextmanager
def nginx(tmp: Path, certs: ServerFiles, servers: str, ready: int) -> Iterator[None]:
    assert NGINX is not None
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / name).mkdir(exist_ok=True)
    config = tmp / "nginx.conf"
    config.write_text(f"""
daemon off;
master_process off;
error_log {tmp}/nginx-error.log info;
pid {tmp}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    ssl_certificate {certs.cert};
    ssl_certificate_key {certs.key};
{servers}
}}
""")
    with foreground([NGINX, "-p", str(tmp), "-c", str(config)], tmp / "nginx.log", ready):
        yield


def xff_server(listen: int, tls_listen: int, upstream: int) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{listen};
        listen 127.0.0.1:{tls_listen} ssl;
        location / {{
{NGINX_LOCATION.format(upstream=upstream)}
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Prefix /shop;
        }}
    }}
"""


def forwarded_server(listen: int, tls_listen: int, upstream: int) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{listen};
        listen 127.0.0.1:{tls_listen} ssl;
        location / {{
{NGINX_LOCATION.format(upstream=upstream)}
            proxy_set_header Forwarded "$http_forwarded, for=\\"$remote_addr:$remote_port\\";proto=$scheme;host=$host";
            proxy_set_header X-Forwarded-For 192.0.2.66;
        }}
    }}
"""


needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")


@needs_nginx
def test_nginx_x_forwarded_for_and_proto_asgi_and_wsgi(tmp_path: Path, certs: ServerFiles) -> None:
    listen, tls_listen = free_port(), free_port()
    asgi_port, wsgi_port = free_port(), free_port()
    trust = ("--forwarded-allow-ips", "127.0.0.2", "--forwarded-host", "--forwarded-prefix")
    servers = xff_server(listen, tls_listen, asgi_port) + xff_server(free_port(), free_port(), wsgi_port)
    wsgi_listen = int(servers.split("listen 127.0.0.1:")[3].split(";")[0])
    with bascule(tmp_path, "asgi", "it_proxy_echo:app", *trust, bind=f"127.0.0.1:{asgi_port}"), \
            bascule(tmp_path, "wsgi", "it_proxy_echo:wsgi", *trust, bind=f"127.0.0.1:{wsgi_port}"), \
            nginx(tmp_path, certs, servers, tls_listen):
        # a client's own X-Forwarded-For is kept left of what nginx appends, and never believed
        seen, mine = get(tls_listen, fields="X-Forwarded-For: 6.6.6.6\r\n", tls=certs.client_context())
        assert seen["client"] == [mine[0], 0] and seen["scheme"] == "https"
        assert seen["host"] == "front.example" and seen["server"] == ["front.example", 443]
        assert seen["root_path"] == "/shop"
        seen, mine = get(listen)
        assert seen["client"] == [mine[0], 0] and seen["scheme"] == "http"
        environ, mine = get(wsgi_listen, fields="X-Forwarded-For: 6.6.6.6\r\n")
        assert (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"], environ["HTTPS"]) == (mine[0], "http", None)
        assert (environ["HTTP_HOST"], environ["SERVER_NAME"], environ["SCRIPT_NAME"]) == \
            ("front.example", "front.example", "/shop")


@needs_nginx
def test_nginx_forwarded(tmp_path: Path, certs: ServerFiles) -> None:
    listen, tls_listen, upstream = free_port(), free_port(), free_port()
    with bascule(tmp_path, "fwd", "it_proxy_echo:app", "--forwarded-allow-ips", "127.0.0.2", "--proxy-headers-mode",
                 "forwarded", "--forwarded-host", bind=f"127.0.0.1:{upstream}"), \
            nginx(tmp_path, certs, forwarded_server(listen, tls_listen, upstream), tls_listen):
        seen, mine = get(tls_listen, fields='Forwarded: for="[2001:db8::1]:1"\r\n', tls=certs.client_context())
    # the client's own element (for the IPv6 address) is left of nginx's: never believed; X-Forwarded-For ignored
    assert seen["client"] == list(mine) and seen["scheme"] == "https" and seen["server"] == ["front.example", 443]


@needs_nginx
@pytest.mark.parametrize("allow", ["127.0.0.2", "*"])
def test_nginx_x_forwarded_for_compared_with_uvicorn(tmp_path: Path, certs: ServerFiles, allow: str) -> None:
    """Same app, same nginx, same headers: with an explicit list bascule and uvicorn agree (the rightmost hop
    that is not a listed proxy); with ``*`` uvicorn takes the leftmost hop, which the client wrote, and bascule
    the hop the connecting proxy appended."""
    pytest.importorskip("uvicorn")
    listen, tls_listen, ours, theirs = free_port(), free_port(), free_port(), free_port()
    other_listen, other_tls = free_port(), free_port()
    servers = xff_server(listen, tls_listen, ours) + xff_server(other_listen, other_tls, theirs)
    uvicorn = subprocess.Popen([sys.executable, "-m", "uvicorn", "it_proxy_echo:app", "--port", str(theirs),
                                "--proxy-headers", "--forwarded-allow-ips", allow, "--no-access-log"],
                               cwd=APPS, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        assert wait_for(tcp_ready(theirs), 15), "uvicorn did not start"
        with bascule(tmp_path, "cmp", "it_proxy_echo:app", "--forwarded-allow-ips", allow,
                     bind=f"127.0.0.1:{ours}"), nginx(tmp_path, certs, servers, other_tls):
            spoof = "X-Forwarded-For: 6.6.6.6\r\n"
            mine_seen, mine = get(tls_listen, fields=spoof, tls=certs.client_context())
            theirs_seen, _ = get(other_tls, fields=spoof, tls=certs.client_context())
    finally:
        stop(uvicorn)  # type: ignore[arg-type]
    assert mine_seen["client"] == [mine[0], 0] and mine_seen["scheme"] == "https"
    assert theirs_seen["scheme"] == "https"
    if allow == "*":
        assert theirs_seen["client"][0] == "6.6.6.6"  # uvicorn believes the client's own value
    else:
        assert theirs_seen["client"][0] == mine[0]
