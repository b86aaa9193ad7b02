"""Request heads of the wires that send pseudo-header fields (HTTP/2, HTTP/3): checked and split up once.

HTTP/2 (RFC 9113 8.2, 8.3, RFC 8441) and HTTP/3 (RFC 9114 4.2, 4.3.1, RFC 9220) ask the same of a decoded
request header list: lowercase token names, no connection-specific fields, ``te`` only as "trailers",
:method, :scheme and :path (or a plain CONNECT's :authority alone), :protocol only on an extended CONNECT,
no pseudo-header field after a regular one, one content-length. Each wire package used to carry its own
copy of this, and the wire packages may not import one another (tests/listen/test_import_rules.py), so
the one copy lives here, beside them. What a wire does with a :class:`MalformedRequest` is its own: HTTP/2
resets the stream with PROTOCOL_ERROR, HTTP/3 with H3_MESSAGE_ERROR.

Compiled (setup.py COMPILED): HTTP/2 calls it for every request its HPACK cache has not seen.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from bascule.protocols.exchange import Headers

_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")  # lowercase tokens only (RFC 9113 8.2.1, RFC 9114 4.2)
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
# What llhttp refuses in an HTTP/1.1 request-target, refused in :path too (one request, one answer on every
# wire): whitespace, control characters, DEL, and bytes outside ASCII (clients percent-encode them).
_BAD_PATH = re.compile(rb"[^\x21-\x7e]")
CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                                 b"upgrade"))
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT")}
_PROXY_FIELDS = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
                           b"x-forwarded-prefix", b"forwarded"))  # as HTTP/1.1's (h1/connection.py)


class MalformedRequest(Exception):
    """A request head its wire's rules call malformed: the wire resets that stream (see the module docstring)."""


class RequestHead(NamedTuple):
    """A validated request head: what a stream needs to become an exchange."""

    method: str
    raw_path: bytes
    query: bytes
    headers: Headers  # regular fields (cookies joined, host from :authority), shared: copy before handing out
    content_length: int | None
    protocol: bytes | None  # :protocol of an extended CONNECT (RFC 8441, RFC 9220)
    expect_continue: bool
    forwarded: bool = False  # a field a proxy sets (X-Forwarded-*, Forwarded): the stream asks ctx.forwarded


def check_request_field(name: bytes, value: bytes) -> None:
    """Raise MalformedRequest unless a request's regular field (header or trailer) may be passed on."""
    if not name or _BAD_NAME.search(name):
        raise MalformedRequest(f"invalid header field name {name!r}")
    if _BAD_VALUE.search(value):
        raise MalformedRequest(f"invalid value in header field {name!r}")
    if name in CONNECTION_SPECIFIC:
        raise MalformedRequest(f"connection-specific header field {name!r}")
    if name == b"te" and value != b"trailers":
        raise MalformedRequest("te header field other than 'trailers'")


def parse_request(fields: Headers, *, connect_protocol: bool) -> RequestHead:
    """Validate a decoded request header list and split it up.

    ``connect_protocol``: whether the connection announced extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL);
    without it a :protocol field is an unknown pseudo-header field.
    """
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
        check_request_field(name, value)
        if name == b"cookie":
            cookies.append(value)  # RFC 9113 8.2.3, RFC 9114 4.2.1: joined into one field for HTTP/1.1-minded apps
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
    if method is None:
        raise MalformedRequest("missing :method")
    if not method or _BAD_NAME.search(method.lower()):
        raise MalformedRequest("invalid :method")
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
