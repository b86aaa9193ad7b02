"""HTTP/3 with a second, independent client: libcurl's (ngtcp2 + nghttp3, through curl_cffi).

aioquic's client (the other tests) shares its QUIC and QPACK code with the server; curl shares nothing, so
this is where framing, flow control and QPACK disagreements would show. Skipped where curl_cffi is missing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from h3_support import h3_server, run

curl = pytest.importorskip("curl_cffi.requests")
CurlHttpVersion = pytest.importorskip("curl_cffi.const").CurlHttpVersion


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    size = int(scope["query_string"] or b"0")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-version", b"h3")]})
    await send({"type": "http.response.body",
                "body": (b"%s %d;" % (scope["http_version"].encode(), len(body))).ljust(size, b"x")})


def test_curl_over_http3() -> None:
    def client(port: int) -> list[Any]:
        session = curl.Session()
        url = f"https://127.0.0.1:{port}/"
        options: dict[str, Any] = {"http_version": CurlHttpVersion.V3ONLY, "verify": False, "timeout": 30}
        small = session.get(url, **options)
        upload = session.post(url, data=b"y" * 2_000_000, **options)
        download = session.get(url + "?3000000", **options)
        return [(small.status_code, small.http_version, small.content, small.headers.get("x-version")),
                upload.content, len(download.content), download.content[:6]]

    async def main() -> None:
        async with h3_server(app) as srv:
            got = await asyncio.get_running_loop().run_in_executor(None, client, srv.port)
            assert got[0] == (200, 30, b"3 0;", "h3")  # 30: CURL_HTTP_VERSION_3
            assert got[1] == b"3 2000000;"
            assert got[2:] == [3_000_000, b"3 0;xx"]
    run(main(), timeout=60)
