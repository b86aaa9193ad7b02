"""Tests for bascule.trust: --forwarded-allow-ips, RFC 7239 Forwarded and X-Forwarded-* parsing, and the
resolution of a request's client, scheme, server, Host and prefix; with hypothesis fuzzing of the parsers
(bounded like tests/protocols/h1/test_fuzz_h1.py)."""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bascule.errors import ConfigError
from bascule.trust import (
    DEFAULT_FORWARDED_ALLOW_IPS,
    ProxyHeaders,
    TrustedProxies,
    parse_authority,
    parse_forwarded,
    parse_node,
    parse_prefix,
)

EXAMPLES = int(os.environ.get("BASCULE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

PEER = ("127.0.0.1", 50000)
SERVER = ("127.0.0.1", 8000)
Headers = list[tuple[bytes, bytes]]


def resolve(headers: Headers, allow: str = DEFAULT_FORWARDED_ALLOW_IPS, peer: tuple[str, int] | None = PEER,
            server: tuple[str, int] | None = SERVER, scheme: str = "http",
            **options: object) -> tuple[object, ...] | None:
    proxies = ProxyHeaders(TrustedProxies(allow), **options)  # type: ignore[arg-type]
    effective = proxies.resolve(peer, server, scheme, headers)
    return None if effective is None else effective.fields()


def client_of(headers: Headers, allow: str = DEFAULT_FORWARDED_ALLOW_IPS, **options: object) -> object:
    fields = resolve(headers, allow, **options)
    assert fields is not None
    return fields[0]


# -- --forwarded-allow-ips -------------------------------------------------------------------------------


def test_default_trusts_loopback_only() -> None:
    proxies = TrustedProxies()
    assert proxies.trusts_peer("127.0.0.1") and proxies.trusts_peer("::1")
    assert proxies.trusts_peer("::ffff:127.0.0.1")  # what a dual-stack socket reports for an IPv4 peer
    assert not proxies.trusts_peer("127.0.0.2") and not proxies.trusts_peer("10.0.0.1")
    assert not proxies.trusts_peer(None)  # a Unix-socket peer needs 'unix'


def test_ranges_unix_star_and_repeated_values() -> None:
    proxies = TrustedProxies(["10.0.0.0/8, 2001:db8::/32", " unix ,192.0.2.7"])
    assert proxies.trusts_peer("10.255.0.1") and proxies.trusts_peer("::ffff:10.1.2.3")
    assert proxies.trusts_peer("2001:db8:1::5") and not proxies.trusts_peer("2001:db9::1")
    assert proxies.trusts_peer("192.0.2.7") and not proxies.trusts_peer("192.0.2.8")
    assert proxies.trusts_peer(None) and not proxies.everyone
    assert not proxies.trusts_peer("not an address")
    star = TrustedProxies("*")
    assert star.trusts_peer("203.0.113.9") and star.trusts_peer(None)
    nobody = TrustedProxies("")
    assert not nobody.trusts_peer("127.0.0.1") and not nobody.trusts_peer(None)
    scoped = TrustedProxies("fe80::/10")
    assert scoped.trusts_peer("fe80::1%eth0")  # link-local peers come with their scope


@pytest.mark.parametrize(("spec", "fragment"), [
    ("10.0.0.1/8", "host bits set; write the range as 10.0.0.0/8"),
    ("2001:db8::1/32", "write the range as 2001:db8::/32"),
    ("localhost", "'localhost' is not an IP address"),
    ("1.2.3.4.5", "is not an IP address, a CIDR range, 'unix' or '*'"),
    ("10.0.0.0/33", "'10.0.0.0/33'"),
    ("127.0.0.1, nginx", "'nginx'"),
])
def test_bad_entries_say_what_to_write(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrustedProxies(spec)
    message = str(caught.value)
    assert fragment in message and "\n" not in message and message.startswith("--forwarded-allow-ips: ")


def test_star_trusts_peers_not_the_hops_named_in_headers() -> None:
    proxies = TrustedProxies("*")
    assert proxies.hop("127.0.0.1") == ("127.0.0.1", False)
    assert TrustedProxies("*,10.0.0.0/8").hop("10.1.1.1") == ("10.1.1.1", True)
    assert proxies.hop("2001:DB8::1") == ("2001:db8::1", False)  # normalised
    assert proxies.hop("fe80::1%eth0") is None and proxies.hop("example.com") is None


def test_caches_are_bounded() -> None:
    proxies = TrustedProxies("10.0.0.0/8", cache_size=8)
    for index in range(50):
        assert proxies.trusts_peer(f"10.0.0.{index}")
        assert proxies.hop(f"192.0.2.{index}") == (f"192.0.2.{index}", False)
    assert len(proxies._peers) <= 8 and len(proxies._hops) <= 8
    assert proxies.trusts_peer("10.0.0.1") and not proxies.trusts_peer("11.0.0.1")


# -- RFC 7239 syntax -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "elements"), [
    # the examples of RFC 7239 sections 4 and 7.4
    ('for="_gazonk"', [{"for": "_gazonk"}]),
    ('For="[2001:db8:cafe::17]:4711"', [{"for": "[2001:db8:cafe::17]:4711"}]),
    ("for=192.0.2.60;proto=http;by=203.0.113.43", [{"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}]),
    ("for=192.0.2.43, for=198.51.100.17", [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}]),
    ("for=192.0.2.43,for=\"[2001:db8:cafe::17]\",for=unknown",
     [{"for": "192.0.2.43"}, {"for": "[2001:db8:cafe::17]"}, {"for": "unknown"}]),
    # quoted strings keep their commas, semicolons, equals signs and escapes
    ('for="a,b;c=d";host="x\\"y\\\\z"', [{"for": "a,b;c=d", "host": 'x"y\\z'}]),
    ('by="\\a\\ \\\t"', [{"by": "a \t"}]),
    ('ext=""', [{"ext": ""}]),
    ('ext="caf\xe9"', [{"ext": "caf\xe9"}]),  # obs-text
    # names are case-insensitive, values are not; whitespace around , and ;
    ("FOR=1.2.3.4;PrOtO=HTTPS", [{"for": "1.2.3.4", "proto": "HTTPS"}]),
    ("  for=1.2.3.4 ;\tproto=https , \t for=5.6.7.8  ", [{"for": "1.2.3.4", "proto": "https"}, {"for": "5.6.7.8"}]),
    # empty list members and empty pairs are allowed
    (",, for=1.2.3.4 ,,", [{"for": "1.2.3.4"}]),
    ("for=1.2.3.4;;proto=http;", [{"for": "1.2.3.4", "proto": "http"}]),
    ("", []),
    (" , ; ", []),
])
def test_forwarded_grammar(value: str, elements: list[dict[str, str]]) -> None:
    assert parse_forwarded(value) == elements


@pytest.mark.parametrize("value", [
    "for",  # no =
    "for=",  # no value
    "=1.2.3.4",
    "for =1.2.3.4",  # no whitespace around =
    "for= 1.2.3.4",
    "for=[2001:db8::1]",  # brackets are not token characters: the value had to be quoted
    "for=1.2.3.4:80 proto=http",
    "for=1.2.3.4;for=5.6.7.8",  # a parameter twice in one element
    "for=1.2.3.4;FOR=5.6.7.8",
    'for="1.2.3.4',  # unterminated
    'for="1.2.3.4\\',
    'for="a\x00b"',  # control character
    'for="a\\\x01"',
    'for="a"b',
    "f\xf6r=1",
    'for="1.2.3.4"x',
])
def test_forwarded_malformed(value: str) -> None:
    assert parse_forwarded(value) is None


@pytest.mark.parametrize(("text", "strict", "node"), [
    ("192.0.2.43", True, ("192.0.2.43", 0)),
    ("192.0.2.43:8080", True, ("192.0.2.43", 8080)),
    ("[2001:db8:cafe::17]:4711", True, ("2001:db8:cafe::17", 4711)),
    ("[2001:db8:cafe::17]", True, ("2001:db8:cafe::17", 0)),
    ("unknown", True, ("", 0)),
    ("UNKNOWN:_port", True, ("", 0)),
    ("_hidden", True, ("", 0)),
    ("_hidden:_x.y-z", True, ("", 0)),
    ("192.0.2.43:_obf", True, ("192.0.2.43", 0)),
    ("2001:db8::1", True, None),  # IPv6 needs brackets in Forwarded
    ("2001:db8::1", False, ("2001:db8::1", 0)),  # but nginx writes it bare in X-Forwarded-For
    ("_hidden", False, None),
    ("[2001:db8::1]:443", False, ("2001:db8::1", 443)),
    ("1.2.3.4:65536", True, None),
    ("1.2.3.4:", True, None),
    ("1.2.3.4:123456", True, None),
    ("[2001:db8::1]x", True, None),
    ("[1.2.3.4]", True, None),
    ("[::1", True, None),
    ("_", True, None),
    ("_a/b", True, None),
    ("", True, None),
])
def test_nodes(text: str, strict: bool, node: tuple[str, int] | None) -> None:
    assert parse_node(text, strict) == node


@pytest.mark.parametrize(("text", "authority"), [
    ("example.com", ("example.com", None)),
    ("example.com:8443", ("example.com", 8443)),
    ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ("[::1]", ("::1", None)),
    ("192.0.2.1:80", ("192.0.2.1", 80)),
    ("", None), (":80", None), ("example.com:", None), ("example.com:99999", None), ("a b", None),
    ("evil.com/path", None), ("user@evil.com", None), ("[::1", None), ("[nope]", None), ("[fe80::1%25x]", None),
    ("a" * 254, None), ("example.com:80:80", None),
])
def test_authority(text: str, authority: tuple[str, int | None] | None) -> None:
    assert parse_authority(text) == authority


@pytest.mark.parametrize(("text", "prefix"), [
    ("/app", "/app"), ("/app/", "/app"), ("/", ""), ("/a/b-c_d~e", "/a/b-c_d~e"), ("/caf%C3%A9", "/café"),
    ("app", None), ("", None), ("/a//b", None), ("/a/../b", None), ("/./a", None), ("/a%2Fb", None),
    ("/a%00", None), ("/%ff", None), ("/a b", None), ("/a?b", None), ("/a#b", None), ("//evil.com", None),
])
def test_prefix(text: str, prefix: str | None) -> None:
    assert parse_prefix(text) == prefix


def test_bad_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not one of x-forwarded, forwarded"):
        ProxyHeaders(TrustedProxies(), mode="both")


# -- X-Forwarded-* ---------------------------------------------------------------------------------------


def test_untrusted_peer_or_no_headers_changes_nothing() -> None:
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")]
    assert resolve(headers, peer=("203.0.113.5", 1234)) is None
    assert resolve(headers, peer=None) is None  # a Unix-socket peer without 'unix'
    assert resolve([(b"host", b"example.com"), (b"forwarded", b"for=1.2.3.4")]) is None  # the other family
    assert resolve([]) is None


def test_client_is_the_rightmost_untrusted_hop() -> None:
    assert client_of([(b"x-forwarded-for", b"192.0.2.1")]) == ("192.0.2.1", 0)
    # the client made up "6.6.6.6"; nginx appended the address it saw
    assert client_of([(b"x-forwarded-for", b"6.6.6.6, 192.0.2.1")]) == ("192.0.2.1", 0)
    # two proxies: the inner one (10.0.0.2) is listed, so it is walked past
    assert client_of([(b"x-forwarded-for", b"6.6.6.6, 192.0.2.1, 10.0.0.2")],
                     "127.0.0.1,10.0.0.0/8") == ("192.0.2.1", 0)
    # every hop trusted: the leftmost is the client
    assert client_of([(b"x-forwarded-for", b"10.0.0.9,10.0.0.2")], "127.0.0.1,10.0.0.0/8") == ("10.0.0.9", 0)
    # repeated field lines are one list, in order
    assert client_of([(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"192.0.2.1, 10.0.0.2")],
                     "127.0.0.1,10.0.0.0/8") == ("192.0.2.1", 0)


def test_star_does_not_hand_the_choice_to_the_client() -> None:
    headers = [(b"x-forwarded-for", b"6.6.6.6, 192.0.2.1")]
    assert client_of(headers, "*") == ("192.0.2.1", 0)  # uvicorn would answer 6.6.6.6
    assert client_of([(b"x-forwarded-for", b"6.6.6.6, 192.0.2.1, 10.0.0.2")], "*,10.0.0.0/8") == ("192.0.2.1", 0)
    assert resolve(headers, "*", peer=("198.51.100.1", 5)) is not None  # any peer is believed


def test_forms_of_hops() -> None:
    assert client_of([(b"x-forwarded-for", b"2001:DB8::1")]) == ("2001:db8::1", 0)
    assert client_of([(b"x-forwarded-for", b"[2001:db8::1]:4711")]) == ("2001:db8::1", 4711)
    assert client_of([(b"x-forwarded-for", b"192.0.2.1:4711")]) == ("192.0.2.1", 4711)
    assert client_of([(b"x-forwarded-for", b"unknown")]) is None
    assert client_of([(b"x-forwarded-for", b" ,192.0.2.1,, ")]) == ("192.0.2.1", 0)


@pytest.mark.parametrize("value", [b"example.com", b"192.0.2.1 extra", b"unix:", b"_hidden", b"fe80::1%eth0",
                                   b"999.1.1.1", b"\xff\xfe", b""])
def test_malformed_rightmost_hop_keeps_the_raw_peer(value: bytes) -> None:
    fields = resolve([(b"x-forwarded-for", value), (b"x-forwarded-proto", b"https")])
    assert fields is not None
    assert fields[0] == PEER and fields[1] == "https"  # the proto is still the trusted peer's


def test_garbage_left_of_the_client_is_not_read() -> None:
    assert client_of([(b"x-forwarded-for", b"<script>, not-an-ip, 192.0.2.1")]) == ("192.0.2.1", 0)


def test_proto() -> None:
    def scheme(*values: bytes, forwarded_for: bytes | None = None, allow: str = DEFAULT_FORWARDED_ALLOW_IPS) -> object:
        headers = [(b"x-forwarded-proto", value) for value in values]
        if forwarded_for is not None:
            headers.append((b"x-forwarded-for", forwarded_for))
        fields = resolve(headers, allow)
        assert fields is not None
        return fields[1]

    assert scheme(b"https") == "https" and scheme(b"HTTPS") == "https" and scheme(b"wss") == "https"
    assert scheme(b"http") == "http" and scheme(b"ws") == "http"
    assert scheme(b"ftp") == "http" and scheme(b"") == "http" and scheme(b"https;x") == "http"  # ignored
    # one entry per hop: the one that goes with the client's hop, never one left of it
    assert scheme(b"https, http", forwarded_for=b"192.0.2.1, 10.0.0.2", allow="127.0.0.1,10.0.0.0/8") == "https"
    # a client-sent "https" with no hop of its own: the list is longer than the hops walked, right end wins
    assert scheme(b"https, http", forwarded_for=b"192.0.2.1") == "http"
    # proxies that overwrite rather than append: one entry for two hops
    assert scheme(b"https", forwarded_for=b"192.0.2.1, 10.0.0.2", allow="127.0.0.1,10.0.0.0/8") == "https"
    assert scheme(b"https", b"http") == "http"  # repeated lines: the rightmost


def test_host_port_prefix_are_opt_in() -> None:
    headers = [(b"host", b"127.0.0.1:8000"), (b"x-forwarded-for", b"192.0.2.1"), (b"x-forwarded-proto", b"https"),
               (b"x-forwarded-host", b"example.com"), (b"x-forwarded-port", b"8443"),
               (b"x-forwarded-prefix", b"/app/")]
    assert resolve(headers) == (("192.0.2.1", 0), "https", SERVER, None, None)
    assert resolve(headers, host=True) == (("192.0.2.1", 0), "https", ("example.com", 443), b"example.com", None)
    assert resolve(headers, host=True, port=True) == (("192.0.2.1", 0), "https", ("example.com", 8443),
                                                      b"example.com:8443", None)
    assert resolve(headers, port=True) == (("192.0.2.1", 0), "https", ("127.0.0.1", 8443), b"127.0.0.1:8443", None)
    assert resolve(headers, prefix=True) == (("192.0.2.1", 0), "https", SERVER, None, "/app")


def test_host_and_port_details() -> None:
    def fields(*headers: tuple[bytes, bytes], **options: object) -> tuple[object, ...] | None:
        return resolve(list(headers), **options)

    # the default port of the scheme is left out of the Host value
    assert fields((b"host", b"a.example"), (b"x-forwarded-proto", b"https"), (b"x-forwarded-port", b"443"),
                  port=True) == (PEER, "https", ("a.example", 443), b"a.example", None)
    assert fields((b"x-forwarded-host", b"[2001:db8::1]:8080"), host=True, port=True) == (
        PEER, "http", ("2001:db8::1", 8080), b"[2001:db8::1]:8080", None)
    assert fields((b"x-forwarded-host", b"[2001:db8::1]"), (b"x-forwarded-port", b"81"), host=True, port=True) == (
        PEER, "http", ("2001:db8::1", 81), b"[2001:db8::1]:81", None)
    # no Host header at all (HTTP/1.0): the port still reaches the server address
    assert fields((b"x-forwarded-port", b"8443"), port=True) == (PEER, "http", ("127.0.0.1", 8443), None, None)
    assert fields((b"x-forwarded-port", b"8443"), port=True, server=None) == (PEER, "http", None, None, None)
    # malformed values are ignored one by one
    for bad in (b"evil.com/x", b"a b", b"", b"x:99999"):
        assert fields((b"x-forwarded-host", bad), host=True) == (PEER, "http", SERVER, None, None)
    for bad_port in (b"0", b"65536", b"-1", b"80a", b""):
        assert fields((b"host", b"h"), (b"x-forwarded-port", bad_port), port=True) == (PEER, "http", SERVER, None, None)
    assert fields((b"x-forwarded-prefix", b"/a/../b"), prefix=True) == (PEER, "http", SERVER, None, None)


def test_unix_socket_peer() -> None:
    fields = resolve([(b"x-forwarded-for", b"192.0.2.1"), (b"x-forwarded-proto", b"https")], "unix", peer=None,
                     server=None)
    assert fields == (("192.0.2.1", 0), "https", None, None, None)


def test_x_forwarded_mode_ignores_forwarded() -> None:
    assert client_of([(b"forwarded", b"for=6.6.6.6"), (b"x-forwarded-for", b"192.0.2.1")]) == ("192.0.2.1", 0)


# -- Forwarded -------------------------------------------------------------------------------------------


def fwd(*values: bytes, allow: str = DEFAULT_FORWARDED_ALLOW_IPS, **options: object) -> tuple[object, ...] | None:
    return resolve([(b"forwarded", value) for value in values], allow, mode="forwarded", **options)


def test_forwarded_client_scheme_and_host() -> None:
    assert fwd(b'for="[2001:db8:cafe::17]:4711";proto=https;host=example.com', host=True) == (
        ("2001:db8:cafe::17", 4711), "https", ("example.com", 443), b"example.com", None)
    assert fwd(b"for=192.0.2.60;proto=http;by=203.0.113.43") == (("192.0.2.60", 0), "http", SERVER, None, None)
    assert fwd(b"For=192.0.2.60;PROTO=HTTPS;Host=example.com") == (("192.0.2.60", 0), "https", SERVER, None, None)
    assert fwd(b'for=192.0.2.60;host="example.com:8443"', host=True) == (
        ("192.0.2.60", 0), "http", ("example.com", 8443), b"example.com:8443", None)


def test_forwarded_walk() -> None:
    allow = "127.0.0.1,10.0.0.0/8"
    # each element's proto/host go with its for: the element of the client's hop is the one used
    assert fwd(b"for=6.6.6.6;proto=http, for=192.0.2.1;proto=https, for=10.0.0.2;proto=http", allow=allow) == (
        ("192.0.2.1", 0), "https", SERVER, None, None)
    # several field lines, joined in order; the client's own line is not read
    assert fwd(b"for=6.6.6.6;proto=https", b"for=192.0.2.1;proto=http", allow=allow) == (
        ("192.0.2.1", 0), "http", SERVER, None, None)
    assert fwd(b"for=10.0.0.9;proto=https, for=10.0.0.2", allow=allow) == (("10.0.0.9", 0), "https", SERVER, None,
                                                                            None)
    assert fwd(b"for=6.6.6.6, for=192.0.2.1", allow="*") == (("192.0.2.1", 0), "http", SERVER, None, None)


def test_forwarded_unknown_obfuscated_and_missing_for() -> None:
    assert fwd(b"for=unknown;proto=https") == (None, "https", SERVER, None, None)
    assert fwd(b'for="_hidden:_port"') == (None, "http", SERVER, None, None)
    assert fwd(b"proto=https") == (PEER, "https", SERVER, None, None)  # the proxy did not say: raw peer stays
    # a listed proxy that did not say whom it got the request from: the nearest known node stays
    assert fwd(b"proto=https, for=10.0.0.2", allow="127.0.0.1,10.0.0.0/8") == (("10.0.0.2", 0), "https", SERVER,
                                                                                None, None)


@pytest.mark.parametrize("value", [
    b'for="1.2.3.4',  # unterminated: the whole line is unreadable
    b"for=1.2.3.4;for=5.6.7.8",
    b"for=[2001:db8::1]",
    b"for=example.com",
    b'for="2001:db8::1"',
    b"for=1.2.3.4:99999",
])
def test_forwarded_malformed_where_the_client_is_keeps_everything_raw(value: bytes) -> None:
    assert fwd(value + b";proto=https") is None
    assert fwd(b"for=6.6.6.6;proto=https", value) is None


def test_forwarded_malformed_left_of_the_client_is_not_read() -> None:
    assert fwd(b'for="unterminated', b"for=192.0.2.1;proto=https") == (("192.0.2.1", 0), "https", SERVER, None, None)
    assert fwd(b" , ") is None


def test_forwarded_bad_proto_or_host_values_are_ignored_one_by_one() -> None:
    assert fwd(b"for=192.0.2.1;proto=gopher") == (("192.0.2.1", 0), "http", SERVER, None, None)
    assert fwd(b'for=192.0.2.1;proto=https;host="bad/host"', host=True) == (
        ("192.0.2.1", 0), "https", SERVER, None, None)
    assert fwd(b"for=192.0.2.1;host=bad/host", host=True) is None  # unquoted '/': the line is not Forwarded


def test_forwarded_mode_ignores_x_forwarded() -> None:
    headers = [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-proto", b"https"), (b"x-forwarded-prefix", b"/x"),
               (b"forwarded", b"for=192.0.2.1")]
    assert resolve(headers, mode="forwarded", prefix=True, port=True) == (("192.0.2.1", 0), "http", SERVER, None, None)
    assert resolve(headers[:3], mode="forwarded") is None


# -- fuzz ------------------------------------------------------------------------------------------------

_TEXT = st.text(st.sampled_from(list(' \t,;="\\[]:_.-%/abcfoprunkwxyz0123456789\xe9\x00')), max_size=60)
_TOKENS = st.text(st.sampled_from(list("!#$%&'*+-.^_`|~abcXYZ019")), min_size=1, max_size=8)
_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=12)
_HEADER_NAMES = st.sampled_from([b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                                 b"x-forwarded-port", b"x-forwarded-prefix", b"host", b"x-other"])
_HEADER_VALUES = st.one_of(
    st.binary(max_size=40),
    _TEXT.map(lambda text: text.encode("latin-1")),
    st.lists(st.sampled_from([b"192.0.2.1", b"10.0.0.2", b"127.0.0.1", b"[::1]:80", b"::1", b"unknown", b"_x",
                              b'"[2001:db8::1]:4711"', b"for=10.0.0.2", b"proto=https", b"https", b"/p", b"h:1"]),
             max_size=6).map(lambda parts: b", ".join(parts)),
)


@FUZZ
@given(_TEXT)
def test_fuzz_parse_forwarded_never_raises(value: str) -> None:
    elements = parse_forwarded(value)
    if elements is not None:
        assert all(element and all(name == name.lower() for name in element) for element in elements)


@FUZZ
@given(st.lists(st.dictionaries(_TOKENS, _VALUES, min_size=1, max_size=4), max_size=4), st.booleans())
def test_fuzz_forwarded_round_trip(elements: list[dict[str, str]], spaces: bool) -> None:
    """Whatever a sender can serialise (quoting every value, escaping quote and backslash), parses back."""
    lowered = [{name.lower(): value for name, value in element.items()} for element in elements]
    if any(len(low) != len(element) for low, element in zip(lowered, elements, strict=True)):
        return  # names that differ only in case: a duplicate, rightly refused
    quoted = [";".join(f'{name}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                       for name, value in element.items()) for element in elements]
    assert parse_forwarded((" , " if spaces else ",").join(quoted)) == lowered


@FUZZ
@given(st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=8), st.sampled_from(["x-forwarded", "forwarded"]),
       st.sampled_from(["127.0.0.1", "*", "127.0.0.1,10.0.0.0/8", "unix,::1"]),
       st.sampled_from([PEER, None, ("10.0.0.2", 1)]))
def test_fuzz_resolve_never_raises_and_only_believes_what_it_may(headers: Headers, mode: str, allow: str,
                                                                  peer: tuple[str, int] | None) -> None:
    proxies = ProxyHeaders(TrustedProxies(allow), mode=mode, host=True, port=True, prefix=True)
    effective = proxies.resolve(peer, SERVER, "http", headers)
    if effective is None:
        return
    assert proxies.trusted.trusts_peer(None if peer is None else peer[0])
    assert effective.scheme in ("http", "https")
    if effective.client is not None and effective.client != peer:
        host, port = effective.client
        ipaddress.ip_address(host)  # a real address, never a name or garbage
        assert 0 <= port <= 65535
        assert host.encode() in b"".join(value for _, value in headers).lower() or ":" in host
    if effective.server is not None:
        assert 0 < effective.server[1] <= 65535 or effective.server == SERVER
    if effective.host is not None:
        assert parse_authority(effective.host.decode("latin-1")) is not None
    if effective.root_path is not None:
        root = effective.root_path
        assert root == "" or (root.startswith("/") and not root.endswith("/"))
