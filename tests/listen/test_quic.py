"""Tests for HTTP/3's front door (bascule.listen.quic) and its options (bascule.http3_options): where QUIC
listens, the UDP sockets, aioquic's configuration from Config, the Alt-Svc value, the tls extension, and
starting/stopping the wire's servers (a stand-in here; the real wire runs in tests/integration/test_it_http3.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from tls_certs import ServerFiles, client_cert, server_files

from bascule import http3_options, tls
from bascule.config import Config
from bascule.context import ServerContext
from bascule.errors import ConfigError, StartupError
from bascule.listen import quic
from bascule.listen.listeners import bind_listeners, listener_specs
from bascule.workers import WorkerSetup


@pytest.fixture
def files(tmp_path: Path) -> ServerFiles:
    return server_files(tmp_path)


def h3_config(files: ServerFiles, **options: Any) -> Config:
    return Config(app="m:a", ssl_certfile=str(files.cert), ssl_keyfile=str(files.key), **options)


# -- the options -------------------------------------------------------------------------------------------------


def test_http3_is_off_by_default_and_its_defaults() -> None:
    config = Config(app="m:a")
    assert (config.http3, config.http3_alt_svc_max_age, config.http3_retry, config.http3_0rtt) == \
        (False, 86400, False, False)


@pytest.mark.parametrize(("options", "words"), [
    ({"http3": True}, "http3 needs TLS"),
    ({"bind": ("127.0.0.1:8000", "quic://127.0.0.1:8443")}, "bind 'quic://127.0.0.1:8443' needs TLS"),
    ({"http3_retry": True}, "http3_retry only applies to HTTP/3"),
    ({"http3_0rtt": True}, "http3_0rtt only applies to HTTP/3"),
    ({"http3_alt_svc_max_age": -1}, "http3_alt_svc_max_age must be >= 0"),
    ({"bind": ("quic://unix:/run/q.sock",)}, "a QUIC listener is a UDP HOST:PORT"),
    ({"bind": ("quic://fd://3",)}, "a QUIC listener is a UDP HOST:PORT"),
    ({"bind": ("quic://uwsgi://127.0.0.1:1",)}, "a QUIC listener is a UDP HOST:PORT"),
    ({"bind": ("quic://127.0.0.1",)}, "must look like quic://HOST:PORT"),
    ({"bind": ("proxy+quic://127.0.0.1:8443",)}, "takes no PROXY protocol header"),
])
def test_http3_option_mistakes_are_one_line(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=r"^[^\n]*$") as info:
        Config(app="m:a", **options)
    assert words in str(info.value)


@pytest.mark.parametrize(("options", "words"), [
    ({"http3": True, "ssl_cert_reqs": 2, "ssl_ca_certs": "ca.pem"}, "aioquic does not verify client certificates"),
    ({"http3": True, "bind": ("unix:/run/a.sock",)}, "none is configured"),
    ({"http3": True, "bind": ("proxy+127.0.0.1:8443",)}, "none is configured"),
    ({"http3": True, "proxy_protocol": True}, "none is configured"),
    ({"http3": True, "uds": "/run/a.sock"}, "none is configured"),
])
def test_http3_refuses_what_it_cannot_serve(files: ServerFiles, options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=r"^[^\n]*$") as info:
        h3_config(files, **options)
    assert words in str(info.value)


def test_without_aioquic_the_error_names_the_extra(files: ServerFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http3_options, "aioquic_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'bascule\[http3\]'"):
        h3_config(files, http3=True)
    h3_config(files)  # without HTTP/3 nothing asks for it


def test_http3_configs_that_work(files: ServerFiles) -> None:
    h3_config(files, http3=True, http3_retry=True, http3_0rtt=True, http3_alt_svc_max_age=0)
    h3_config(files, http3=True, bind=("unix:/run/a.sock", "quic://[::1]:8443"))  # the quic:// bind pairs
    h3_config(files, bind=("quic://:8443",))  # HTTP/3 alone, no TCP listener
    h3_config(files, http3=True, fd=3)  # an inherited socket is looked at when bound
    h3_config(files, http3=True, admin_bind="127.0.0.1:8443", bind=("127.0.0.1:9443", "quic://127.0.0.1:8443"))


def test_quic_binds_are_no_stream_listeners(files: ServerFiles) -> None:
    config = h3_config(files, bind=("127.0.0.1:8443", "quic://127.0.0.1:8443"))
    assert [spec.address for spec in listener_specs(config)] == [("127.0.0.1", 8443)]
    assert listener_specs(h3_config(files, bind=("quic://127.0.0.1:8443",))) == []


def test_cli_flags(files: ServerFiles) -> None:
    from bascule.cli import load_config

    config = load_config(["m:a", "--ssl-certfile", str(files.cert), "--ssl-keyfile", str(files.key), "--http3",
                          "--http3-retry", "--http3-0rtt", "--http3-alt-svc-max-age", "60",
                          "--bind", "127.0.0.1:8443", "--bind", "quic://127.0.0.1:9443"], environ={})
    assert (config.http3, config.http3_retry, config.http3_0rtt, config.http3_alt_svc_max_age) == (True, True, True, 60)
    assert config.bind == ("127.0.0.1:8443", "quic://127.0.0.1:9443")


# -- where QUIC listens ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def bound(config: Config) -> Iterator[list[Any]]:
    listeners = bind_listeners(config, environ={})
    try:
        yield listeners
    finally:
        for done in listeners:
            done.sock.close()


def test_http3_pairs_with_each_tls_tcp_listener_on_its_real_port(files: ServerFiles, tmp_path: Path) -> None:
    config = h3_config(files, http3=True, bind=("127.0.0.1:0", "proxy+127.0.0.1:0", f"unix:{tmp_path}/a.sock",
                                                "uwsgi://127.0.0.1:0", "quic://127.0.0.1:0"))
    with bound(config) as listeners:
        port = listeners[0].sock.getsockname()[1]
        assert quic.quic_addresses(config, listeners) == [("127.0.0.1", 0), ("127.0.0.1", port)]


def test_http3_with_nothing_to_pair_with_is_one_line(files: ServerFiles, tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as inherited:  # --fd of a Unix socket: only seen once bound
        inherited.bind(str(tmp_path / "s.sock"))
        config = h3_config(files, http3=True, fd=os.dup(inherited.fileno()))  # the listener owns its copy
        with bound(config) as listeners, pytest.raises(StartupError, match=r"^http3: none of the listening sockets"):
            quic.quic_addresses(config, listeners)


def test_quic_binds_alone_without_http3(files: ServerFiles) -> None:
    config = h3_config(files, bind=("127.0.0.1:0", "quic://127.0.0.1:4433", "quic://127.0.0.1:4433"))
    with bound(config) as listeners:
        assert quic.quic_addresses(config, listeners) == [("127.0.0.1", 4433)]  # once; no pairing without --http3
    assert quic.quic_addresses(h3_config(files), []) == []


def test_bind_udp_and_a_port_in_use_is_one_line() -> None:
    with quic.bind_udp("127.0.0.1", 0, reuse_port=False) as sock:
        assert sock.type == socket.SOCK_DGRAM and not sock.getblocking()
        port = sock.getsockname()[1]
        with pytest.raises(StartupError, match=r"^cannot bind UDP 127\.0\.0\.1:\d+ for HTTP/3: .*another server") \
                as info:
            quic.bind_udp("127.0.0.1", port, reuse_port=False)
        assert "\n" not in str(info.value)


def test_workers_share_a_port_with_so_reuseport() -> None:
    with quic.bind_udp("127.0.0.1", 0, reuse_port=True) as first:
        port = first.getsockname()[1]
        with quic.bind_udp("127.0.0.1", port, reuse_port=True) as second:
            assert second.getsockname()[1] == port
            assert second.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            with pytest.raises(StartupError):  # the master's probe sees the port taken, group or not
                quic.probe([("127.0.0.1", port)])
            assert quic.probe([("127.0.0.1", port)], reuse_port=True) == [("127.0.0.1", port)]  # --reuse-port


def test_probe_resolves_port_zero_and_frees_the_port() -> None:
    [(host, port)] = quic.probe([("127.0.0.1", 0)])
    assert host == "127.0.0.1" and port > 0
    with quic.bind_udp(host, port, reuse_port=False):  # closed again: free for the workers
        pass


def test_ipv6_wildcard_takes_ipv4_too() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sock = quic.bind_udp("::", 0, reuse_port=False)
    except StartupError:
        pytest.skip("no IPv6 here")
    with sock:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


def test_unresolvable_host_is_one_line() -> None:
    with pytest.raises(StartupError, match="cannot resolve the QUIC host"):
        quic.bind_udp("no-such-host.invalid", 0, reuse_port=False)


def test_worker_setup_carries_the_addresses() -> None:
    setup = WorkerSetup(config=Config(app="m:a"), socket_fds=(), report_fd=5, master_pid=1, number=1,
                        max_requests=None, quic=(("127.0.0.1", 8443), ("::", 9443)))
    assert WorkerSetup.from_json(setup.to_json()) == setup


def test_describe_and_alt_svc() -> None:
    assert quic.describe(("127.0.0.1", 8443)) == "quic://127.0.0.1:8443"
    assert quic.describe(("::1", 8443)) == "quic://[::1]:8443"
    assert quic.alt_svc([8443], 86400) == 'h3=":8443"; ma=86400'
    assert quic.alt_svc([8443, 9443, 8443], 60) == 'h3=":8443"; ma=60, h3=":9443"; ma=60'
    assert quic.alt_svc([8443], 0) is None
    assert quic.alt_svc([], 86400) is None


# -- aioquic's configuration -------------------------------------------------------------------------------------


def test_configuration_from_config(files: ServerFiles) -> None:
    config = h3_config(files, http3=True, h2_initial_window_size=65536, timeout_keep_alive=75)
    configuration = quic.quic_configuration(config)
    assert configuration.is_client is False
    assert configuration.alpn_protocols == ["h3"]
    assert configuration.max_stream_data == 65536
    assert configuration.max_data == quic.CONNECTION_WINDOW
    assert configuration.idle_timeout == 75
    assert configuration.verify_mode == ssl.CERT_NONE
    assert configuration.max_datagram_frame_size is None
    leaf = configuration.certificate.public_bytes(serialization.Encoding.PEM).decode()
    assert leaf == files.leaf_pem
    assert configuration.certificate_chain == []  # trustme's leaf comes alone
    public = configuration.private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    assert public == configuration.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert quic.quic_configuration(h3_config(files, http3=True)).idle_timeout == quic.QUIC_IDLE_TIMEOUT
    assert quic.quic_configuration(h3_config(files, http3=True, timeout_request=300)).idle_timeout == 300


def test_configuration_with_a_chain_and_the_key_in_the_certificate_file(tmp_path: Path) -> None:
    import trustme

    intermediate = trustme.CA().create_child_ca()
    leaf = intermediate.issue_cert("127.0.0.1")
    combined = tmp_path / "combined.pem"
    combined.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems) + leaf.private_key_pem.bytes())
    configuration = quic.quic_configuration(Config(app="m:a", http3=True, ssl_certfile=str(combined)))
    assert len(configuration.certificate_chain) == 1  # the intermediate follows the leaf
    assert configuration.private_key is not None


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL])
def test_configuration_with_an_encrypted_key(files: ServerFiles, tmp_path: Path,
                                             fmt: serialization.PrivateFormat) -> None:
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt,
                                            serialization.BestAvailableEncryption(b"s3cret")))
    config = Config(app="m:a", http3=True, ssl_certfile=str(files.cert), ssl_keyfile=str(encrypted),
                    ssl_keyfile_password="s3cret")
    assert quic.quic_configuration(config).private_key is not None
    with pytest.raises(ConfigError, match="aioquic cannot use the certificate"):
        quic.quic_configuration(config.replace(ssl_keyfile_password="wrong"))


def test_configuration_errors_are_config_errors(files: ServerFiles, tmp_path: Path) -> None:
    config = h3_config(files, http3=True)
    (tmp_path / "nokey.pem").write_text(files.cert.read_text())
    with pytest.raises(ConfigError, match="PEM private key"):
        quic.quic_configuration(config.replace(ssl_keyfile=str(tmp_path / "nokey.pem")))
    with pytest.raises(ConfigError, match="cannot read"):
        quic.quic_configuration(config.replace(ssl_keyfile=str(tmp_path / "missing.key")))


def test_certificates_reload_into_the_same_configuration(files: ServerFiles, tmp_path: Path) -> None:
    configuration = quic.quic_configuration(h3_config(files, http3=True))
    first = configuration.certificate
    other = server_files(tmp_path, name="other")
    quic.load_certificate(configuration, h3_config(other, http3=True))
    assert configuration.certificate != first
    assert configuration.certificate.public_bytes(serialization.Encoding.PEM).decode() == other.leaf_pem


# -- the tls extension -------------------------------------------------------------------------------------------


def test_tls_extension_has_the_tcp_shape(files: ServerFiles) -> None:
    extension = quic.tls_extension(files.leaf_pem)
    facts = extension([], 0x1301)
    assert facts == {"server_cert": files.leaf_pem, "client_cert_chain": [], "client_cert_name": None,
                     "client_cert_error": None, "tls_version": 0x0304, "cipher_suite": 0x1301}
    assert set(facts) == set(tls.tls_facts(None, [], None, None, None))


def test_tls_extension_with_a_client_chain(files: ServerFiles) -> None:
    alice = client_cert(files.ca)
    ders = [ssl.PEM_cert_to_DER_cert(blob.bytes().decode()) for blob in alice.cert_chain_pems]
    facts = quic.tls_extension(None)(ders, None)
    assert facts["client_cert_chain"] == [ssl.DER_cert_to_PEM_cert(der) for der in ders]
    assert "CN=alice" in facts["client_cert_name"] and "O=Example\\, Inc." in facts["client_cert_name"]


# -- the servers of one process ----------------------------------------------------------------------------------


class FakeQuicServer:
    """The wire's QuicServer as the contract describes it (plan17.md), recording what it is asked."""

    made: list[FakeQuicServer] = []

    def __init__(self, ctx: ServerContext, configuration: Any, *, tls_extension: Any, retry: bool = False,
                 session_tickets: bool = False) -> None:
        self.ctx, self.configuration, self.tls_extension = ctx, configuration, tls_extension
        self.retry, self.session_tickets = retry, session_tickets
        self.events: list[str] = []
        self.sock: socket.socket | None = None
        self.hang = False
        FakeQuicServer.made.append(self)

    async def start(self, sock: socket.socket) -> None:
        self.sock = sock
        self.events.append("start")

    def close(self) -> None:
        self.events.append("close")

    def abort(self) -> None:
        self.events.append("abort")

    async def wait_closed(self) -> None:
        if self.hang:
            await asyncio.sleep(10)
        self.events.append("closed")


@pytest.fixture
def fake_servers(monkeypatch: pytest.MonkeyPatch) -> type[FakeQuicServer]:
    FakeQuicServer.made = []
    monkeypatch.setattr(quic, "_server_class", lambda: FakeQuicServer)
    return FakeQuicServer


def context(config: Config) -> tuple[asyncio.AbstractEventLoop, ServerContext]:
    loop = asyncio.new_event_loop()
    ctx = ServerContext(config, loop, lambda ex: None, access_log=False)
    ctx.server_cert_pem = tls.server_cert_pem(config)
    return loop, ctx


def test_listeners_bind_start_and_stop_gracefully(files: ServerFiles, fake_servers: type[FakeQuicServer]) -> None:
    config = h3_config(files, http3=True, http3_retry=True, http3_0rtt=True)
    loop, ctx = context(config)
    try:
        front = quic.QuicListeners(ctx, [("127.0.0.1", 0), ("127.0.0.1", 0)], reuse_port=True)
        front.bind()
        loop.run_until_complete(front.start())
        assert len(fake_servers.made) == 2
        server = fake_servers.made[0]
        assert server.ctx is ctx and server.retry is True and server.configuration is front.configuration
        assert server.session_tickets is True
        assert server.tls_extension([], 0x1302)["server_cert"] == files.leaf_pem
        assert server.sock is front.sockets[0]
        assert front.where() == [f"quic://127.0.0.1:{port}" for port in front.ports]
        front.close()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert server.events == ["start", "close", "closed"]  # each server's wait starts at close()
        loop.run_until_complete(front.wait_closed(1.0))
        assert server.events == ["start", "close", "closed"]
        assert all(sock.fileno() == -1 for sock in front.sockets)
    finally:
        loop.close()


def test_a_stop_that_hangs_is_aborted(files: ServerFiles, fake_servers: type[FakeQuicServer]) -> None:
    loop, ctx = context(h3_config(files, http3=True))
    try:
        front = quic.QuicListeners(ctx, [("127.0.0.1", 0)], reuse_port=False)
        front.bind()
        loop.run_until_complete(front.start())
        assert fake_servers.made[0].session_tickets is False  # no tickets without --http3-0rtt
        fake_servers.made[0].hang = True
        front.close()
        loop.run_until_complete(front.wait_closed(0.05))
        assert fake_servers.made[0].events == ["start", "close", "abort"]
    finally:
        loop.close()


def test_a_failed_bind_closes_what_it_bound(files: ServerFiles) -> None:
    loop, ctx = context(h3_config(files, http3=True))
    try:
        with quic.bind_udp("127.0.0.1", 0, reuse_port=False) as taken:
            front = quic.QuicListeners(ctx, [("127.0.0.1", 0), ("127.0.0.1", taken.getsockname()[1])],
                                       reuse_port=False)
            with pytest.raises(StartupError):
                front.bind()
            assert front.sockets[0].fileno() == -1
    finally:
        loop.close()


def test_alt_svc_joins_the_http_wires_fixed_headers_only(files: ServerFiles) -> None:
    loop, ctx = context(h3_config(files, http3=True, date_header=False))
    try:
        assert ctx.fixed_headers == ctx.fixed_base == b"server: bascule\r\n"
        ctx.set_alt_svc('h3=":8443"; ma=86400')
        assert ctx.fixed_headers == b'server: bascule\r\nalt-svc: h3=":8443"; ma=86400\r\n'
        assert ctx.fixed_base == b"server: bascule\r\n"  # nginx in front of uwsgi/SCGI/FastCGI owns its ports
        ctx.set_alt_svc(None)
        assert ctx.fixed_headers == b"server: bascule\r\n"
    finally:
        loop.close()
