"""The trust options (--forwarded-allow-ips, --proxy-headers, its mode and opt-ins, --proxy-protocol and
``--bind proxy+...``): defaults, every source (CLI, environment, TOML), one-line errors, and what reaches the
ServerContext and the listener specs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bascule.cli import load_config
from bascule.config import Config
from bascule.context import ServerContext
from bascule.errors import ConfigError
from bascule.listen.listeners import Listener, listener_specs
from bascule.specs import parse_listener


def context(config: Config) -> ServerContext:
    loop = asyncio.new_event_loop()
    try:
        return ServerContext(config, loop, lambda ex: None, access_log=False)
    finally:
        loop.close()


def test_defaults_trust_loopback_with_x_forwarded_headers_and_no_opt_ins() -> None:
    ctx = context(Config(app="a:b"))
    assert ctx.trusted_proxies.trusts_peer("127.0.0.1") and ctx.trusted_proxies.trusts_peer("::1")
    assert ctx.trusted_proxies.trusts_peer(None)  # a Unix-socket peer: on this host, like loopback
    assert not ctx.trusted_proxies.trusts_peer("10.0.0.1")
    resolver = ctx.proxy_headers
    assert resolver is not None and resolver.trusted is ctx.trusted_proxies
    assert (resolver.forwarded, resolver.host, resolver.port, resolver.prefix) == (False, False, False, False)
    assert listener_specs(Config(app="a:b")) == [Listener("tcp", ("127.0.0.1", 8000))]


def test_no_proxy_headers_leaves_no_resolver_but_keeps_the_trusted_list() -> None:
    ctx = context(Config(app="a:b", proxy_headers=False, forwarded_allow_ips="10.0.0.0/8"))
    assert ctx.proxy_headers is None and ctx.trusted_proxies.trusts_peer("10.1.2.3")


def test_mode_and_opt_ins_reach_the_resolver() -> None:
    ctx = context(Config(app="a:b", proxy_headers_mode="forwarded", forwarded_host=True))
    assert ctx.proxy_headers is not None and ctx.proxy_headers.forwarded and ctx.proxy_headers.host
    ctx = context(Config(app="a:b", forwarded_port=True, forwarded_prefix=True))
    assert ctx.proxy_headers is not None and ctx.proxy_headers.port and ctx.proxy_headers.prefix


def test_forwarded_allow_ips_environment_variable_is_below_bascule_sources(tmp_path: Path) -> None:
    env = {"FORWARDED_ALLOW_IPS": "10.0.0.1, unix"}
    assert load_config(["a:b"], env, str(tmp_path)).forwarded_allow_ips == "10.0.0.1, unix"
    assert load_config(["a:b", "--forwarded-allow-ips", "*"], env, str(tmp_path)).forwarded_allow_ips == "*"
    env["BASCULE_FORWARDED_ALLOW_IPS"] = "192.0.2.0/24"
    assert load_config(["a:b"], env, str(tmp_path)).forwarded_allow_ips == "192.0.2.0/24"
    (tmp_path / "bascule.toml").write_text('forwarded-allow-ips = "172.16.0.0/12"\n')
    assert load_config(["a:b"], {"FORWARDED_ALLOW_IPS": "10.0.0.1"}, str(tmp_path)).forwarded_allow_ips \
        == "172.16.0.0/12"


def test_cli_flags(tmp_path: Path) -> None:
    config = load_config(["a:b", "--no-proxy-headers", "--proxy-headers-mode", "forwarded", "--forwarded-host",
                          "--proxy-protocol", "--bind", "proxy+unix:/tmp/x.sock", "--bind", "[::1]:9000"], {},
                         str(tmp_path))
    assert (config.proxy_headers, config.proxy_headers_mode, config.forwarded_host, config.proxy_protocol) == \
        (False, "forwarded", True, True)
    # --proxy-protocol covers TCP listeners; proxy+ asks for it on one listener, a Unix socket included
    assert listener_specs(config) == [Listener("unix", "/tmp/x.sock", proxy_protocol=True),
                                      Listener("tcp", ("::1", 9000), proxy_protocol=True)]
    config = load_config(["a:b", "--proxy-protocol", "--uds", "/tmp/y.sock"], {}, str(tmp_path))
    assert listener_specs(config) == [Listener("unix", "/tmp/y.sock")]


@pytest.mark.parametrize(("spec", "expected"), [
    ("proxy+127.0.0.1:8000", (("tcp", ("127.0.0.1", 8000)), True)),
    ("proxy+[::1]:80", (("tcp", ("::1", 80)), True)),
    ("proxy+:80", (("tcp", ("", 80)), True)),
    ("proxy+fd://3", (("fd", 3), True)),
    ("proxy:8000", (("tcp", ("proxy", 8000)), False)),  # a host named proxy, as before
    ("unix:/run/proxy+x.sock", (("unix", "/run/proxy+x.sock"), False)),
])
def test_the_proxy_prefix_composes_with_every_bind_form(spec: str, expected: object) -> None:
    assert parse_listener(spec) == expected


@pytest.mark.parametrize(("options", "message"), [
    ({"forwarded_allow_ips": "10.0.0.1/8"}, "--forwarded-allow-ips: '10.0.0.1/8' has host bits set; write the "
                                            "range as 10.0.0.0/8"),
    ({"forwarded_allow_ips": "proxy.local"}, "'proxy.local' is not an IP address, a CIDR range, 'unix' or '*'"),
    ({"proxy_headers_mode": "x-forwarded-for"}, "proxy_headers_mode must be one of x-forwarded, forwarded"),
    ({"proxy_headers_mode": "forwarded", "forwarded_prefix": True},
     "forwarded_prefix applies to proxy_headers_mode x-forwarded only"),
    ({"proxy_headers_mode": "forwarded", "forwarded_port": True},
     "forwarded_port applies to proxy_headers_mode x-forwarded only"),
    ({"bind": ("proxy+",)}, "bind 'proxy+' needs an address after proxy+: write proxy+HOST:PORT"),
    ({"bind": ("proxy+nowhere",)}, "bind 'nowhere' must look like HOST:PORT"),
])
def test_bad_values_are_one_line_errors_that_say_what_to_do(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config(app="a:b", **options)  # type: ignore[arg-type]
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_proxy_protocol_is_for_http_listeners() -> None:
    with pytest.raises(ConfigError, match="the PROXY protocol is for HTTP listeners"):
        Config(app="a:b", bind=("proxy+uwsgi://127.0.0.1:3031",))
    config = Config(app="a:b", proxy_protocol=True, bind=("uwsgi://127.0.0.1:3031", "127.0.0.1:8000"))
    assert [spec.proxy_protocol for spec in listener_specs(config)] == [False, True]
