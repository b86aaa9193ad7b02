"""HTTP/3's front door: the UDP sockets, aioquic's configuration from the options, the Alt-Svc value, and the
QUIC servers of one serving process (the wire itself is bascule.protocols.h3).

Where QUIC listens: on every ``--bind quic://HOST:PORT``, and with ``--http3`` beside every TLS TCP listener
that faces clients directly (not a Unix socket, not proxy+: a PROXY protocol header has no datagram to ride
on), on the host and port that listener actually got, so ``--port 0`` pairs too.

Why one UDP socket per serving process, unlike TCP's shared listening sockets: a QUIC connection is a flow of
datagrams, not an accepted socket, and the process that holds its state must see every one of them. A socket
shared by workers would hand each datagram to whichever worker reads first. So each worker binds its own with
SO_REUSEPORT, and the kernel keeps a flow (the client's address and port) on one socket by hashing it. The
master binds each address once, without SO_REUSEPORT, before any worker starts: a port another process holds
(reuse-port group or not) is then one StartupError line, and the probe resolves a port 0. It closes the probe
at once, since a socket in the group that nobody reads would swallow the flows hashed to it. The hash is over
the sockets of the group, so when the set of workers changes (a reload, a replaced worker) some flows move to
another worker, which does not know them: those connections are cut, and their clients reconnect
(docs/http3.md). Nothing here can steer datagrams by connection id; that would take an eBPF program.

aioquic is imported only when a QUIC listener is configured: bascule without the http3 extra never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bascule import tls
from bascule.config import Config
from bascule.errors import ConfigError, StartupError
from bascule.listen.listeners import BoundListener, format_address
from bascule.specs import is_quic_bind, parse_quic_bind

if TYPE_CHECKING:
    from aioquic.quic.configuration import QuicConfiguration

    from bascule.context import ServerContext
    from bascule.protocols.h3.endpoint import QuicServer

_log = logging.getLogger("bascule.error")

Address = tuple[str, int]
TlsExtension = Callable[[list[bytes], "int | None"], dict[str, Any]]

QUIC_IDLE_TIMEOUT = 60.0
"""The QUIC idle timeout's floor, in seconds: a connection with no packet either way for this long is gone.
The wire closes idle keep-alive connections itself (--timeout-keep-alive); this is only the transport's
backstop, so it must outlast the wire's own silence limits and --timeout-request, or a waiting request would
lose its connection before the wire could answer it (aioquic's default, and at least each of those limits)."""
CONNECTION_WINDOW = 1 << 20
"""Request body bytes a client may have in flight on one connection (QUIC max_data), as HTTP/2's connection
window (bascule.protocols.h2): a stream's own window is --h2-initial-window-size."""
UDP_BUFFER = 1 << 21
"""SO_RCVBUF/SO_SNDBUF asked for (the kernel caps it at net.core.rmem_max/wmem_max): a burst of Initials or a
fast upload must not overflow the default ~200 KiB while the loop is busy; a dropped datagram costs a
retransmission round trip."""
CLOSE_WAIT = 2.0
"""Seconds a stop waits, after the drain, for the last QUIC packets (CONNECTION_CLOSE) to be sent."""
TLS13 = 0x0304  # QUIC always runs TLS 1.3 (RFC 9001)

_PRIVATE_KEY_PEM = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.DOTALL)


# -- where -------------------------------------------------------------------------------------------------------


def quic_addresses(config: Config, listeners: Sequence[BoundListener]) -> list[Address]:
    """The UDP addresses this server listens on for HTTP/3: the quic:// binds, then with --http3 the address
    of each TLS TCP listener that faces clients (the socket's own, so a port 0 is the port it got)."""
    found = [parse_quic_bind(spec) for spec in config.bind if is_quic_bind(spec)]
    if config.http3:
        for bound in listeners:
            spec = bound.spec
            if spec.protocol != "http" or not spec.tls or spec.proxy_protocol:
                continue
            if bound.sock.family in (socket.AF_INET, socket.AF_INET6):
                host, port = bound.sock.getsockname()[:2]
                found.append((host, port))
        if not found:  # inherited sockets (--fd, systemd) that are Unix or proxied: no silent HTTP/1-only start
            raise StartupError("http3: none of the listening sockets is a TLS TCP listener facing clients, so no UDP "
                               "listener pairs with one; add --bind quic://HOST:PORT")
    return list(dict.fromkeys(found))


def bind_udp(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A UDP socket bound to ``host:port`` (every address, v4 too, for '::' and ''), non-blocking."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve the QUIC host {host!r}: {exc.strerror}; pass an IP address") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and address[0] == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
        sock.bind(address)
    except (OSError, AttributeError) as exc:  # AttributeError: no SO_REUSEPORT on this platform
        sock.close()
        reason = getattr(exc, "strerror", None) or str(exc)
        hint = " (is another server using this UDP port? pick another port)" if getattr(exc, "errno", 0) == 98 \
            else ""
        raise StartupError(f"cannot bind UDP {format_address(address)} for HTTP/3: {reason}{hint}") from None
    sock.setblocking(False)
    return sock


def probe(addresses: Sequence[Address], *, reuse_port: bool = False) -> list[Address]:
    """The master's check before it forks: bind each address alone (without SO_REUSEPORT, a port any process
    holds fails here, as one line) and close it again; a port 0 comes back as the port the kernel chose.
    ``reuse_port`` (--reuse-port): joining another server's group is what was asked for (a blue/green switch)."""
    resolved = []
    for host, port in addresses:
        with bind_udp(host, port, reuse_port=reuse_port) as sock:
            resolved.append((host, sock.getsockname()[1]))
    return resolved


def describe(address: Address) -> str:
    """'quic://127.0.0.1:8443' for the startup line: what --bind would say."""
    return f"quic://{format_address(address)}"


def alt_svc(ports: Sequence[int], max_age: int) -> str | None:
    """The Alt-Svc field value pointing clients of the TCP listeners at HTTP/3 (RFC 7838, RFC 9114 3.1.1), or
    None with max_age 0 or no port. Only the port: the alternative is on the host the client already reached."""
    if max_age <= 0 or not ports:
        return None
    return ", ".join(f'h3=":{port}"; ma={max_age}' for port in dict.fromkeys(ports))


# -- aioquic's configuration -------------------------------------------------------------------------------------


def quic_configuration(config: Config) -> QuicConfiguration:
    """aioquic's server configuration from the options: the certificate chain and key (with its password),
    ALPN h3, the idle timeout, the flow-control windows. Client certificates are not asked for: aioquic does not
    verify them, and the options refuse --ssl-cert-reqs with HTTP/3 (bascule.http3_options).

    Raises ConfigError, with one line, when aioquic cannot use the files (the TLS checks of bascule.tls have
    read them first, so what is left is mostly a key type aioquic does not sign with).
    """
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration

    windows = config.h2_initial_window_size
    configuration = QuicConfiguration(
        is_client=False,
        alpn_protocols=list(H3_ALPN),
        idle_timeout=max(QUIC_IDLE_TIMEOUT, config.timeout_keep_alive, config.timeout_body_idle,
                         config.timeout_request_head, config.timeout_request or 0.0),
        max_data=max(CONNECTION_WINDOW, windows),
        max_stream_data=windows,
        max_datagram_frame_size=None,
        verify_mode=ssl.CERT_NONE,
    )
    load_certificate(configuration, config)
    return configuration


def load_certificate(configuration: QuicConfiguration, config: Config) -> None:
    """Put the certificate chain and private key of ``config`` into ``configuration`` (also on SIGHUP: new
    connections take them from there, open ones keep theirs). The key may be in the certificate file, in any
    PEM form OpenSSL takes (PKCS#8, RSA, EC; encrypted with --ssl-keyfile-password)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    certfile, keyfile = config.ssl_certfile, config.ssl_keyfile
    if certfile is None:
        raise ConfigError("HTTP/3 needs TLS: add --ssl-certfile (and --ssl-keyfile)")
    source = keyfile or certfile
    try:
        with open(certfile, encoding="ascii", errors="replace") as fh:
            cert_text = fh.read()
        key_text = cert_text
        if keyfile is not None:
            with open(keyfile, encoding="ascii", errors="replace") as fh:
                key_text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the certificate {certfile!r} or key {source!r} for HTTP/3: "
                          f"{exc.strerror or exc}") from None
    pems = tls.pem_certificates(cert_text)
    key_match = _PRIVATE_KEY_PEM.search(key_text)
    if not pems or key_match is None:
        raise ConfigError(f"HTTP/3 needs a PEM certificate in {certfile!r} and a PEM private key in {source!r}")
    password = config.ssl_keyfile_password
    try:
        certificates = [x509.load_pem_x509_certificate(pem.encode("ascii")) for pem in pems]
        key = load_pem_private_key(key_match.group(0).encode("ascii"),
                                   password=password.encode() if password is not None else None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"aioquic cannot use the certificate {certfile!r} with the key {source!r} for HTTP/3: "
                          f"{exc}") from None
    configuration.certificate = certificates[0]
    configuration.certificate_chain = certificates[1:]
    configuration.private_key = key


def tls_extension(server_cert: str | None) -> TlsExtension:
    """The callable the wire asks, once per connection after the handshake, for the ASGI ``tls`` extension: the
    dict bascule.tls builds for TCP, from the peer's DER chain (leaf first) and the cipher suite number."""

    def extension(chain: list[bytes], cipher_suite: int | None) -> dict[str, Any]:
        name = None
        if chain:
            from cryptography import x509

            with contextlib.suppress(ValueError):
                name = x509.load_der_x509_certificate(chain[0]).subject.rfc4514_string()
        return tls.tls_facts(server_cert, [ssl.DER_cert_to_PEM_cert(der) for der in chain], name, TLS13,
                             cipher_suite)

    return extension


# -- the servers of one process ----------------------------------------------------------------------------------


def _server_class() -> type[QuicServer]:
    """The wire's QuicServer, imported when first needed (it imports aioquic)."""
    from bascule.protocols.h3.endpoint import QuicServer

    return QuicServer


class QuicListeners:
    """The HTTP/3 listeners of one serving process: bind, serve, stop gracefully.

    ``reuse_port``: a worker's sockets join their address's SO_REUSEPORT group (the master probed it); a
    server alone binds plainly (unless --reuse-port), so a port in use fails its start.
    """

    def __init__(self, ctx: ServerContext, addresses: Sequence[Address], *, reuse_port: bool) -> None:
        self.ctx = ctx
        self.addresses = list(addresses)
        self.reuse_port = reuse_port
        self.configuration: QuicConfiguration | None = None
        self.servers: list[QuicServer] = []
        self._closed: asyncio.Task[None] | None = None  # every server's wait_closed, from close() on
        self.sockets: list[socket.socket] = []

    def bind(self) -> None:
        """Bind every address (StartupError on the first that fails; those bound before are closed)."""
        try:
            for host, port in self.addresses:
                self.sockets.append(bind_udp(host, port, reuse_port=self.reuse_port))
        except BaseException:
            self._close_sockets()
            raise

    async def start(self) -> None:
        """Serve HTTP/3 on the bound sockets."""
        config = self.ctx.config
        self.configuration = quic_configuration(config)
        extension = tls_extension(self.ctx.server_cert_pem)
        server_class = _server_class()
        for sock in self.sockets:
            # --http3-0rtt: the wire keeps the tickets it issues, per process, each usable once (docs/http3.md)
            server = server_class(self.ctx, self.configuration, tls_extension=extension, retry=config.http3_retry,
                                  session_tickets=config.http3_0rtt)
            await server.start(sock)
            self.servers.append(server)

    @property
    def ports(self) -> list[int]:
        return [sock.getsockname()[1] for sock in self.sockets]

    def where(self) -> list[str]:
        return [describe((sock.getsockname()[0], sock.getsockname()[1])) for sock in self.sockets]

    def reload_certificates(self) -> None:
        """SIGHUP in a server alone: new QUIC connections get the certificate files as they are now; a broken
        replacement is logged and the previous certificate keeps serving (as bascule.tls does for TCP)."""
        if self.configuration is None:
            return
        try:
            load_certificate(self.configuration, self.ctx.config)
        except ConfigError as exc:
            _log.error("HTTP/3 certificate not reloaded, the previous one keeps serving: %s", exc)

    def close(self) -> None:
        """Graceful: no new connections, GOAWAY on every open one (they close once their streams are done).

        Each socket closes as soon as its own connections are done, not when the whole server has drained: until
        then it stays in its address's SO_REUSEPORT group, and the Initials of new clients the kernel hashes to it
        would go unanswered (a stopping server takes no new connections) while TCP requests finish elsewhere.
        """
        for server in self.servers:
            server.close()
        self._start_waiting()

    def _start_waiting(self) -> asyncio.Task[None]:
        if self._closed is None:
            self._closed = self.ctx.loop.create_task(self._wait_all())
        return self._closed

    async def _wait_all(self) -> None:
        await asyncio.gather(*(server.wait_closed() for server in self.servers))

    def abort(self) -> None:
        for server in self.servers:
            server.abort()
        self._close_sockets()
        if self._closed is not None:
            self._closed.cancel()

    async def wait_closed(self, timeout: float) -> None:
        """Wait for every connection's end and last packets, at most ``timeout`` seconds; then abort the rest."""
        if self.servers:
            try:
                await asyncio.wait_for(asyncio.shield(self._start_waiting()), timeout)
            except TimeoutError:
                _log.warning("HTTP/3: connections still open after the graceful stop; closing them now")
                self.abort()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
