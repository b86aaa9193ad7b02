"""Unit tests for bascule.protocols.h1.checks: the strictness rules llhttp leaves to us, without sockets."""

from __future__ import annotations

import pytest

from bascule.errors import ProtocolError
from bascule.protocols.h1 import checks as h1_checks


@pytest.mark.parametrize(("value", "version", "status"), [
    (b"chunked", "1.0", 400), (b",chunked", "1.1", 400), (b"chunked,", "1.1", 400), (b"identity", "1.1", 400),
    (b"identity, chunked", "1.1", 400), (b"gzip", "1.1", 400), (b"chunked, chunked", "1.1", 400),
    (b"gzip, chunked", "1.1", 501), (b"br, chunked", "1.1", 501), (b"foo, chunked", "1.1", 501),
    (b"f@o, chunked", "1.1", 400),
])
def test_transfer_encoding_rules(value: bytes, version: str, status: int) -> None:
    with pytest.raises(ProtocolError) as info:
        h1_checks.check_framing([(b"host", b"x"), (b"transfer-encoding", value)], version)
    assert info.value.status == status


@pytest.mark.parametrize("value", [b"chunked", b"CHUNKED", b" Chunked\t"])
def test_plain_chunked_is_fine(value: bytes) -> None:
    assert h1_checks.check_framing([(b"transfer-encoding", value)], "1.1") is None


def test_content_length_is_returned() -> None:
    assert h1_checks.check_framing([(b"content-length", b"0042 ")], "1.0") == 42


@pytest.mark.parametrize("name", sorted(h1_checks.FORBIDDEN_TRAILERS))
def test_forbidden_trailers_are_dropped_not_refused(name: bytes) -> None:
    assert h1_checks.check_trailers([(b"x-ok", b"1"), (name, b"v"), (b"x-sum", b"2")], 100, 8190) == [
        (b"x-ok", b"1"), (b"x-sum", b"2")]


def test_trailer_count_limit() -> None:
    h1_checks.check_trailers([(b"x-a", b"")] * 3, 3, 8190)
    with pytest.raises(ProtocolError) as info:
        h1_checks.check_trailers([(b"x-a", b"")] * 4, 3, 8190)
    assert info.value.status == 431


@pytest.mark.parametrize(("method", "url", "status"), [
    (b"GET", b"*", 400), (b"POST", b"*", 400), (b"GET", b"http://a/#x", 400),
])
def test_target_rules(method: bytes, url: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as info:
        h1_checks.check_target(method, url)
    assert info.value.status == status


def test_options_star_is_fine() -> None:
    h1_checks.check_target(b"OPTIONS", b"*")


@pytest.mark.parametrize(("method", "status"), [(b"CONNECT", 501), (b"SOURCE", 400)])
def test_methods_we_refuse(method: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as info:
        h1_checks.other_method(method)
    assert info.value.status == status


def test_other_methods_pass() -> None:
    assert h1_checks.other_method(b"PROPFIND") == "PROPFIND"


def test_head_size() -> None:
    h1_checks.check_head_size(b"/", [(b"a", b"b" * 10)], 100, 8190)
    with pytest.raises(ProtocolError, match="--limit-request-header-size"):
        h1_checks.check_head_size(b"/", [(b"a", b"b" * 100)], 100, 8190)


def test_field_size_counts_name_colon_space_and_value_as_gunicorn() -> None:
    h1_checks.check_head_size(b"/", [(b"abc", b"v" * 5)], 1000, 10)  # "abc: vvvvv" is 10 bytes
    with pytest.raises(ProtocolError, match="--limit-request-field-size") as info:
        h1_checks.check_head_size(b"/", [(b"abc", b"v" * 6)], 1000, 10)
    assert info.value.status == 431
    with pytest.raises(ProtocolError, match="--limit-request-field-size"):
        h1_checks.check_trailers([(b"x-checksum", b"v" * 100)], 100, 50)


def test_partial_head_size_counts_the_head_not_the_requests_before_it() -> None:
    before = b"GET /a HTTP/1.1\r\nhost: t\r\n\r\n" * 1000
    # the request line is complete, a field is in progress: url + complete fields + the partial field
    assert h1_checks.partial_head_size(before + b"GET /b HTTP/1.1\r\nx-a: vvv", b"/b", []) == 2 + 8
    assert h1_checks.partial_head_size(before + b"GET /b HTTP/1.1\r\nhost: t\r\nx-a: vv", b"/b",
                                       [(b"host", b"t")]) == 2 + 9 + 7
    # still in the request line: only the target counts (--limit-request-line bounds it)
    assert h1_checks.partial_head_size(before + b"GET /bbb", b"/bbb", []) == 4
    assert h1_checks.partial_head_size(b"GET /bbb", b"/bbb", []) == 4


@pytest.mark.parametrize(("data", "method"), [
    (b"FOOBAR / HTTP/1.1\r\nHost: t\r\n\r\n", b"FOOBAR"),
    (b"\r\nget / HTTP/1.1\r\n", b"get"),
    (b"FOOB", b"FOOB"),  # the read ends inside the method
    (b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n" * 50 + b"QUUX /b HTTP/1.1\r\n", b"QUUX"),
    (b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nG@T / x\r\nFOO / HTTP/1.1\r\n", b"FOO"),
    (b"G@T / HTTP/1.1\r\n", None),
    (b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nG@T / HTTP/1.1\r\n", None),
    (b"FOO\t/ HTTP/1.1\r\n", None),
    (b"did you expect an HTTP method?\r\n\r\n", None),  # words, not a request line
    (b"FOOBAR /x HT", b"FOOBAR"),  # the read ends inside the request line
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", None),  # no error at all
])
def test_unknown_method_is_found_in_the_read(data: bytes, method: bytes | None) -> None:
    assert h1_checks.unknown_method(data) == method


@pytest.mark.parametrize(("read", "method", "url", "version"), [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET", b"/", "1.1"),
    (b"POST /x?y HTTP/1.0\r\n", b"POST", b"/x?y", "1.0"),
    (b"T / HTTP/1.0\r\n\r\n", b"GET", b"/", None),  # began inside the method: llhttp is asked
    (b"\r\nGET / HTTP/1.1\r\n\r\n", b"GET", b"/", None),  # an empty line first
    (b"GET  / HTTP/1.1\r\n\r\n", b"GET", b"/", None),  # two spaces: the CR is not where one space puts it
    (b"GET /  HTTP/1.1\r\n\r\n", b"GET", b"/", None),
    (b"GET / HTTP/1.1\n", b"GET", b"/", None),  # no CR
    (b"GET / HTTP/2.0\r\n", b"GET", b"/", None),
    (b"GET / HTTP/1.2\r\n", b"GET", b"/", None),
    (b"GET / HTTP/1.1", b"GET", b"/", None),  # the read ends before the CR
    (b"", b"GET", b"/", None),
])
def test_request_line_version(read: bytes, method: bytes, url: bytes, version: str | None) -> None:
    assert h1_checks.request_line_version(read, method, url) == version
