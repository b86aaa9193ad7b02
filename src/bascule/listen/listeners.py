"""Listening sockets: TCP (IPv4/IPv6), Unix domain sockets, inherited file descriptors, systemd sockets.

Each socket has a spec, a :class:`Listener`: where it listens (the kind and address a --bind value names, as
:class:`~bascule.specs.Endpoint`) and the per-listener flags the front door (listen/accept.py) reads to
choose what runs between accept and the protocol: TLS, and a PROXY protocol header (issue 14). The socket
travels with its spec as a :class:`BoundListener`, from here to the serving code, and from the supervisor to
its workers.

Binding happens before the event loop serves, so a port in use is one clear StartupError line. Sockets are
created here and handed to the loop, which lets the supervisor bind once and share them with its workers:
one shared socket per address, so a worker that stops accepting leaves its queued connections to the
others instead of dropping them (which per-worker SO_REUSEPORT sockets would do).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from bascule.config import Config
from bascule.errors import ConfigError, StartupError
from bascule.specs import (
    PROXY_PREFIX,
    Endpoint,
    ListenerKind,
    Wire,
    bind_wire,
    parse_listener,
    parse_uds_mode,
    tcp_binds,
)

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): the first socket systemd passes

DEFAULT_UDS_MODE = 0o666  # read and write for everyone: see bind_unix


@dataclass(frozen=True, slots=True)
class Listener:
    """One listener's spec: where it listens, and the flags that say what runs between accept and the protocol.

    Declared once, like an option of :class:`~bascule.config.Config`: the front door reads these fields and
    nothing else about a listener, and they cross to the workers as they are (:meth:`to_json`).
    """

    kind: ListenerKind
    address: tuple[str, int] | str | int
    """(host, port) for "tcp", a path for "unix", a file descriptor for "fd" and "systemd"."""
    tls: bool = False
    """TLS on this listener (the server's certificate, --ssl-certfile): HTTPS and wss."""
    proxy_protocol: bool = False
    """A PROXY protocol v1/v2 header is required first, before TLS (--proxy-protocol, --bind proxy+...): the
    front door reads it in its pre-TLS step (listen/accept.py's Preamble)."""
    protocol: Wire = "http"
    """The wire: "http" (HTTP/1.1, HTTP/2 by preface or ALPN), or "uwsgi", "scgi", "fastcgi" (``--bind
    uwsgi://...``: nginx's uwsgi_pass, scgi_pass, fastcgi_pass; never TLS)."""

    @classmethod
    def at(cls, endpoint: Endpoint, *, tls: bool = False, proxy_protocol: bool = False,
           protocol: Wire = "http") -> Listener:
        return cls(endpoint.kind, endpoint.address, tls and protocol == "http", proxy_protocol, protocol)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.kind, self.address)

    @property
    def scheme(self) -> str:
        """What the listener speaks, for the startup log line: the wire ('http', 'uwsgi', ...), 'https' for HTTP
        over TLS, and ``proxy+`` before either where a PROXY protocol header comes first ('proxy+https'), so the
        line says what a client must send. Derived from the fields alone: a new wire only needs its name."""
        wire = "https" if self.tls else self.protocol
        return PROXY_PREFIX + wire if self.proxy_protocol else wire

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "address": self.address, "tls": self.tls, "proxy_protocol": self.proxy_protocol,
                "protocol": self.protocol}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Listener:
        address = data["address"]
        return cls(data["kind"], tuple(address) if isinstance(address, list) else address,  # JSON has no tuples
                   bool(data["tls"]), bool(data["proxy_protocol"]), data.get("protocol", "http"))


class BoundListener(NamedTuple):
    """A listening socket and its spec, as the serving code takes them."""

    spec: Listener
    sock: socket.socket


def listener_specs(config: Config) -> list[Listener]:
    """The listeners ``config`` asks for (systemd's sockets, which replace them, are found at bind time)."""
    endpoints: list[tuple[Endpoint, bool, Wire]]
    if config.bind:
        endpoints = [(*parse_listener(spec), bind_wire(spec.removeprefix(PROXY_PREFIX))[0])
                     for spec in tcp_binds(config.bind)]  # quic:// ones are UDP: bascule.listen.quic
    elif config.fd is not None:
        endpoints = [(Endpoint("fd", config.fd), False, "http")]
    elif config.uds:
        endpoints = [(Endpoint("unix", config.uds), False, "http")]
    else:
        endpoints = [(Endpoint("tcp", (config.host, config.port)), False, "http")]
    return [Listener.at(endpoint, tls=config.tls_enabled,
                        proxy_protocol=proxied or wants_proxy_protocol(config, endpoint, wire), protocol=wire)
            for endpoint, proxied, wire in endpoints]


def wants_proxy_protocol(config: Config, endpoint: Endpoint, wire: Wire = "http") -> bool:
    """--proxy-protocol: every HTTP listener but Unix sockets (a local proxy on a Unix socket hides no address;
    ``--bind proxy+unix:PATH`` asks for the header there explicitly; uwsgi_pass sends REMOTE_ADDR instead)."""
    return config.proxy_protocol and endpoint.kind != "unix" and wire == "http"


def bind_listeners(config: Config, environ: MutableMapping[str, str] | None = None) -> list[BoundListener]:
    """The sockets ``config`` asks for (or systemd passed), bound and ready to listen, each with its spec.

    On error, the sockets already bound are closed, so a half-started server holds no port.
    """
    activated = systemd_sockets(os.environ if environ is None else environ)
    if activated:
        if tcp_binds(config.bind) or config.uds is not None or config.fd is not None:
            for sock in activated:
                sock.close()
            raise ConfigError(f"systemd passed {len(activated)} socket(s) (LISTEN_FDS), which replace --bind, "
                              f"--uds and --fd: drop those options, or the socket unit")
        return [BoundListener(Listener("systemd", sock.fileno(), config.tls_enabled, config.proxy_protocol), sock)
                for sock in activated]
    mode = parse_uds_mode(config.uds_mode) if config.uds_mode is not None else DEFAULT_UDS_MODE
    bound: list[BoundListener] = []
    try:
        for spec in listener_specs(config):
            where = spec.address
            if spec.kind == "fd" and isinstance(where, int):
                bound.append(BoundListener(spec, from_fd(where)))
            elif spec.kind == "unix" and isinstance(where, str):
                bound.append(BoundListener(spec, bind_unix(where, mode)))
            elif isinstance(where, tuple):
                bound.append(BoundListener(spec, bind_tcp(where[0], where[1], reuse_port=config.reuse_port)))
    except BaseException:
        for done in bound:
            done.sock.close()
        raise
    return bound


def bind_sockets(config: Config, environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The sockets of :func:`bind_listeners`, without their specs."""
    return [bound.sock for bound in bind_listeners(config, environ)]


def systemd_sockets(environ: MutableMapping[str, str]) -> list[socket.socket]:
    """The sockets systemd passed to this process (socket activation), as sd_listen_fds(unset=1) does.

    LISTEN_PID must name this process (the variables may have been inherited from a parent they were
    meant for). The variables are removed either way, so that workers and the app's own child processes
    do not take the sockets for theirs.
    """
    pid_text, count_text = environ.pop("LISTEN_PID", None), environ.pop("LISTEN_FDS", None)
    environ.pop("LISTEN_FDNAMES", None)
    if pid_text is None or count_text is None:
        return []
    try:
        pid, count = int(pid_text), int(count_text)
    except ValueError:
        raise StartupError(f"LISTEN_PID={pid_text!r} / LISTEN_FDS={count_text!r} from systemd are not numbers") \
            from None
    if pid != os.getpid() or count < 1:
        return []
    return [from_fd(fd) for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)]


def from_fd(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise StartupError(f"cannot use file descriptor {fd} as a socket: {exc.strerror}; pass an open, "
                           f"bound socket with --fd") from None
    if sock.type != socket.SOCK_STREAM:
        raise StartupError(f"file descriptor {fd} is not a stream socket")
    sock.setblocking(False)
    return sock


def bind_unix(path: str, mode: int = DEFAULT_UDS_MODE) -> socket.socket:
    """Bind ``path``, replacing a stale socket file; ``mode`` is applied before anyone can connect.

    The default is 0o666, as uvicorn's: a socket left to the umask (often 0o755) refuses the proxy's
    worker, which runs as another user (nginx's 502 "Permission denied"). --uds-mode tightens it.
    """
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # a stale socket from a previous run
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)  # before listen(): nobody connects through looser permissions meanwhile
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot bind Unix socket {path!r}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def owned_unix_paths(config: Config) -> list[str]:
    """Paths of the Unix sockets bascule itself binds for ``config`` (not inherited ones), to remove at exit."""
    return [str(spec.address) for spec in listener_specs(config) if spec.kind == "unix"]


def remove_unix_sockets(config: Config) -> None:
    """Remove the socket files we bound (not those inherited with --fd), as uvicorn and gunicorn do."""
    for path in owned_unix_paths(config):
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)


def bind_tcp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve host {host!r}: {exc.strerror}; pass an IP address or a known name "
                           f"with --host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        if not hasattr(socket, "SO_REUSEPORT"):
            sock.close()
            raise StartupError("--reuse-port: this platform has no SO_REUSEPORT")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6 and address[0] == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # '::' means every address, v4 too
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = " (is another server running? pick another --port)" if exc.errno == 98 else ""
        raise StartupError(f"cannot bind {format_address(address)}: {exc.strerror}{hint}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def format_address(address: object) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


def describe(sock: socket.socket, scheme: str = "http") -> str:
    """'http://127.0.0.1:8000', 'proxy+https://[::1]:8443' or 'uwsgi+unix:/path' for the startup log line
    (``scheme``: :attr:`Listener.scheme`)."""
    if sock.family == socket.AF_UNIX:
        return f"{scheme}+unix:{sock.getsockname()}"
    return f"{scheme}://{format_address(sock.getsockname())}"
