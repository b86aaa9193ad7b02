"""protocols.request_head: the request-head rules HTTP/2 and HTTP/3 share, run through each wire's entry.

HTTP/2 reaches them through its HPACK decoder (blocks from the ``hpack`` library's encoder, a real peer's
bytes), HTTP/3 through h3.headers as its connection calls it (the size limits first). Each case must get
the same answer, message included, from both: the rules used to be two copies that could drift.
"""

from __future__ import annotations

from collections.abc import Callable

import hpack
import pytest

from bascule.protocols import request_head as rh
from bascule.protocols.exchange import Headers
from bascule.protocols.h2 import headers as h2h
from bascule.protocols.h3 import headers as h3h

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/a?b=1"), (b":authority", b"example.org")]
Parse = Callable[[Headers, bool], rh.RequestHead]


def via_h2(fields: Headers, connect_protocol: bool) -> rh.RequestHead:
    decoder = h2h.RequestDecoder(65536, connect_protocol=connect_protocol)
    return decoder.request(hpack.Encoder().encode(fields))


def via_h3(fields: Headers, connect_protocol: bool) -> rh.RequestHead:
    h3h.check_size(fields, h3h.Limits(100, 8190, 65536))
    return h3h.parse_request(fields, connect_protocol=connect_protocol)


WIRES = pytest.mark.parametrize("parse", [via_h2, via_h3], ids=["h2", "h3"])


def without(name: bytes) -> Headers:
    return [f for f in BASE if f[0] != name]


def replaced(name: bytes, value: bytes) -> Headers:
    return [(n, value if n == name else v) for n, v in BASE]


def test_both_wires_name_the_shared_types() -> None:
    assert h2h.MalformedRequest is h3h.MalformedRequest is rh.MalformedRequest
    assert h2h.RequestHead is h3h.RequestHead is rh.RequestHead


@WIRES
def test_a_request_is_split_with_host_from_authority_and_cookies_joined(parse: Parse) -> None:
    fields = [*BASE, (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2"), (b"content-length", b"3"),
              (b"expect", b"100-Continue"), (b"x-forwarded-for", b"10.0.0.1")]
    head = parse(fields, False)
    assert head == rh.RequestHead("GET", b"/a", b"b=1", [
        (b"host", b"example.org"), (b"accept", b"*/*"), (b"content-length", b"3"), (b"expect", b"100-Continue"),
        (b"x-forwarded-for", b"10.0.0.1"), (b"cookie", b"a=1; b=2")], 3, None, True, True)


@WIRES
def test_a_host_field_wins_over_authority_and_odd_methods_pass_as_text(parse: Parse) -> None:
    head = parse([*replaced(b":method", b"PROPFIND"), (b"host", b"other")], False)
    assert head.method == "PROPFIND" and head.headers == [(b"host", b"other")]


@WIRES
def test_plain_and_extended_connect(parse: Parse) -> None:
    head = parse([(b":method", b"CONNECT"), (b":authority", b"example.org:443")], False)
    assert (head.raw_path, head.protocol, head.headers) == (b"/", None, [(b"host", b"example.org:443")])
    extended = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), *BASE[1:]]
    assert parse(extended, True).protocol == b"websocket"


@WIRES
def test_options_star(parse: Parse) -> None:
    assert parse([(b":method", b"OPTIONS"), *replaced(b":path", b"*")[1:]], False).raw_path == b"*"


@WIRES
@pytest.mark.parametrize(("fields", "connect_protocol", "message"), [
    (without(b":method"), False, "missing :method"),
    (replaced(b":method", b"G T"), False, "invalid :method"),
    (replaced(b":method", b""), False, "invalid :method"),
    ([*BASE, (b":method", b"POST")], False, "unknown, duplicated or response pseudo-header field b':method'"),
    ([*BASE, (b":status", b"200")], False, "unknown, duplicated or response pseudo-header field b':status'"),
    ([*BASE, (b":protocol", b"websocket")], False, "unknown, duplicated or response pseudo-header field"),
    ([*BASE, (b":protocol", b"websocket")], True, ":protocol on a request other than CONNECT"),
    ([(b"accept", b"x"), *BASE], False, "pseudo-header field after a regular field"),
    ([(b":method", b"CONNECT"), (b":authority", b"h"), (b":path", b"/")], False, "a CONNECT request has"),
    ([(b":method", b"CONNECT")], False, "a CONNECT request has :authority"),
    (without(b":path"), False, "missing :scheme or :path"),
    (without(b":scheme"), False, "missing :scheme or :path"),
    (replaced(b":path", b""), False, "invalid :path"),
    (replaced(b":path", b"/a#frag"), False, "invalid :path"),
    (replaced(b":path", b"a"), False, "invalid :path"),
    (replaced(b":path", b"*"), False, "invalid :path"),  # "*" only with OPTIONS
    (replaced(b":path", b"/a b"), False, "invalid :path"),
    (replaced(b":path", b"/\xc3\xa9"), False, "invalid :path"),
    (replaced(b":authority", b"a\x00b"), False, "invalid :authority"),
    ([*BASE, (b"Accept", b"x")], False, "invalid header field name b'Accept'"),
    ([*BASE, (b"x", b" padded")], False, "invalid value in header field b'x'"),
    ([*BASE, (b"connection", b"close")], False, "connection-specific header field b'connection'"),
    ([*BASE, (b"te", b"gzip")], False, "te header field other than 'trailers'"),
    ([*BASE, (b"content-length", b"1x")], False, "invalid content-length"),
    ([*BASE, (b"content-length", b"1"), (b"content-length", b"2")], False, "invalid content-length"),
])
def test_malformed_requests_get_the_same_answer_on_both_wires(
        parse: Parse, fields: Headers, connect_protocol: bool, message: str) -> None:
    with pytest.raises(rh.MalformedRequest) as refused:
        parse(fields, connect_protocol)
    assert str(refused.value).startswith(message)


def test_a_repeated_content_length_that_agrees_is_fine() -> None:
    head = rh.parse_request([*BASE, (b"content-length", b"5"), (b"content-length", b"5")], connect_protocol=False)
    assert head.content_length == 5


def test_request_fields_alone_are_checked_for_trailers() -> None:
    rh.check_request_field(b"x-checksum", b"abc")
    rh.check_request_field(b"te", b"trailers")
    for name, value in [(b"", b"x"), (b"X", b"x"), (b"x", b"a\rb"), (b"upgrade", b"h2c"), (b"te", b"gzip")]:
        with pytest.raises(rh.MalformedRequest):
            rh.check_request_field(name, value)
