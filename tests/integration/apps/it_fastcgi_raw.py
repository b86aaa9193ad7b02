"""A plain ASGI app for test_it_fastcgi_scgi's raw FastCGI records: slow streamed answers, an app that
waits for ``http.disconnect``, one that holds its slot.

- ``/slow?ms=N&tag=T``: the head and ``T:first;`` at once, then after ``N`` ms ``T:last;`` - so a client that
  multiplexes two requests sees each one's own STDOUT stream, and the first piece before the last.
- ``/wait?mark=FILE``: writes ``waiting`` to FILE, reads the body, then waits for ``http.disconnect`` (never
  answering); writes ``disconnect`` to FILE when it comes, ``cancelled`` if the server cancels the run instead.
- ``/hold?ms=N``: answers ``held`` after ``N`` ms (holds a --limit-concurrency slot meanwhile).
- ``/echo-body``: the head at once, then each piece of the request body back as it arrives.
- ``/raise-after``: a complete response (``done``), then raises, as Starlette's error middleware does after
  its 500.
- anything else: ``ok <method> <path>``.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    query = {key: values[0] for key, values in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    if path == "/wait":
        await _wait(query["mark"], receive)
        return
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
    if path == "/slow":
        tag = query.get("tag", "x").encode()
        await send(start)
        await send({"type": "http.response.body", "body": tag + b":first;", "more_body": True})
        await asyncio.sleep(int(query.get("ms", "0")) / 1000)
        await send({"type": "http.response.body", "body": tag + b":last;"})
    elif path == "/echo-body":
        await send(start)
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            more = message.get("more_body", False)
            await send({"type": "http.response.body", "body": message.get("body", b""), "more_body": more})
    elif path == "/raise-after":
        await send(start)
        await send({"type": "http.response.body", "body": b"done"})
        raise RuntimeError("raised after a complete response (on purpose)")
    elif path == "/hold":
        await asyncio.sleep(int(query.get("ms", "0")) / 1000)
        await send(start)
        await send({"type": "http.response.body", "body": b"held"})
    else:
        await send(start)
        await send({"type": "http.response.body", "body": b"ok %s %s" % (scope["method"].encode(), path.encode())})


async def _wait(mark: str, receive: Any) -> None:
    with open(mark, "w") as out:
        out.write("waiting")
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                with open(mark, "w") as out:
                    out.write("disconnect")
                return
    except asyncio.CancelledError:
        with open(mark, "w") as out:
            out.write("cancelled")
        raise
