"""TLS end to end: httpx, curl and the websockets client over real sockets to ASGI and WSGI apps, mTLS with a
client certificate, the ASGI ``tls`` extension, certificate reload on SIGHUP (one process and workers), and
the one-line errors of unusable certificate files. Certificates are made with trustme (tests/tls_certs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from conftest import Running, free_port
from it_support import APPS, clean_env, log_lines_with, spawn, tcp_ready, wait_for
from tls_certs import ServerFiles, client_cert, server_files, write_ca
from websockets.asyncio.client import connect

Serve = Callable[..., contextlib.AbstractContextManager[Running]]
CURL = shutil.which("curl")
TLS13_SUITES = (0x1301, 0x1302, 0x1303)

if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))


@pytest.fixture
def files(tmp_path: Path) -> ServerFiles:
    return server_files(tmp_path)


@pytest.fixture
def https(serve: Serve, files: ServerFiles) -> Callable[..., contextlib.AbstractContextManager[str]]:
    """``with https(app, **options) as url:`` — an app from apps/it_tls_app.py served over TLS in-process."""

    @contextlib.contextmanager
    def start(app: str = "it_tls_app:app", **options: Any) -> Iterator[str]:
        options.setdefault("app_dir", str(APPS))
        options.setdefault("ssl_certfile", str(files.cert))
        options.setdefault("ssl_keyfile", str(files.key))
        with serve(app, **options) as srv:
            yield f"https://127.0.0.1:{srv.port}"

    return start


def peer_certificate(port: int, context: ssl.SSLContext) -> str:
    """The PEM certificate a new TLS connection to 127.0.0.1:port is shown."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return ssl.DER_cert_to_PEM_cert(der)


def same_cert(pem_a: str, pem_b: str) -> bool:
    return ssl.PEM_cert_to_DER_cert(pem_a) == ssl.PEM_cert_to_DER_cert(pem_b)


# -- HTTPS to ASGI and WSGI apps ----------------------------------------------------------------------


def test_asgi_scope_over_https(https: Callable[..., Any], files: ServerFiles) -> None:
    with https() as url, httpx.Client(verify=files.client_context()) as client:
        first = client.get(url + "/").json()
        second = client.get(url + "/again").json()  # the same connection: the same facts
    assert first["scheme"] == "https" and first["http_version"] == "1.1"
    ext = first["tls"]
    assert ext["tls_version"] == 0x0304
    assert ext["cipher_suite"] in TLS13_SUITES
    assert same_cert(ext["server_cert"], files.leaf_pem)
    assert ext["client_cert_chain"] == [] and ext["client_cert_name"] is None and ext["client_cert_error"] is None
    assert second == first


def test_tls12_client_gets_its_cipher_suite(https: Callable[..., Any], files: ServerFiles) -> None:
    context = files.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384")
    with https() as url:
        ext = httpx.get(url + "/", verify=context).json()["tls"]
    assert ext["tls_version"] == 0x0303
    assert ext["cipher_suite"] in (0xC02C, 0xC030)  # TLS_ECDHE_{ECDSA,RSA}_WITH_AES_256_GCM_SHA384


def test_min_version_tls13_refuses_tls12(https: Callable[..., Any], files: ServerFiles) -> None:
    context = files.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with https(ssl_min_version="TLSv1.3") as url:
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/", verify=context)
        assert httpx.get(url + "/", verify=files.client_context()).json()["tls"]["tls_version"] == 0x0304


def test_plain_http_has_no_tls_extension(serve: Serve) -> None:
    with serve("it_tls_app:app", app_dir=str(APPS)) as srv:
        facts = httpx.get(srv.url + "/").json()
    assert facts == {"scheme": "http", "http_version": "1.1", "tls": None}


def test_wsgi_environ_over_https(https: Callable[..., Any], files: ServerFiles) -> None:
    with https("it_tls_app:wsgi_app") as url:
        facts = httpx.get(url + "/", verify=files.client_context()).json()
    assert facts == {"url_scheme": "https", "https": "on"}


def test_wsgi_environ_over_http(serve: Serve) -> None:
    with serve("it_tls_app:wsgi_app", app_dir=str(APPS)) as srv:
        assert httpx.get(srv.url + "/").json() == {"url_scheme": "http", "https": None}


def test_handshake_deadline(https: Callable[..., Any]) -> None:
    with https(timeout_request_head=0.5) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            start = time.monotonic()
            assert sock.recv(1) == b""  # never started a handshake: closed at the request-head deadline
            assert time.monotonic() - start < 4


def test_alpn_offers_http11_alone_without_http2(https: Callable[..., Any], files: ServerFiles) -> None:
    context = files.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with https(http2=False) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            assert sock.selected_alpn_protocol() == "http/1.1"


# -- mTLS -----------------------------------------------------------------------------------------------


@pytest.fixture
def client_ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    return ca, write_ca(ca, tmp_path / "clients-ca.pem")


def test_mtls_required(https: Callable[..., Any], files: ServerFiles, client_ca: tuple[trustme.CA, Path]) -> None:
    ca, ca_file = client_ca
    alice = client_cert(ca)
    with_cert = files.client_context()
    alice.configure_cert(with_cert)
    with https(ssl_cert_reqs=2, ssl_ca_certs=str(ca_file)) as url:
        # TLS 1.3: the client's handshake completes before the server checks it, so the refusal may surface
        # on the first read rather than at connect
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/", verify=files.client_context())
        other = files.client_context()
        client_cert(trustme.CA()).configure_cert(other)
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/", verify=other)
        ext = httpx.get(url + "/", verify=with_cert).json()["tls"]
    assert same_cert(ext["client_cert_chain"][0], alice.cert_chain_pems[0].bytes().decode())
    assert ext["client_cert_name"] == "CN=alice,OU=QA,O=Example\\, Inc."
    assert ext["client_cert_error"] is None


def test_mtls_optional(https: Callable[..., Any], files: ServerFiles, client_ca: tuple[trustme.CA, Path]) -> None:
    ca, ca_file = client_ca
    with_cert = files.client_context()
    client_cert(ca).configure_cert(with_cert)
    with https(ssl_cert_reqs=1, ssl_ca_certs=str(ca_file)) as url:
        assert httpx.get(url + "/", verify=files.client_context()).json()["tls"]["client_cert_chain"] == []
        assert httpx.get(url + "/", verify=with_cert).json()["tls"]["client_cert_name"].startswith("CN=alice,")


def test_mtls_over_http2(https: Callable[..., Any], files: ServerFiles, client_ca: tuple[trustme.CA, Path]) -> None:
    # ALPN picks h2: the streams of the connection carry the same tls facts, client certificate included
    ca, ca_file = client_ca
    with_cert = files.client_context()
    client_cert(ca).configure_cert(with_cert)
    with https(ssl_cert_reqs=2, ssl_ca_certs=str(ca_file)) as url, \
            httpx.Client(verify=with_cert, http2=True) as client:
        responses = [client.get(url + f"/{i}") for i in range(3)]
    assert all(r.http_version == "HTTP/2" for r in responses)
    facts = [r.json() for r in responses]
    assert facts[0]["scheme"] == "https" and facts[0]["http_version"] == "2"
    assert facts[0]["tls"]["client_cert_name"].startswith("CN=alice,")
    assert facts[0]["tls"]["tls_version"] == 0x0304 and facts[1] == facts[0] == facts[2]


def test_wsgi_environ_over_http2(https: Callable[..., Any], files: ServerFiles) -> None:
    with https("it_tls_app:wsgi_app") as url, httpx.Client(verify=files.client_context(), http2=True) as client:
        response = client.get(url + "/")
    assert response.http_version == "HTTP/2"
    assert response.json() == {"url_scheme": "https", "https": "on"}


# -- wss ------------------------------------------------------------------------------------------------


def test_wss_websocket(https: Callable[..., Any], files: ServerFiles) -> None:
    async def go(url: str) -> dict[str, Any]:
        async with connect(url.replace("https://", "wss://") + "/ws", ssl=files.client_context()) as ws:
            facts: dict[str, Any] = json.loads(await ws.recv())
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
        return facts

    with https() as url:
        facts = asyncio.run(asyncio.wait_for(go(url), 20))
    assert facts["scheme"] == "wss"
    assert facts["tls"]["tls_version"] == 0x0304
    assert same_cert(facts["tls"]["server_cert"], files.leaf_pem)


# -- curl -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_with_cacert(files: ServerFiles, tmp_path: Path) -> None:
    assert CURL is not None
    ca_file = write_ca(files.ca, tmp_path / "ca.pem")
    port = free_port()
    args = ["it_tls_app:app", "--port", str(port), "--ssl-certfile", str(files.cert), "--ssl-keyfile",
            str(files.key), "--no-http2"]
    with spawn(args, env=clean_env(), log=tmp_path / "server.log", ready=tcp_ready(port)):
        result = subprocess.run([CURL, "--silent", "--show-error", "--max-time", "10", "--cacert", str(ca_file),
                                 f"https://localhost:{port}/"], capture_output=True, timeout=20)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert json.loads(result.stdout)["scheme"] == "https"
        # and without the CA, curl refuses the unknown certificate
        refused = subprocess.run([CURL, "--silent", "--max-time", "10", f"https://localhost:{port}/"],
                                 capture_output=True, timeout=20)
        assert refused.returncode == 60  # CURLE_PEER_FAILED_VERIFICATION
    log = (tmp_path / "server.log").read_text()
    assert "serving on https://127.0.0.1:" in log
    assert "Traceback" not in log


# -- reload on SIGHUP -----------------------------------------------------------------------------------


def swap_in(files: ServerFiles, new: ServerFiles) -> None:
    files.cert.write_bytes(new.cert.read_bytes())
    files.key.write_bytes(new.key.read_bytes())


def test_sighup_reloads_the_certificate(files: ServerFiles, tmp_path: Path) -> None:
    new = server_files(tmp_path, files.ca, name="new")
    port = free_port()
    log = tmp_path / "server.log"
    context = files.client_context()
    args = ["it_tls_app:app", "--port", str(port), "--ssl-certfile", str(files.cert), "--ssl-keyfile",
            str(files.key)]
    with spawn(args, env=clean_env(), log=log, ready=tcp_ready(port)) as proc:
        assert same_cert(peer_certificate(port, context), files.leaf_pem)
        with httpx.Client(verify=context) as kept:
            assert kept.get(f"https://127.0.0.1:{port}/").status_code == 200
            swap_in(files, new)
            proc.send_signal(signal.SIGHUP)
            assert log_lines_with(log, "reloaded the TLS certificate"), log.read_text()
            assert same_cert(peer_certificate(port, context), new.leaf_pem)
            ext = httpx.get(f"https://127.0.0.1:{port}/", verify=context).json()["tls"]
            assert same_cert(ext["server_cert"], new.leaf_pem)
            assert kept.get(f"https://127.0.0.1:{port}/").status_code == 200  # an open connection goes on
        # a broken replacement is reported and the last good certificate keeps serving
        files.key.write_text("not a key\n")
        proc.send_signal(signal.SIGHUP)
        lines = log_lines_with(log, "TLS certificates not reloaded")
        assert lines and "holds no PEM private key" in lines[0], log.read_text()
        assert same_cert(peer_certificate(port, context), new.leaf_pem)
        assert proc.poll() is None
    assert "Traceback" not in log.read_text()


def test_sighup_with_workers_reloads_the_certificate(files: ServerFiles, tmp_path: Path) -> None:
    new = server_files(tmp_path, files.ca, name="new")
    port = free_port()
    log = tmp_path / "server.log"
    context = files.client_context()
    args = ["it_tls_app:app", "--port", str(port), "--workers", "2", "--ssl-certfile", str(files.cert),
            "--ssl-keyfile", str(files.key)]
    with spawn(args, env=clean_env(), log=log, ready=tcp_ready(port)) as proc:
        assert same_cert(peer_certificate(port, context), files.leaf_pem)
        assert "serving on https://127.0.0.1:" in log.read_text()
        swap_in(files, new)
        proc.send_signal(signal.SIGHUP)

        def all_new() -> bool:
            return all(same_cert(peer_certificate(port, context), new.leaf_pem) for _ in range(6))

        assert wait_for(all_new, 15), log.read_text()
        # unusable files: the new workers cannot boot, the running ones keep serving the last good certificate
        files.key.write_text("not a key\n")
        proc.send_signal(signal.SIGHUP)
        assert log_lines_with(log, "keeps serving", count=1, timeout=10), log.read_text()
        assert "holds no PEM private key" in log.read_text()
        assert all(same_cert(peer_certificate(port, context), new.leaf_pem) for _ in range(4))
        assert proc.poll() is None


# -- errors ---------------------------------------------------------------------------------------------


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bascule", "it_tls_app:app", "--port", str(free_port()), *args],
                          cwd=APPS, env=clean_env(), capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unusable_files_are_one_line_config_errors(files: ServerFiles, tmp_path: Path, workers: str) -> None:
    missing = str(tmp_path / "missing.key")
    cases = [
        (["--ssl-keyfile", str(files.key)], "bascule: ssl_keyfile needs ssl_certfile"),
        (["--ssl-certfile", str(files.cert), "--ssl-keyfile", missing],
         f"bascule: cannot read ssl_keyfile {missing!r}"),
        (["--ssl-certfile", str(files.cert)], "bascule: ssl_certfile"),
        (["--ssl-certfile", str(files.cert), "--ssl-keyfile", str(files.key), "--ssl-cert-reqs", "2"],
         "bascule: ssl_cert_reqs 2 asks for client certificates"),
    ]
    for flags, start in cases:
        result = run_cli([*flags, "--workers", workers])
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(start), result.stderr


def test_keyfile_password_from_the_environment(files: ServerFiles, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        Encoding,
        PrivateFormat,
        load_pem_private_key,
    )

    key = load_pem_private_key(files.leaf.private_key_pem.bytes(), None)
    files.key.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pw")))
    port = free_port()
    args = ["it_tls_app:app", "--port", str(port), "--ssl-certfile", str(files.cert), "--ssl-keyfile",
            str(files.key)]
    with spawn(args, env=clean_env(BASCULE_SSL_KEYFILE_PASSWORD="pw"), log=tmp_path / "server.log",
               ready=tcp_ready(port)):
        assert httpx.get(f"https://127.0.0.1:{port}/", verify=files.client_context()).json()["scheme"] == "https"
    result = run_cli(["--ssl-certfile", str(files.cert), "--ssl-keyfile", str(files.key)])
    assert result.returncode == 2
    assert result.stderr.strip() == (f"bascule: the private key in {str(files.key)!r} is encrypted: set "
                                     f"ssl_keyfile_password (best as BASCULE_SSL_KEYFILE_PASSWORD, so it does not "
                                     f"show in ps)")
