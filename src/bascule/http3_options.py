"""The HTTP/3 options' checks (--http3, --bind quic://, --http3-*), run by Config at construction.

Apart from bascule.config to keep that module to the options themselves; it calls :func:`check_http3` like
its own checks. The one look beyond the values is whether aioquic can be imported at all (no import, no I/O):
an HTTP/3 server without it would only fail once it binds, so the option says so at once, with the extra to
install.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from bascule.errors import ConfigError
from bascule.specs import PROXY_PREFIX, bind_wire, is_quic_bind, parse_listener, parse_quic_bind, tcp_binds

if TYPE_CHECKING:
    from bascule.config import Config

INSTALL_HINT = "pip install 'bascule[http3]'"


def aioquic_installed() -> bool:
    return importlib.util.find_spec("aioquic") is not None


def check_http3(config: Config) -> None:
    quic_binds = [spec for spec in config.bind if is_quic_bind(spec)]
    for spec in quic_binds:
        parse_quic_bind(spec)
    if config.http3_alt_svc_max_age < 0:
        raise ConfigError(f"http3_alt_svc_max_age must be >= 0 seconds (0 sends no Alt-Svc), got "
                          f"{config.http3_alt_svc_max_age}")
    if not (config.http3 or quic_binds):
        for name in ("http3_retry", "http3_0rtt"):
            if getattr(config, name):
                raise ConfigError(f"{name} only applies to HTTP/3: add --http3 or --bind quic://HOST:PORT")
        return
    what = "http3" if config.http3 else f"bind {quic_binds[0]!r}"
    if config.ssl_certfile is None:
        raise ConfigError(f"{what} needs TLS (QUIC is always encrypted): add --ssl-certfile (and --ssl-keyfile)")
    if config.ssl_cert_reqs:
        raise ConfigError(f"{what} cannot take ssl_cert_reqs {config.ssl_cert_reqs}: aioquic does not verify client "
                          f"certificates, so QUIC would let clients in without one; keep mTLS on TCP (drop --http3 "
                          f"and quic:// binds) or drop --ssl-cert-reqs")
    if config.http3 and not quic_binds and not _pairs_with_tcp(config):
        raise ConfigError("http3 opens a UDP listener beside each TLS TCP listener, and none is configured (Unix "
                          "sockets and proxy+ listeners have no QUIC twin): add --bind HOST:PORT or --bind "
                          "quic://HOST:PORT")
    if not aioquic_installed():
        raise ConfigError(f"{what} needs aioquic, which is not installed: {INSTALL_HINT}")


def _pairs_with_tcp(config: Config) -> bool:
    """Whether --http3 can find a TCP listener to pair with (an inherited --fd socket is looked at when bound)."""
    if not config.bind:
        return config.uds is None and not config.proxy_protocol
    for spec in tcp_binds(config.bind):
        endpoint, proxied = parse_listener(spec)
        wire = bind_wire(spec.removeprefix(PROXY_PREFIX))[0]
        if wire == "http" and not proxied and not config.proxy_protocol and endpoint.kind in ("tcp", "fd"):
            return True
    return False
