"""protocols.fields: one check of apps' response header fields for every wire (issue 13 item 2).

Before, HTTP/1.1 refused only CR, LF and NUL on its fast path, HTTP/2 the same three in values, and the
WebSocket handshake any name without CR, LF, NUL, colon or space: the same field got different answers
on different wires. Now a field must have a token name and a value without control characters but HTAB
everywhere; the cross-wire test sends the same bad field over HTTP/1.1 and HTTP/2.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, MutableMapping
from typing import Any

import pytest
from conftest import Running
from test_semantics import h1_response, h2_response

from bascule.errors import AppProtocolError
from bascule.protocols.fields import check_field, field_block

Serve = Callable[..., contextlib.AbstractContextManager[Running]]

BAD = [
    (b"x-a", b"1\r\n2"),  # response splitting
    (b"x-a", b"1\n2"),
    (b"x-a", b"1\x002"),
    (b"x-a", b"1\x012"),  # other controls
    (b"x-a", b"1\x7f2"),
    (b"x a", b"1"),  # not a token
    (b"x:a", b"1"),
    (b"", b"1"),
    (b"x-\xe9", b"1"),
]
GOOD = [
    (b"x-a", b"plain value"),
    (b"X-Mixed-Case", b"1"),
    (b"x-a", b"tab\tinside"),
    (b"x-a", b"caf\xe9"),  # obs-text
    (b"x-a", b""),
    (b"!#$%&'*+-.^_`|~09az", b"token characters"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_bad_fields_are_refused(name: bytes, value: bytes) -> None:
    with pytest.raises(AppProtocolError):
        check_field(name, value)
    with pytest.raises(AppProtocolError):
        field_block([(b"ok", b"1"), (name, value)])


@pytest.mark.parametrize(("name", "value"), GOOD)
def test_good_fields_pass(name: bytes, value: bytes) -> None:
    check_field(name, value)
    assert field_block([(name, value)]) == name + b": " + value + b"\r\n"


def test_fields_must_be_bytes() -> None:
    with pytest.raises(AppProtocolError, match="must be bytes"):
        check_field("x-a", b"1")  # type: ignore[arg-type]


@pytest.mark.parametrize("field", [(b"x-a", b"1\x012"), (b"x a", b"1"), (b"x-a", b"1\r\nx-b: 2")])
def test_the_same_bad_field_is_a_500_on_both_wires(serve: Serve, field: tuple[bytes, bytes]) -> None:
    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [field]})
        await send({"type": "http.response.body", "body": b"never sent"})

    with serve(app) as srv:
        answers = {"HTTP/1.1": h1_response(srv.port, "GET", "/"), "HTTP/2": h2_response(srv.port, "GET", "/")}
    for wire, (status, _fields, body) in answers.items():
        assert status == 500 and b"never sent" not in body, wire
