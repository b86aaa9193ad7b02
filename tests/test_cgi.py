"""Tests for bascule.cgi: CGI variables (as nginx's uwsgi_params, fastcgi_params and scgi_params send them) to a
request, the trusted facts kept apart, the fixed-length body, CGI response heads; and a hypothesis fuzz."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bascule.cgi import CGIError, CGIRequest, FixedLengthBody, request_from_vars, response_head, status_header
from bascule.errors import BasculeError

EXAMPLES = int(os.environ.get("BASCULE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

Pairs = list[tuple[bytes, bytes]]

NGINX_UWSGI: Pairs = [  # what nginx 1.22 sends with the stock uwsgi_params for a POST over HTTPS
    (b"QUERY_STRING", b"q=caf%C3%A9&x=1"),
    (b"REQUEST_METHOD", b"POST"),
    (b"CONTENT_TYPE", b"application/json"),
    (b"CONTENT_LENGTH", b"13"),
    (b"REQUEST_URI", b"/api/a%2Fb/caf%C3%A9?q=caf%C3%A9&x=1"),
    (b"PATH_INFO", b"/api/a/b/caf\xc3\xa9"),
    (b"DOCUMENT_ROOT", b"/usr/share/nginx/html"),
    (b"SERVER_PROTOCOL", b"HTTP/2.0"),
    (b"REQUEST_SCHEME", b"https"),
    (b"HTTPS", b"on"),
    (b"REMOTE_ADDR", b"2001:db8::7"),
    (b"REMOTE_PORT", b"51234"),
    (b"SERVER_PORT", b"443"),
    (b"SERVER_NAME", b"example.com"),
    (b"HTTP_HOST", b"example.com"),
    (b"HTTP_CONTENT_TYPE", b"application/json"),
    (b"HTTP_CONTENT_LENGTH", b"13"),
    (b"HTTP_X_REQUEST_ID", b"abc"),
    (b"HTTP_COOKIE", b"a=1; b=2"),
]


def with_vars(base: Pairs, **changes: bytes | None) -> Pairs:
    """``base`` with variables replaced (None removes one), new ones appended."""
    out = [(name, changes[name.decode()]) if name.decode() in changes else (name, value) for name, value in base]
    out = [(name, value) for name, value in out if value is not None]
    names = {name for name, _ in out}
    out += [(name.encode(), value) for name, value in changes.items()
            if value is not None and name.encode() not in names]
    return out


MINIMAL: Pairs = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/")]


def refused(pairs: Pairs, fragment: str) -> None:
    with pytest.raises(CGIError) as caught:
        request_from_vars(pairs)
    assert fragment in str(caught.value)


def test_nginx_uwsgi_request() -> None:
    request = request_from_vars(NGINX_UWSGI)
    assert request.method == "POST"
    assert request.raw_path == b"/api/a%2Fb/caf%C3%A9"  # as sent: %2F is not a slash
    assert request.query_string == b"q=caf%C3%A9&x=1"
    assert request.http_version == "2"
    assert request.headers == [(b"host", b"example.com"), (b"x-request-id", b"abc"), (b"cookie", b"a=1; b=2"),
                               (b"content-type", b"application/json"), (b"content-length", b"13")]
    assert request.content_length == 13
    assert request.scheme == "https"
    assert request.client == ("2001:db8::7", 51234)
    assert request.server == ("example.com", 443)
    assert request.script_name is None and request.path_info == b"/api/a/b/caf\xc3\xa9"
    assert request.extra == [(b"DOCUMENT_ROOT", b"/usr/share/nginx/html")]


def test_minimal_request_defaults() -> None:
    request = request_from_vars(MINIMAL)
    assert (request.method, request.raw_path, request.query_string, request.http_version) == ("GET", b"/", b"", "1.1")
    assert request.headers == [] and request.content_length is None
    assert request.scheme is None and request.client is None and request.server is None
    assert isinstance(request, CGIRequest)


def test_empty_content_length_is_none_and_sends_no_header() -> None:
    request = request_from_vars(with_vars(MINIMAL, CONTENT_LENGTH=b"", CONTENT_TYPE=b""))
    assert request.content_length is None and request.headers == []
    request = request_from_vars(with_vars(MINIMAL, CONTENT_LENGTH=b"0"))
    assert request.content_length == 0 and request.headers == [(b"content-length", b"0")]
    assert request_from_vars(with_vars(MINIMAL, CONTENT_LENGTH=b"007")).content_length == 7


def test_content_type_from_the_header_only_without_the_variable() -> None:
    pairs = with_vars(MINIMAL, HTTP_CONTENT_TYPE=b"text/plain")
    assert request_from_vars(pairs).headers == [(b"content-type", b"text/plain")]
    pairs = with_vars(pairs, CONTENT_TYPE=b"")  # nginx: CONTENT_TYPE is $content_type, authoritative
    assert request_from_vars(pairs).headers == []
    # HTTP_CONTENT_LENGTH never frames anything: only CONTENT_LENGTH does
    assert request_from_vars(with_vars(MINIMAL, HTTP_CONTENT_LENGTH=b"5")).headers == []


@pytest.mark.parametrize(("name", "header"), [
    (b"HTTP_X_FORWARDED_FOR", b"x-forwarded-for"),
    (b"HTTP_ACCEPT", b"accept"),
    (b"HTTP_user_agent", b"user-agent"),  # a hand-written client in lower case
    (b"HTTP_X.Y", b"x.y"),
])
def test_header_names(name: bytes, header: bytes) -> None:
    assert request_from_vars([*MINIMAL, (name, b"v")]).headers == [(header, b"v")]


def test_repeated_header_variables_are_kept() -> None:
    request = request_from_vars([*MINIMAL, (b"HTTP_X_A", b"1"), (b"HTTP_X_A", b"2")])
    assert request.headers == [(b"x-a", b"1"), (b"x-a", b"2")]


@pytest.mark.parametrize(("uri", "path", "query"), [
    (b"/p?", b"/p", b""),
    (b"/p?a?b", b"/p", b"a?b"),
    (b"/%25%3F?x", b"/%25%3F", b"x"),
    (b"*", b"*", b""),
    (b"http://example.com/x?y", b"/x", b"y"),
    (b"https://example.com", b"/", b""),
    (b"/caf\xc3\xa9", b"/caf\xc3\xa9", b""),  # nginx passes raw non-ASCII bytes through: kept as sent
])
def test_request_uri_forms(uri: bytes, path: bytes, query: bytes) -> None:
    request = request_from_vars(with_vars(MINIMAL, REQUEST_URI=uri, QUERY_STRING=b"ignored=1"))
    assert (request.raw_path, request.query_string) == (path, query)


@pytest.mark.parametrize(("script", "path_info", "query", "path"), [
    (b"/app", b"/a b/%/caf\xc3\xa9", b"x=%20", b"/app/a%20b/%25/caf%C3%A9"),
    (None, b"/x;y=1/@:", None, b"/x;y=1/@:"),
    (b"", b"", b"", b"/"),
    (b"app", None, None, b"/app"),
])
def test_path_rebuilt_from_decoded_variables(script: bytes | None, path_info: bytes | None, query: bytes | None,
                                             path: bytes) -> None:
    request = request_from_vars(with_vars(MINIMAL, REQUEST_URI=None, SCRIPT_NAME=script, PATH_INFO=path_info,
                                          QUERY_STRING=query))
    assert request.raw_path == path and request.query_string == (query or b"")
    assert request.script_name == script and request.path_info == path_info


def test_empty_request_uri_falls_back() -> None:
    request = request_from_vars(with_vars(MINIMAL, REQUEST_URI=b"", PATH_INFO=b"/p"))
    assert request.raw_path == b"/p"


@pytest.mark.parametrize(("protocol", "version"), [
    (b"HTTP/1.0", "1.0"), (b"HTTP/1.1", "1.1"), (b"HTTP/2.0", "2"), (b"HTTP/3.0", "3"), (b"", "1.1"),
])
def test_server_protocol(protocol: bytes, version: str) -> None:
    assert request_from_vars(with_vars(MINIMAL, SERVER_PROTOCOL=protocol)).http_version == version


@pytest.mark.parametrize(("variables", "scheme"), [
    ({"HTTPS": b"on"}, "https"),
    ({"HTTPS": b"1"}, "https"),
    ({"HTTPS": b"off"}, None),
    ({"HTTPS": b"off", "REQUEST_SCHEME": b"http"}, "http"),
    ({"REQUEST_SCHEME": b"https"}, "https"),
    ({"UWSGI_SCHEME": b"https", "HTTPS": b"off"}, "https"),
    ({"UWSGI_SCHEME": b"http", "HTTPS": b"on"}, "http"),  # uwsgi's explicit override wins
    ({"UWSGI_SCHEME": b"gopher"}, None),  # malformed facts are dropped, not errors
    ({"REQUEST_SCHEME": b"HTTPS"}, "https"),
])
def test_scheme(variables: dict[str, bytes], scheme: str | None) -> None:
    assert request_from_vars(with_vars(MINIMAL, **variables)).scheme == scheme


@pytest.mark.parametrize(("variables", "client", "server"), [
    ({"REMOTE_ADDR": b"10.0.0.1", "REMOTE_PORT": b"1"}, ("10.0.0.1", 1), None),
    ({"REMOTE_ADDR": b"10.0.0.1"}, ("10.0.0.1", 0), None),
    ({"REMOTE_ADDR": b"10.0.0.1", "REMOTE_PORT": b"99999"}, ("10.0.0.1", 0), None),
    ({"REMOTE_ADDR": b"unix:", "REMOTE_PORT": b""}, None, None),  # nginx, for a client on a Unix socket
    ({"REMOTE_ADDR": b"evil host"}, None, None),
    ({"SERVER_NAME": b"a.example", "SERVER_ADDR": b"10.0.0.2", "SERVER_PORT": b"8443"}, None, ("a.example", 8443)),
    ({"SERVER_NAME": b"", "SERVER_ADDR": b"10.0.0.2", "SERVER_PORT": b"80"}, None, ("10.0.0.2", 80)),
    ({"SERVER_NAME": b"a.example"}, None, None),
    ({"SERVER_NAME": b"a b", "SERVER_PORT": b"80"}, None, None),
    ({"SERVER_NAME": b"a.example:8080", "SERVER_PORT": b"8080"}, None, ("a.example", 8080)),  # HAProxy fcgi-app
    ({"SERVER_NAME": b"[::1]:8080", "SERVER_PORT": b"8080"}, None, ("[::1]", 8080)),
    ({"SERVER_NAME": b"::1", "SERVER_PORT": b"80"}, None, ("::1", 80)),  # an IPv6 literal keeps its colons
])
def test_client_and_server(variables: dict[str, bytes], client: tuple[str, int] | None,
                           server: tuple[str, int] | None) -> None:
    request = request_from_vars(with_vars(MINIMAL, **variables))
    assert request.client == client and request.server == server


BAD: list[tuple[Pairs, str]] = [
    ([(b"REQUEST_URI", b"/")], "REQUEST_METHOD is missing"),
    (with_vars(MINIMAL, REQUEST_METHOD=b""), "not an HTTP method token"),
    (with_vars(MINIMAL, REQUEST_METHOD=b"GE T"), "not an HTTP method token"),
    (with_vars(MINIMAL, REQUEST_METHOD=b"G\xc3\xa9T"), "not an HTTP method token"),
    ([(b"REQUEST_METHOD", b"GET")], "has no path"),
    (with_vars(MINIMAL, REQUEST_URI=b"/a b"), "whitespace"),
    (with_vars(MINIMAL, REQUEST_URI=b"/a\r\nX: y"), "whitespace"),
    (with_vars(MINIMAL, REQUEST_URI=b"/a#f"), "fragment"),
    (with_vars(MINIMAL, REQUEST_URI=b"a/b"), "not a path"),
    (with_vars(MINIMAL, REQUEST_URI=None, PATH_INFO=b"/", QUERY_STRING=b"a b"), "QUERY_STRING"),
    (with_vars(MINIMAL, SERVER_PROTOCOL=b"HTTP/1.2"), "SERVER_PROTOCOL"),
    (with_vars(MINIMAL, SERVER_PROTOCOL=b"INCLUDED"), "SERVER_PROTOCOL"),
    (with_vars(MINIMAL, CONTENT_LENGTH=b"-1"), "CONTENT_LENGTH"),
    (with_vars(MINIMAL, CONTENT_LENGTH=b"1e3"), "CONTENT_LENGTH"),
    (with_vars(MINIMAL, CONTENT_LENGTH=b" 1"), "CONTENT_LENGTH"),
    (with_vars(MINIMAL, CONTENT_LENGTH=b"\xd9\xa1"), "CONTENT_LENGTH"),  # a non-ASCII digit
    (with_vars(MINIMAL, CONTENT_LENGTH=b"9" * 19), "CONTENT_LENGTH"),
    (with_vars(MINIMAL, CONTENT_TYPE=b"a\nb"), "CONTENT_TYPE"),
    ([*MINIMAL, (b"HTTP_", b"x")], "not a token"),
    ([*MINIMAL, (b"HTTP_A B", b"x")], "not a token"),
    ([*MINIMAL, (b"HTTP_A:B", b"x")], "not a token"),
    ([*MINIMAL, (b"HTTP_X", b"a\r\nb")], "CR, LF or NUL"),
    ([*MINIMAL, (b"HTTP_X", b"a\x00b")], "CR, LF or NUL"),
    ([*MINIMAL, (b"", b"x")], "empty name"),
    ([*MINIMAL, (b"REQUEST_URI", b"/other")], "REQUEST_URI is given twice"),
    ([*MINIMAL, (b"CONTENT_LENGTH", b"1"), (b"CONTENT_LENGTH", b"2")], "CONTENT_LENGTH is given twice"),
]


def test_later_connection_variables_override_earlier_ones() -> None:
    """``include fastcgi_params;`` then ``fastcgi_param SCRIPT_NAME /shop;``: nginx sends both, the last counts."""
    request = request_from_vars([*MINIMAL, (b"SCRIPT_NAME", b"/"), (b"HTTPS", b""), (b"SCRIPT_NAME", b"/shop"),
                                 (b"HTTPS", b"on"), (b"DOCUMENT_ROOT", b"/a"), (b"DOCUMENT_ROOT", b"/b")])
    assert request.script_name == b"/shop" and request.scheme == "https"
    assert request.extra == [(b"DOCUMENT_ROOT", b"/a"), (b"DOCUMENT_ROOT", b"/b")]


def test_the_clients_framing_headers_are_not_passed_on() -> None:
    """nginx passes HTTP_TRANSFER_ENCODING for a chunked body it streams (FastCGI) or measured: the app sees
    CONTENT_LENGTH's content-length, or none, never a transfer-encoding beside it."""
    request = request_from_vars([*MINIMAL, (b"CONTENT_LENGTH", b"5"), (b"HTTP_TRANSFER_ENCODING", b"chunked"),
                                 (b"HTTP_CONTENT_LENGTH", b"7")])
    assert request.headers == [(b"content-length", b"5")] and request.content_length == 5


@pytest.mark.parametrize(("pairs", "fragment"), BAD)
def test_refused(pairs: Pairs, fragment: str) -> None:
    refused(pairs, fragment)


def test_fixed_length_body() -> None:
    body = FixedLengthBody(5)
    assert not body.done and body.feed(b"ab") == b"ab" and body.remaining == 3
    assert body.feed(b"") == b"" and body.feed(b"cde") == b"cde" and body.done
    with pytest.raises(CGIError, match="1 bytes arrived after the request body"):
        body.feed(b"x")
    with pytest.raises(CGIError):
        FixedLengthBody(0).feed(b"GET / HTTP/1.1\r\n")
    assert FixedLengthBody(0).done


@pytest.mark.parametrize(("status", "line"), [
    (200, b"Status: 200 OK\r\n"),
    (404, b"Status: 404 Not Found\r\n"),
    (418, b"Status: 418 I'm a Teapot\r\n"),
    (599, b"Status: 599 \r\n"),
])
def test_status_header(status: int, line: bytes) -> None:
    assert status_header(status) == line
    assert status_header(status) is status_header(status)  # cached


def test_status_header_refuses_non_three_digit_codes() -> None:
    for status in (99, 1000, -200):
        with pytest.raises(ValueError):
            status_header(status)


def test_response_head() -> None:
    assert response_head(204) == b"Status: 204 No Content\r\n\r\n"
    head = response_head(302, b"location: /x\r\ncontent-length: 0\r\n")
    assert head == b"Status: 302 Found\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n"


# -- fuzz ------------------------------------------------------------------------------------------------

_NAMES = st.sampled_from([b"REQUEST_METHOD", b"REQUEST_URI", b"QUERY_STRING", b"SERVER_PROTOCOL", b"CONTENT_LENGTH",
                          b"CONTENT_TYPE", b"SCRIPT_NAME", b"PATH_INFO", b"HTTPS", b"UWSGI_SCHEME",
                          b"REQUEST_SCHEME", b"REMOTE_ADDR", b"REMOTE_PORT", b"SERVER_NAME", b"SERVER_ADDR",
                          b"SERVER_PORT", b"HTTP_HOST", b"HTTP_X_A", b"HTTP_CONTENT_LENGTH", b"OTHER", b"",
                          b"HTTP_", b"HTTP_a b"])
_VALUES = st.one_of(st.binary(max_size=24), st.sampled_from([b"GET", b"/", b"/a?b", b"*", b"HTTP/1.1", b"12", b"on",
                                                             b"https", b"127.0.0.1", b"80", b""]))


@FUZZ
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=12))
def test_fuzz_only_cgi_errors_and_sane_requests(pairs: Pairs) -> None:
    try:
        request = request_from_vars(pairs)
    except CGIError:
        return
    assert request.method and request.raw_path[:1] in (b"/", b"*")
    assert not any(byte <= 0x20 or byte == 0x7F for byte in request.raw_path + request.query_string)
    for name, value in request.headers:
        assert name == name.lower() and name and b"_" not in name
        assert b"\r" not in value and b"\n" not in value and b"\0" not in value
    framing = [value for name, value in request.headers if name == b"content-length"]
    assert len(framing) <= 1
    if framing:
        assert int(framing[0]) == request.content_length
    assert request.scheme in (None, "http", "https")


@FUZZ
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_fuzz_any_bytes_in_any_variable(name: bytes, value: bytes) -> None:
    try:
        request_from_vars([*MINIMAL, (name, value)])
    except BasculeError as exc:
        assert isinstance(exc, CGIError)
