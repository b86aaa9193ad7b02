"""Apps that read a request body in chunks and throw it away, for the memory acceptance test."""

from __future__ import annotations


def wsgi_app(environ, start_response):
    stream, size = environ["wsgi.input"], 0
    while chunk := stream.read(65536):
        size += len(chunk)
    body = str(size).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})



def hoard_app(environ, start_response):
    """Keeps every chunk of the body in memory: the memory test's control, proving it can see growth."""
    stream, kept = environ["wsgi.input"], []
    while chunk := stream.read(65536):
        kept.append(chunk)
    size = str(sum(map(len, kept))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(size)))])
    return [size]


def whole_app(environ, start_response):
    """Reads the body in one call, as Django's request.body does: read(CONTENT_LENGTH), or read() if chunked."""
    length = environ.get("CONTENT_LENGTH")
    body = environ["wsgi.input"].read(int(length)) if length else environ["wsgi.input"].read()
    size = str(len(body)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(size)))])
    return [size]
