"""Response header fields from apps: one check for every wire (HTTP/1.1, HTTP/2, WebSocket handshakes).

An app's field is written only if its name is a token (RFC 9110 5.6.2) and its value holds no control
character but HTAB (RFC 9110 5.5: VCHAR, obs-text, SP, HTAB): CR, LF or NUL could split the response
(header injection), and the other controls are refused by strict clients. Each wire used to carry its own
variant of this check, and they had drifted (HTTP/2 let other controls through, the WebSocket handshake
let any name without CR, LF, NUL, colon or space through); now every wire calls :func:`check_field`.

The wires keep their own fast paths (HTTP/1.1 caches checked blocks per header set, HTTP/2 caches encoded
fields), so this runs once per distinct field, not once per response.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bascule.errors import AppProtocolError

_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def check_field(name: object, value: object, what: str = "header") -> None:
    """Raise AppProtocolError (naming the field) unless ``name: value`` may be written as sent.

    Typed ``object``: the compiled build checks declared types at the call, and an app's str header must
    get this error (a 500 that says why), not a TypeError from the call itself.
    """
    if type(name) is not bytes or type(value) is not bytes:
        raise AppProtocolError(f"{what} names and values must be bytes, got {name!r}: {value!r}")
    if not name or _BAD_NAME.search(name):
        raise AppProtocolError(f"the app sent an invalid {what} name (not a token): {name!r}")
    if _BAD_VALUE.search(value):
        raise AppProtocolError(f"the app sent a {what} that could split the response (a control character "
                               f"in its value): {name!r}: {value!r}")


def field_block(headers: Iterable[Any], what: str = "header") -> bytes:
    """``name: value`` CRLF lines (HTTP/1.x), each field checked (pairs of any type: see check_field)."""
    parts: list[bytes] = []
    for pair in headers:
        name, value = pair
        check_field(name, value, what)
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts)
