"""HTTP/3 requests end to end: aioquic's client against a real QuicServer with ASGI and WSGI apps."""

from __future__ import annotations

from typing import Any

from h3_support import h3_client, h3_server, run


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = (b"%s %s %s %d" % (scope["method"].encode(), scope["path"].encode(),
                                scope["http_version"].encode(), len(body)))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": answer})


def test_get_and_post() -> None:
    async def main() -> None:
        async with h3_server(hello) as srv, h3_client(srv.port) as client:
            reply = await client.request("/hi")
            assert reply.status == 200
            assert reply.body == b"GET /hi 3 0"
            assert reply.header(b"content-length") == b"11"
            reply = await client.request("/up", "POST", body=b"x" * 5000)
            assert reply.body == b"POST /up 3 5000"
    run(main())
