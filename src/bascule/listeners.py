"""Listening sockets: TCP (IPv4/IPv6), Unix domain sockets, and inherited file descriptors.

Binding happens before the event loop serves, so a port in use is one clear StartupError line. Sockets are
created here and handed to the loop, which lets a later supervisor bind once and share them with workers.
"""

from __future__ import annotations

import os
import socket
import stat

from bascule.config import Config
from bascule.errors import StartupError


def bind_sockets(config: Config) -> list[socket.socket]:
    """The sockets ``config`` asks for, bound and ready to listen."""
    if config.fd is not None:
        return [from_fd(config.fd)]
    if config.uds:
        return [bind_unix(config.uds)]
    return [bind_tcp(config.host, config.port)]


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


def bind_unix(path: str) -> socket.socket:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # a stale socket from a previous run
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot bind Unix socket {path!r}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve host {host!r}: {exc.strerror}; pass an IP address or a known name "
                           f"with --host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    """'http://127.0.0.1:8000' or 'unix:/path' for the startup log line."""
    if sock.family == socket.AF_UNIX:
        return f"{scheme}+unix:{sock.getsockname()}"
    return f"{scheme}://{format_address(sock.getsockname())}"
