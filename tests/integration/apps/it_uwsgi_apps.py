"""Apps behind nginx's uwsgi_pass (test_it_uwsgi_nginx): the same four routes in Flask and in FastAPI.

``/echo/...`` says what the app saw of the request (path, raw path where the interface has one, query,
client address, scheme, host); ``/upload`` hashes the body; ``/big?n=`` streams ``n`` MiB without a length.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
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


fastapi_app = FastAPI()


@fastapi_app.api_route("/echo/{rest:path}", methods=["GET", "POST"])
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
