"""Option values that name things: listener addresses (--bind, --admin-bind), mounts, static directories and
extra headers, parsed into what the server uses.

Kept apart from :mod:`bascule.config` (the options and their validation): these parsers are also what the
listeners, the admin listener and the app table call on their own, and none of them needs a Config. Bad
values raise :class:`~bascule.errors.ConfigError` with a message that says what to write instead. No I/O.
"""

from __future__ import annotations

import ipaddress
from typing import Literal, NamedTuple

from bascule.errors import ConfigError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """``host`` names this machine only: 127.0.0.0/8, ::1, or localhost (an empty host means every address)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


ListenerKind = Literal["tcp", "unix", "fd", "systemd"]
Wire = Literal["http", "uwsgi", "scgi", "fastcgi"]
"""The protocol a listener speaks: HTTP (1.1, and 2 when on), or one of nginx's other upstream protocols:
uwsgi (``uwsgi_pass``), SCGI (``scgi_pass``), FastCGI (``fastcgi_pass``)."""
_WIRE_PREFIXES: tuple[tuple[str, Wire], ...] = (("uwsgi://", "uwsgi"), ("scgi://", "scgi"), ("fastcgi://", "fastcgi"))
"""How a listening socket comes to be: bound to a TCP address or a Unix path, inherited as --fd, or passed by
systemd (socket activation)."""


class Endpoint(NamedTuple):
    """Where a listener listens, as one --bind value (or --host/--port, --uds, --fd) names it.

    ``address`` is ``(host, port)`` for "tcp", a path for "unix", a file descriptor for "fd" and "systemd".
    :class:`bascule.listen.listeners.Listener` adds the per-listener flags.
    """

    kind: ListenerKind
    address: tuple[str, int] | str | int


def bind_wire(spec: str) -> tuple[Wire, str]:
    """A --bind value's protocol and the address after it: 'uwsgi://unix:/run/a.sock' -> ('uwsgi',
    'unix:/run/a.sock'); without a protocol prefix (or with 'http://') the listener speaks HTTP."""
    for prefix, wire in _WIRE_PREFIXES:
        if spec.startswith(prefix):
            return wire, spec[len(prefix):]
    return "http", spec.removeprefix("http://")


PROXY_PREFIX = "proxy+"
"""Marks a --bind value whose listener requires a PROXY protocol header (``proxy+HOST:PORT``,
``proxy+unix:PATH``): a prefix, so it composes with every other form; no host name contains ``+``."""


QUIC_PREFIX = "quic://"
"""Marks a --bind value that is a UDP listener for HTTP/3 (``quic://HOST:PORT``). Not a :data:`Wire`: a QUIC
listener is no stream socket the master binds and shares, but one UDP socket per serving process
(bascule.listen.quic), so the TCP listeners never see these values (:func:`tcp_binds`)."""


def is_quic_bind(spec: str) -> bool:
    return spec.startswith(QUIC_PREFIX)


def tcp_binds(binds: tuple[str, ...]) -> tuple[str, ...]:
    """The --bind values of stream listeners (TCP, Unix, fd): all but the ``quic://`` ones."""
    return tuple(spec for spec in binds if not spec.startswith(QUIC_PREFIX))


def parse_quic_bind(spec: str) -> tuple[str, int]:
    """'quic://HOST:PORT' -> (host, port): a UDP address only (no unix:, fd:// or proxy+: QUIC carries its
    own addresses, and a PROXY protocol header has no place in a datagram)."""
    rest = spec.removeprefix(QUIC_PREFIX)
    if rest.startswith(("unix:", "fd://", PROXY_PREFIX)) or "://" in rest:
        raise ConfigError(f"bind {spec!r}: a QUIC listener is a UDP HOST:PORT (no unix:, fd://, proxy+ or another "
                          f"protocol): write quic://HOST:PORT, for example quic://0.0.0.0:443")
    try:
        endpoint = parse_bind(rest)
    except ConfigError:
        raise ConfigError(f"bind {spec!r} must look like quic://HOST:PORT (port 0-65535) or quic://[::1]:PORT") \
            from None
    assert isinstance(endpoint.address, tuple)
    return endpoint.address


def parse_listener(spec: str) -> tuple[Endpoint, bool]:
    """A --bind value: its endpoint, and whether it asks for a PROXY protocol header (``proxy+`` prefix)."""
    if spec.startswith(PROXY_PREFIX):
        rest = spec[len(PROXY_PREFIX):]
        if not rest:
            raise ConfigError(f"bind {spec!r} needs an address after proxy+: write proxy+HOST:PORT")
        if rest.startswith(QUIC_PREFIX):
            raise ConfigError(f"bind {spec!r}: a QUIC listener takes no PROXY protocol header (a UDP datagram has "
                              f"no stream to put it on): drop the proxy+ prefix")
        if bind_wire(rest)[0] != "http":
            raise ConfigError(f"bind {spec!r}: the PROXY protocol is for HTTP listeners (nginx's uwsgi_pass, scgi_pass "
                              f"and fastcgi_pass send the client's address themselves): drop the proxy+ prefix")
        return parse_bind(rest), True
    return parse_bind(spec), False


def parse_bind(spec: str) -> Endpoint:
    """'HOST:PORT' -> ('tcp', (host, port)); 'unix:PATH' -> ('unix', path); 'fd://N' -> ('fd', n).

    An IPv6 address is written in brackets ('[::1]:8000'); an empty host (':8000') means every address.
    A protocol prefix (``uwsgi://``, :func:`bind_wire`) is not part of the address.
    """
    spec = bind_wire(spec)[1]
    if spec.startswith("unix:"):
        path = spec.removeprefix("unix:")
        if not path:
            raise ConfigError(f"bind {spec!r} needs a path: write unix:/run/app.sock")
        return Endpoint("unix", path)
    if spec.startswith("fd://"):
        digits = spec.removeprefix("fd://")
        if not digits.isdigit():
            raise ConfigError(f"bind {spec!r} needs a file descriptor number: write fd://3")
        return Endpoint("fd", int(digits))
    host, sep, port_text = spec.rpartition(":")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ConfigError(f"bind {spec!r}: write an IPv6 address in brackets, as [::1]:8000")
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"bind {spec!r}: write an IPv6 address in brackets, as [{host}]:{port_text}")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"bind {spec!r} must look like HOST:PORT (port 0-65535), [::1]:PORT, unix:PATH or fd://N")
    return Endpoint("tcp", (host, int(port_text)))


def parse_uds_mode(text: str) -> int:
    """'660' or '0o660' -> 0o660: permission bits only."""
    try:
        mode = int(text.removeprefix("0o"), 8)
    except ValueError:
        raise ConfigError(f"uds_mode must be octal permission bits such as 660, got {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"uds_mode must be octal permission bits between 0 and 777, got {text!r}")
    return mode


def parse_mount(spec: str) -> tuple[str, str]:
    """'/prefix=module:attr' -> ('/prefix', 'module:attr'); '/' mounts at the root."""
    prefix, sep, target = spec.partition("=")
    if not sep or not prefix.startswith("/") or not target:
        raise ConfigError(f"mount {spec!r} must look like /PREFIX=MODULE:ATTR, for example /api=main:app")
    prefix = prefix.rstrip("/")
    return prefix, target


def parse_static(spec: str) -> tuple[str, str]:
    """'/prefix=dir' -> ('/prefix', 'dir'); '/' serves at the root. The directory is checked when the server
    starts (bascule.static.handler.check_static_dir), not here: no I/O in this module."""
    prefix, sep, directory = spec.partition("=")
    if not sep or not prefix.startswith("/") or not directory:
        raise ConfigError(f"static {spec!r} must look like /PREFIX=DIR, for example /static=./staticfiles")
    if any(segment.startswith(".") for segment in prefix.split("/")) or any(c in prefix for c in "\\%\x00?#"):
        raise ConfigError(f"static {spec!r}: the prefix must be a plain path (no dot segments, %, ?, # or backslash)")
    return prefix.rstrip("/"), directory


def parse_header(spec: str) -> tuple[str, str]:
    """'Name: value' -> ('name', 'value'), refusing characters that could split a header."""
    name, sep, value = spec.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise ConfigError(f"header {spec!r} must look like NAME:VALUE, for example 'X-Frame-Options: DENY'")
    if any(c in spec for c in "\r\n\0") or not name.isascii() or " " in name:
        raise ConfigError(f"header {spec!r} contains characters not allowed in a header")
    return name.lower(), value
