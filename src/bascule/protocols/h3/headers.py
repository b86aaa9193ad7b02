"""HTTP/3 request heads and response fields: what QPACK decoded, checked and split up; what apps send, checked.

aioquic's HTTP/3 layer decodes QPACK and applies RFC 9114's generic checks (lowercase names, pseudo-header
order and duplicates, connection-specific fields, ``te``) before a request reaches us; what it lets through
is checked as bascule checks HTTP/2 requests, by the module both wires share (protocols/request_head.py:
the pseudo-header set a request needs, :path, :protocol only on an extended CONNECT, the content-length;
re-exported here), and here the limits an operator set (field count, field size, header list size), which
answer 431 rather than end the connection: the stream is intact, only the request is too large.
"""

from __future__ import annotations

from typing import NamedTuple

from bascule.errors import AppProtocolError
from bascule.protocols.exchange import Headers
from bascule.protocols.fields import check_field
from bascule.protocols.request_head import CONNECTION_SPECIFIC
from bascule.protocols.request_head import MalformedRequest as MalformedRequest  # re-exported: the wire's names
from bascule.protocols.request_head import RequestHead as RequestHead
from bascule.protocols.request_head import parse_request as parse_request

FIELD_OVERHEAD = 32  # RFC 9114 4.2.2 (as HPACK's): a field's size is its name, its value and 32


class TooLarge(Exception):
    """A request head over an operator's limit: answered 431 (the message says which limit)."""


class Limits(NamedTuple):
    fields: int  # --limit-request-headers
    field_size: int  # --limit-request-field-size
    list_size: int  # --limit-request-header-size


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
    if lname in CONNECTION_SPECIFIC:
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
