"""The demo shipped in the package: an ASGI app and a WSGI app served side by side by one bascule.

    bascule bascule.demo:asgi_app --mount /wsgi=bascule.demo:wsgi_app

Each page says which interface answered it, so a visitor sees the two kinds of app share one server.
Nothing here depends on a framework.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable
from typing import Any

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bascule demo: {kind}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem}}
code{{background:#f2f2f2;padding:0 .25rem}} .kind{{font-size:2rem;font-weight:600}}</style></head>
<body><p class="kind" id="kind">Answered by the {kind} app</p>
<p>Path <code>{path}</code>, mounted at <code>{root}</code>, served over HTTP/{version}.</p>
<ul>
<li><a href="/">the ASGI app</a> (<code>bascule.demo:asgi_app</code>)</li>
<li><a href="/wsgi/">the WSGI app</a> (<code>bascule.demo:wsgi_app</code>, mounted at <code>/wsgi</code>)</li>
<li><a href="/api/info">JSON from ASGI</a> · <a href="/wsgi/info">JSON from WSGI</a></li>
<li><a href="/ws-echo">WebSocket echo</a> (ASGI, at <code>/ws</code>)</li>
</ul></body></html>
"""

_ECHO_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bascule demo: WebSocket echo</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem}
#log{background:#f2f2f2;padding:.5rem;min-height:8rem;white-space:pre-wrap}</style></head>
<body><h1>WebSocket echo</h1>
<p>Served by the ASGI app: this page opens a WebSocket to <code>/ws</code>, which sends back every message.</p>
<form id="form"><input id="text" value="hello bascule" size="40"> <button>send</button></form>
<p>Status: <span id="status">connecting</span></p><div id="log"></div>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
const status = document.getElementById("status");
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
ws.onopen = () => { status.textContent = "open"; };
ws.onmessage = (event) => { log("echo: " + event.data); };
ws.onclose = (event) => { status.textContent = "closed (" + event.code + ")"; };
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const text = document.getElementById("text").value;
  if (ws.readyState === WebSocket.OPEN) { ws.send(text); log("sent: " + text); }
};
</script></body></html>
"""


def _page(kind: str, path: str, root: str, version: str) -> bytes:
    return _PAGE.format(kind=kind, path=html.escape(path), root=html.escape(root or "/"),
                        version=html.escape(version)).encode()


async def asgi_app(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any]) -> None:
    """The ASGI half: an HTML page, /api/info as JSON, and a WebSocket echo (page at /ws-echo)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _echo(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/ws-echo":
        body = _ECHO_PAGE
        content_type = b"text/html; charset=utf-8"
    elif path == "/api/info":
        body = json.dumps({"interface": "ASGI", "path": path, "root_path": scope["root_path"],
                           "http_version": scope["http_version"]}).encode()
        content_type = b"application/json"
    else:
        body = _page("ASGI", path, scope["root_path"], scope["http_version"])
        content_type = b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _echo(receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any]) -> None:
    """The WebSocket at any ASGI path: accept, then send every message back until the browser leaves."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI half: an HTML page, and /info as JSON."""
    path = environ.get("PATH_INFO", "") or "/"
    version = environ["SERVER_PROTOCOL"].removeprefix("HTTP/")
    if path == "/info":
        body = json.dumps({"interface": "WSGI", "path": path, "script_name": environ["SCRIPT_NAME"],
                           "http_version": version}).encode()
        content_type = "application/json"
    else:
        body = _page("WSGI", path, environ["SCRIPT_NAME"], version)
        content_type = "text/html; charset=utf-8"
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
