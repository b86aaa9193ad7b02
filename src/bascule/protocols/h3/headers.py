"""HTTP/3 request heads and response fields: what QPACK decoded, checked and split up; what apps send, checked.

aioquic's HTTP/3 layer decodes QPACK and applies RFC 9114's generic checks (lowercase names, pseudo-header
order and duplicates, connection-specific fields, ``te``) before a request reaches us; what it lets through
is checked here as bascule checks HTTP/2 requests (protocols/h2/headers.py, which this package may not
import: tests/listen/test_import_rules.py): the pseudo-header set a request needs, :path, :protocol only on
an extended CONNECT, the content-length, and the limits an operator set (field count, field size, header
list size), which answer 431 rather than end the connection: the stream is intact, only the request is too
large.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from bascule.errors import AppProtocolError
from bascule.protocols.exchange import Headers
from bascule.protocols.fields import check_field

_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
_BAD_PATH = re.compile(rb"[^\x21-\x7e]")  # as HTTP/1.1's llhttp and HTTP/2: one request, one answer
_CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                                  b"upgrade"))
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT")}
_PROXY_FIELDS = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
                           b"x-forwarded-prefix", b"forwarded"))
FIELD_OVERHEAD = 32  # RFC 9114 4.2.2 (as HPACK's): a field's size is its name, its value and 32


class MalformedRequest(Exception):
    """A request RFC 9114 4.1.2 calls malformed: its stream is reset with H3_MESSAGE_ERROR."""


class TooLarge(Exception):
    """A request head over an operator's limit: answered 431 (the message says which limit)."""


class Limits(NamedTuple):
    fields: int  # --limit-request-headers
    field_size: int  # --limit-request-field-size
    list_size: int  # --limit-request-header-size


class RequestHead(NamedTuple):
    method: str
    raw_path: bytes
    query: bytes
    headers: Headers
    content_length: int | None
    protocol: bytes | None  # :protocol of an extended CONNECT (RFC 9220)
    expect_continue: bool
    forwarded: bool = False


def check_size(fields: Headers, limits: Limits) -> None:
    """Raise TooLarge when the decoded list is over a limit (checked before anything else reads it)."""
    if len(fields) > limits.fields + 5:  # the pseudo-header fields are not the app's headers
        raise TooLarge(f"more than {limits.fields} request header fields (--limit-request-headers)")
    total = 0
    for name, value in fields:
        size = len(name) + len(value)
        if size > limits.field_size:
            raise TooLarge(f"a request header field over --limit-request-field-size ({limits.field_size} bytes)")
        total += size + FIELD_OVERHEAD
    if total > limits.list_size:
        raise TooLarge(f"request header list over --limit-request-header-size ({limits.list_size} bytes)")


def parse_request(fields: Headers, *, connect_protocol: bool) -> RequestHead:
    """Validate a decoded request header list (RFC 9114 4.3.1, RFC 9220) and split it up."""
    method = scheme = authority = path = protocol = None
    headers: Headers = []
    cookies: list[bytes] = []
    content_length: int | None = None
    host = expect_continue = forwarded = regular = False
    for name, value in fields:
        if name[:1] == b":":
            if regular:
                raise MalformedRequest("pseudo-header field after a regular field")
            if name == b":method" and method is None:
                method = value
            elif name == b":path" and path is None:
                path = value
            elif name == b":scheme" and scheme is None:
                scheme = value
            elif name == b":authority" and authority is None:
                authority = value
            elif name == b":protocol" and protocol is None and connect_protocol:
                protocol = value
            else:
                raise MalformedRequest(f"unknown, duplicated or response pseudo-header field {name!r}")
            continue
        regular = True
        if not name or _BAD_NAME.search(name):
            raise MalformedRequest(f"invalid header field name {name!r}")
        if _BAD_VALUE.search(value):
            raise MalformedRequest(f"invalid value in header field {name!r}")
        if name in _CONNECTION_SPECIFIC:
            raise MalformedRequest(f"connection-specific header field {name!r}")
        if name == b"te" and value != b"trailers":
            raise MalformedRequest("te header field other than 'trailers'")
        if name == b"cookie":
            cookies.append(value)  # RFC 9114 4.2.1: joined into one field for HTTP/1.1-minded apps
            continue
        if name == b"content-length":
            if not value.isdigit() or (content_length is not None and int(value) != content_length):
                raise MalformedRequest("invalid content-length")
            content_length = int(value)
        elif name == b"host":
            host = True
        elif name == b"expect":
            expect_continue = value.lower() == b"100-continue"
        elif name in _PROXY_FIELDS:
            forwarded = True
        headers.append((name, value))
    if method is None or not method or _BAD_NAME.search(method.lower()):
        raise MalformedRequest("missing or invalid :method")
    if method == b"CONNECT" and protocol is None:
        if scheme is not None or path is not None or authority is None:
            raise MalformedRequest("a CONNECT request has :authority and neither :scheme nor :path")
        path = b"/"
    else:
        if protocol is not None and method != b"CONNECT":
            raise MalformedRequest(":protocol on a request other than CONNECT")
        if scheme is None or path is None:
            raise MalformedRequest("missing :scheme or :path")
        # 35 is "#" (an int: `bytes in bytes` raises and clears a TypeError inside CPython 3.11 first)
        if (not path or 35 in path or (path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"))
                or _BAD_PATH.search(path)):
            raise MalformedRequest("invalid :path")
    if authority is not None and not host:
        if _BAD_VALUE.search(authority):
            raise MalformedRequest("invalid :authority")
        headers.insert(0, (b"host", authority))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    raw_path, _, query = path.partition(b"?")
    return RequestHead(_METHODS.get(method) or method.decode("ascii"), raw_path, query, headers, content_length,
                       protocol, expect_continue, forwarded)


def check_trailers(fields: Headers) -> None:
    """A request's trailer section: regular fields only."""
    for name, _ in fields:
        if name[:1] == b":":
            raise MalformedRequest(f"pseudo-header field {name!r} in trailers")


_CHECKED: dict[tuple[bytes, bytes], tuple[bytes, bytes] | None] = {}
CHECKED_ENTRIES = 4096
_STATUS: dict[int, bytes] = {}


def status_field(status: int) -> tuple[bytes, bytes]:
    value = _STATUS.get(status)
    if value is None:
        if type(status) is not int or not 100 <= status <= 999:
            raise AppProtocolError(f"invalid status code {status!r}")
        value = _STATUS[status] = b"%d" % status
    return b":status", value


def response_fields(headers: Headers) -> tuple[Headers, int | None]:
    """The app's fields as HTTP/3 takes them (names lowercased, connection-specific ones dropped, each checked
    once per distinct pair: protocols/fields.py), and the content-length it declared, if any."""
    out: Headers = []
    content_length: int | None = None
    cache = _CHECKED
    for header in headers:
        try:
            field = cache[header]
        except KeyError:
            name, value = header
            field = _check(name, value)
            if len(cache) >= CHECKED_ENTRIES:
                cache.clear()
            cache[(name, value)] = field
        except TypeError:  # a list pair (ASGI allows any iterable): unhashable
            name, value = header
            field = _check(name, value)
        if field is not None:
            if field[0] == b"content-length":
                content_length = int(field[1])
            out.append(field)
    return out, content_length


def _check(name: bytes, value: bytes) -> tuple[bytes, bytes] | None:
    check_field(name, value)
    lname = name.lower()
    if lname in _CONNECTION_SPECIFIC:
        return None
    if lname == b"content-length" and not value.isdigit():
        raise AppProtocolError(f"the app sent an invalid content-length header: {value!r}")
    return lname, value


def fixed_fields(block: bytes) -> Headers:
    """The server's own fields (date, server, --header), given as an HTTP/1.1 block."""
    out: Headers = []
    for line in block.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b":")
            out.append((name.strip().lower(), value.strip()))
    return out
