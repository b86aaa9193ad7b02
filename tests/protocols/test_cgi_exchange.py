"""protocols/cgi_exchange.py's pure parts: which SCRIPT_NAME is a mount point, and the CGI simple response."""

from __future__ import annotations

import pytest

from bascule.protocols.cgi_exchange import cgi_simple_response, script_root


@pytest.mark.parametrize(("script", "path", "expected"), [
    (b"/app", b"/app/users", ("/app", b"/users")),
    (b"/app/", b"/app/users", ("/app", b"/users")),  # a trailing slash is not part of the mount point
    (b"/app", b"/app/", ("/app", b"/")),
    (b"/a/b", b"/a/b/c%2Fd", ("/a/b", b"/c%2Fd")),
    (b"/caf\xc3\xa9", b"/caf%C3%A9/x", ("/caf\u00e9", b"/x")),  # decoded name, encoded path
    (b"/app", b"/app", (None, b"/app")),  # the whole path: nginx's stock fastcgi_params, ignored
    (b"/index.php", b"/index.php", (None, b"/index.php")),
    (b"/shop/", b"/shop/", (None, b"/shop/")),  # stock fastcgi_params for a path ending in "/": the whole path
    (b"/a b/c/", b"/a%20b/c/", (None, b"/a%20b/c/")),
    (b"/app", b"/application/x", (None, b"/application/x")),  # not at a segment boundary
    (b"/other", b"/app/x", (None, b"/app/x")),  # not a prefix
    (b"", b"/x", (None, b"/x")),
    (b"/", b"/x", (None, b"/x")),
    (b"app", b"app/x", (None, b"app/x")),  # not absolute
    (b"/\xff", b"/\xff/x", (None, b"/\xff/x")),  # not UTF-8: no str mount point to give
    (b"/%41", b"/%41/x", (None, b"/%41/x")),  # a decoded "%" is "%25" on the wire: "/%41" is "/A" there
    (b"/%41", b"/%2541/x", ("/%41", b"/x")),
])
def test_script_root(script: bytes, path: bytes, expected: tuple[str | None, bytes]) -> None:
    assert script_root(script, path) == expected


def test_cgi_simple_response() -> None:
    out = cgi_simple_response(503, b"server: bascule\r\n", b"busy\n")
    assert out == (b"Status: 503 Service Unavailable\r\nserver: bascule\r\ncontent-type: text/plain; charset=utf-8"
                   b"\r\ncontent-length: 5\r\n\r\nbusy\n")
