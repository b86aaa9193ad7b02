"""ops/request_id.py: ids believed only from trusted peers and only when well formed, made otherwise, and the
request's header made to agree; the options that turn it on."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from bascule.config import Config
from bascule.context import ServerContext
from bascule.errors import ConfigError
from bascule.ops.request_id import MAX_LENGTH, POOL_IDS, RequestIds, sets_field, valid
from bascule.trust import TrustedProxies

HEX32 = re.compile(r"[0-9a-f]{32}")


class Ex:
    """The fields assign reads and writes."""

    def __init__(self, headers: list[tuple[bytes, bytes]], client: tuple[str, int] | None = ("127.0.0.1", 5000),
                 peer: tuple[str, int] | None = None) -> None:
        self.headers = headers
        self.client = client
        self.proxied = peer is not None
        self.peer = peer
        self.rid: str | None = None
        self.rid_header: bytes | None = None


def ids(trust: str = "127.0.0.1,::1") -> RequestIds:
    return RequestIds("X-Request-ID", TrustedProxies(trust))


@pytest.mark.parametrize(("value", "ok"), [
    (b"4bf92f3577b34da6a3ce929d0e0e4736", True),
    (b"f81d4fae-7dec-11d0-a765-00a0c91e6bf6", True),  # a UUID
    (b"Root=1-67891233-abcdef012345678912345678", True),  # an AWS trace id
    (b"a+b/c=_.:@~", True),
    (b"x", True),
    (b"x" * MAX_LENGTH, True),
    (b"x" * (MAX_LENGTH + 1), False),
    (b"", False),
    (b"a b", False),
    (b'a"b', False),
    (b"a\\b", False),
    (b"a,b", False),
    (b"a\x00b", False),
    (b"a\x1b[31m", False),
    (b"caf\xc3\xa9", False),
    (b"a\r\nx-admin: 1", False),
])
def test_valid(value: bytes, ok: bool) -> None:
    assert valid(value) is ok


def test_made_ids_are_random_hex_and_unique_across_pool_refills() -> None:
    made = ids()
    seen = [made.new_id() for _ in range(3 * POOL_IDS + 5)]
    assert all(HEX32.fullmatch(rid) for rid in seen)
    assert len(set(seen)) == len(seen)
    assert ids().new_id() != ids().new_id()


def test_a_trusted_peers_valid_id_is_kept() -> None:
    ex = Ex([(b"host", b"x"), (b"x-request-id", b"abc-123")])
    ids().assign(ex)
    assert (ex.rid, ex.rid_header) == ("abc-123", b"x-request-id")  # echoed under the configured name
    assert ex.headers == [(b"host", b"x"), (b"x-request-id", b"abc-123")]


@pytest.mark.parametrize("value", [b"has space", b"x" * (MAX_LENGTH + 1), b"a\x1bb", b""])
def test_a_trusted_peers_invalid_id_is_replaced(value: bytes) -> None:
    ex = Ex([(b"x-request-id", value), (b"accept", b"*/*")])
    ids().assign(ex)
    assert ex.rid is not None and HEX32.fullmatch(ex.rid)
    assert ex.headers == [(b"accept", b"*/*"), (b"x-request-id", ex.rid.encode())]  # in place: the app sees ours


def test_an_untrusted_peers_id_is_replaced() -> None:
    ex = Ex([(b"x-request-id", b"chosen-by-the-client")], client=("198.51.100.7", 4000))
    ids().assign(ex)
    assert ex.rid != "chosen-by-the-client" and ex.headers == [(b"x-request-id", ex.rid.encode())]  # type: ignore[union-attr]
    ex = Ex([(b"x-request-id", b"chosen")])  # loopback, but trust is off
    ids(trust="").assign(ex)
    assert ex.rid != "chosen"


def test_trust_is_the_connections_peer_not_the_client_a_proxy_named() -> None:
    # a trusted proxy on loopback named client 203.0.113.7: the id from that connection is the proxy's word
    ex = Ex([(b"x-request-id", b"from-proxy")], client=("203.0.113.7", 0), peer=("127.0.0.1", 5000))
    ids().assign(ex)
    assert ex.rid == "from-proxy"
    # an untrusted connection whose (unbelieved) client field would be trusted: replaced
    ex = Ex([(b"x-request-id", b"forged")], client=("127.0.0.1", 0), peer=("198.51.100.7", 5000))
    ids().assign(ex)
    assert ex.rid != "forged"


def test_unix_socket_peers_follow_the_unix_entry() -> None:
    ex = Ex([(b"x-request-id", b"via-socket")], client=None)
    ids(trust="unix").assign(ex)
    assert ex.rid == "via-socket"
    ex = Ex([(b"x-request-id", b"via-socket")], client=None)
    ids(trust="127.0.0.1").assign(ex)
    assert ex.rid != "via-socket"


def test_no_id_sent_one_is_added() -> None:
    ex = Ex([(b"host", b"x")])
    ids().assign(ex)
    assert ex.rid is not None and ex.headers == [(b"host", b"x"), (b"x-request-id", ex.rid.encode())]


def test_the_field_twice_is_believed_from_nobody_and_left_once() -> None:
    ex = Ex([(b"x-request-id", b"one"), (b"host", b"x"), (b"x-request-id", b"two"), (b"x-request-id", b"three")])
    ids().assign(ex)
    assert ex.rid is not None and ex.rid not in ("one", "two", "three")
    assert ex.headers == [(b"host", b"x"), (b"x-request-id", ex.rid.encode())]


def test_another_header_name() -> None:
    made = RequestIds("X-Correlation-ID", TrustedProxies("127.0.0.1"))
    ex = Ex([(b"x-correlation-id", b"corr-1"), (b"x-request-id", b"other")])
    made.assign(ex)
    assert (ex.rid, ex.rid_header) == ("corr-1", b"x-correlation-id")


def test_sets_field_in_any_case() -> None:
    assert not sets_field([(b"content-type", b"text/plain")], b"x-request-id")
    assert sets_field([(b"content-type", b"text/plain"), (b"X-Request-ID", b"the-apps")], b"x-request-id")
    assert sets_field([(b"x-request-id", b"the-apps")], b"x-request-id")


# -- options -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "on"), [
    ({}, False),
    ({"request_id": "on"}, True),
    ({"access_log_format": "json"}, True),  # auto
    ({"access_log_format": "json", "access_log": False}, False),
    ({"access_log_format": "json", "request_id": "off"}, False),
    ({"access_log_format": "{client} {status}"}, False),  # text lines: off
])
def test_when_ids_are_on(options: dict[str, Any], on: bool) -> None:
    config = Config(app="x:y", **options)
    assert config.request_ids is on
    loop = asyncio.new_event_loop()
    try:
        ctx = ServerContext(config, loop, lambda ex: None, access_log=False)
        assert (ctx.request_ids is not None) is on
    finally:
        loop.close()


@pytest.mark.parametrize("name", ["", "X Request", "X_Request_ID", "Host", "content-length", "a:b", "X-Request-ID\r\n",
                                  "Date", "server", "Content-Type", "Forwarded", "X-Forwarded-For",
                                  "x-forwarded-proto", "X-Real-IP", "Proxy-Authorization", "Sec-WebSocket-Key"])
def test_bad_header_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="request_id_header"):
        Config(app="x:y", request_id_header=name)


@pytest.mark.parametrize("name", ["X-Request-ID", "X-Correlation-ID", "Request-Id", "X-Amzn-Trace-Id"])
def test_usual_header_names_are_taken(name: str) -> None:
    assert Config(app="x:y", request_id_header=name).request_id_header == name


def test_bad_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="request_id"):
        Config(app="x:y", request_id="yes")
