"""Apps behind nginx's uwsgi_pass, fastcgi_pass and scgi_pass (test_it_uwsgi_nginx, test_it_fastcgi_scgi): the
same routes in Flask and in FastAPI.

``/echo/...`` says what the app saw of the request (path, raw path where the interface has one, query,
client address, scheme, host); ``/upload`` hashes the body; ``/big?n=`` streams ``n`` MiB without a length;
``/hello`` is a fixed body with a length (for HEAD); ``/boom`` raises (a 500 from the server).

What the interface itself carries, before any routing: the Flask app answers any request with an
``X-Show-Environ`` header with the environ's request keys and bascule's raw peer (a WSGI middleware, so it
shows what a server that sets ``SCRIPT_NAME`` to the whole path does to the app too); FastAPI's ``/scope/...``
(async) and ``/sync-scope/...`` (a sync endpoint, run in a thread) answer with the scope's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from flask import Flask, Response, jsonify, request

MIB = 1024 * 1024


def block(i: int) -> bytes:
    """The i-th MiB of a /big response: recognisable, so a lost or repeated piece shows."""
    return (b"%08d" % i) * (MIB // 8)


flask_app = Flask(__name__)


@flask_app.route("/echo/<path:rest>", methods=["GET", "POST"])
def flask_echo(rest: str) -> Response:
    env = request.environ
    return jsonify(path=env["PATH_INFO"].encode("latin-1").decode("utf-8"), raw_path=None, rest=rest,
                   query=env["QUERY_STRING"], args=request.args.to_dict(), client=env["REMOTE_ADDR"],
                   scheme=env["wsgi.url_scheme"], host=request.host, method=request.method)


@flask_app.post("/upload")
def flask_upload() -> Response:
    data = request.get_data()
    return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest())


@flask_app.get("/big")
def flask_big() -> Response:
    count = int(request.args.get("n", "4"))

    def generate() -> Iterator[bytes]:
        for i in range(count):
            yield block(i)

    return Response(generate(), mimetype="application/octet-stream")


HELLO = b"hello\n" * 100


@flask_app.get("/hello")
def flask_hello() -> Response:
    return Response(HELLO, mimetype="text/plain")


@flask_app.get("/boom")
def flask_boom() -> Response:
    raise RuntimeError("boom (on purpose)")


ENVIRON_KEYS = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_URI", "RAW_URI", "REQUEST_METHOD",
                "CONTENT_LENGTH", "REMOTE_ADDR", "REMOTE_PORT", "HTTPS", "wsgi.url_scheme", "APP_ENV", "SERVER_PORT")


def show_environ(app: Any) -> Any:
    """WSGI middleware: a request with ``X-Show-Environ`` gets the environ's request keys as JSON (str values
    as the server put them, latin-1 for bytes), plus ``bascule.peer`` (the connection's own peer)."""
    def middleware(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if "HTTP_X_SHOW_ENVIRON" not in environ:
            result: Iterable[bytes] = app(environ, start_response)
            return result
        seen: dict[str, Any] = {key: environ.get(key) for key in ENVIRON_KEYS}
        peer = environ.get("bascule.peer")
        seen["peer"] = list(peer) if isinstance(peer, tuple) else peer
        body = json.dumps(seen).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return middleware


flask_app.wsgi_app = show_environ(flask_app.wsgi_app)  # type: ignore[method-assign]


fastapi_app = FastAPI()


@fastapi_app.api_route("/echo/{rest:path}", methods=["GET", "POST", "HEAD"])
async def fastapi_echo(rest: str, request: Request) -> dict[str, object]:
    scope = request.scope
    client = scope["client"]
    return {"path": scope["path"], "raw_path": scope["raw_path"].decode("latin-1"), "rest": rest,
            "query": scope["query_string"].decode("latin-1"), "args": dict(request.query_params),
            "client": client[0] if client else None, "scheme": scope["scheme"],
            "host": request.headers.get("host"), "method": request.method}


@fastapi_app.post("/upload")
async def fastapi_upload(request: Request) -> dict[str, object]:
    digest = hashlib.sha256()
    size = 0
    async for piece in request.stream():
        digest.update(piece)
        size += len(piece)
    return {"size": size, "sha256": digest.hexdigest()}


@fastapi_app.get("/big")
async def fastapi_big(n: int = 4) -> StreamingResponse:
    async def generate() -> AsyncIterator[bytes]:
        for i in range(n):
            yield block(i)

    return StreamingResponse(generate(), media_type="application/octet-stream")


@fastapi_app.api_route("/hello", methods=["GET", "HEAD"])
async def fastapi_hello() -> PlainTextResponse:
    return PlainTextResponse(HELLO.decode())


@fastapi_app.get("/boom")
async def fastapi_boom() -> None:
    raise RuntimeError("boom (on purpose)")


def scope_seen(scope: dict[str, Any]) -> dict[str, object]:
    """The scope's request keys, JSON-ready, plus bascule's raw peer and the names of the top-level keys (a CGI
    variable such as APP_ENV must never become one)."""
    peer = scope.get("extensions", {}).get("bascule.peer")
    return {"path": scope["path"], "raw_path": scope["raw_path"].decode("latin-1"), "root_path": scope["root_path"],
            "query": scope["query_string"].decode("latin-1"), "client": scope["client"], "scheme": scope["scheme"],
            "method": scope["method"], "keys": sorted(scope), "extensions": sorted(scope.get("extensions", {})),
            "peer": None if peer is None else peer["client"]}


@fastapi_app.get("/scope/{rest:path}")
async def fastapi_scope(request: Request) -> dict[str, object]:
    return scope_seen(request.scope)


@fastapi_app.get("/sync-scope/{rest:path}")
def fastapi_sync_scope(request: Request) -> dict[str, object]:
    return scope_seen(request.scope)
