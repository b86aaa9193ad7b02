"""Apps see the request id (ASGI scope extension, WSGI environ key, the request header), over HTTP/1.1 and
HTTP/2, and the response echoes it unless the app set the field itself; off by default."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from conftest import serve_in_thread

HEX32 = re.compile(r"[0-9a-f]{32}")


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        seen = {"extension": scope["extensions"].get("bascule.request_id"),
                "header": dict(scope["headers"]).get(b"x-request-id", b"").decode()}
        await send({"type": "websocket.send", "text": json.dumps(seen)})
        await send({"type": "websocket.close"})
        return
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    seen = {"extension": scope["extensions"].get("bascule.request_id"),
            "header": [v.decode() for k, v in scope["headers"] if k == b"x-request-id"]}
    headers = [(b"content-type", b"application/json")]
    if scope["path"] == "/own":
        headers.append((b"X-Request-ID", b"the-apps-own"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    seen = {"environ": environ.get("bascule.request_id"), "header": environ.get("HTTP_X_REQUEST_ID")}
    headers = [("Content-Type", "application/json")]
    if environ["PATH_INFO"] == "/own":
        headers.append(("X-Request-Id", "the-apps-own"))
    start_response("200 OK", headers)
    return [json.dumps(seen).encode()]


def seen_id(kind: str, body: dict[str, Any]) -> str:
    """The id the app saw, checked to agree across the places it is given."""
    if kind == "asgi":
        rid = body["extension"]["id"]
        assert body["header"] == [rid]  # one field, saying the same
    else:
        rid = body["environ"]
        assert body["header"] == rid
    assert isinstance(rid, str)
    return rid


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_apps_see_the_id_and_the_response_echoes_it(kind: str, http2: bool) -> None:
    app = asgi_app if kind == "asgi" else wsgi_app
    with serve_in_thread(app, request_id="on") as srv, httpx.Client(http1=not http2, http2=http2) as client:
        made = client.get(srv.url + "/")  # no id sent: one is made
        assert made.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        rid = seen_id(kind, made.json())
        assert HEX32.fullmatch(rid) and made.headers.get_list("x-request-id") == [rid]
        kept = client.get(srv.url + "/", headers={"X-Request-ID": "upstream-42"})  # loopback: trusted
        assert seen_id(kind, kept.json()) == "upstream-42" and kept.headers["x-request-id"] == "upstream-42"
        bad = client.get(srv.url + "/", headers={"X-Request-ID": "a b"})  # trusted, but not an id
        rid = seen_id(kind, bad.json())
        assert HEX32.fullmatch(rid) and bad.headers["x-request-id"] == rid
        own = client.get(srv.url + "/own")  # the app echoes ids itself: its field, once
        assert own.headers.get_list("x-request-id") == ["the-apps-own"]
        failed = client.get(srv.url + "/boom", headers={"X-Request-ID": "find-me-in-the-logs"})
        assert failed.status_code == 500 and failed.headers.get_list("x-request-id") == ["find-me-in-the-logs"]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_an_untrusted_peers_id_is_replaced_before_the_app_reads_it(kind: str) -> None:
    app = asgi_app if kind == "asgi" else wsgi_app
    with serve_in_thread(app, request_id="on", forwarded_allow_ips="") as srv, httpx.Client() as client:
        response = client.get(srv.url + "/", headers={"X-Request-ID": "forged-by-client"})
        rid = seen_id(kind, response.json())
        assert HEX32.fullmatch(rid) and response.headers["x-request-id"] == rid


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_off_by_default(kind: str) -> None:
    app = asgi_app if kind == "asgi" else wsgi_app
    with serve_in_thread(app) as srv, httpx.Client() as client:
        response = client.get(srv.url + "/", headers={"X-Request-ID": "as-sent"})
        assert "x-request-id" not in response.headers
        body = response.json()
        if kind == "asgi":
            assert body == {"extension": None, "header": ["as-sent"]}
        else:
            assert body == {"environ": None, "header": "as-sent"}


def test_another_header_name() -> None:
    with serve_in_thread(wsgi_app, request_id="on", request_id_header="X-Correlation-ID") as srv, \
            httpx.Client() as client:
        response = client.get(srv.url + "/", headers={"X-Correlation-ID": "corr-7"})
        assert response.json()["environ"] == "corr-7" and response.headers["x-correlation-id"] == "corr-7"


def test_a_websocket_scope_has_it_too() -> None:
    from websockets.sync.client import connect

    with serve_in_thread(asgi_app, request_id="on") as srv:
        url = srv.url.replace("http://", "ws://") + "/ws"
        with connect(url, additional_headers={"X-Request-ID": "ws-1"}) as ws:
            seen = json.loads(ws.recv())
        assert seen == {"extension": {"id": "ws-1"}, "header": "ws-1"}
        with connect(url) as ws:
            seen = json.loads(ws.recv())
        assert HEX32.fullmatch(seen["header"]) and seen["extension"] == {"id": seen["header"]}


@pytest.mark.parametrize("sent", [b"from-nginx-7", None])
def test_over_uwsgi_the_web_servers_id_is_kept_and_echoed(sent: bytes | None) -> None:
    """The CGI wires (uwsgi here; SCGI and FastCGI share the exchange): nginx's ``uwsgi_param HTTP_X_REQUEST_ID
    $request_id`` from a trusted peer is the id; without one, one is made. The echo is in the CGI-style head."""
    import socket

    from bascule.protocols.uwsgi_wire import encode_vars

    pairs = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/id"), (b"PATH_INFO", b"/id"), (b"QUERY_STRING", b""),
             (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REMOTE_ADDR", b"203.0.113.7"), (b"REMOTE_PORT", b"5000"),
             (b"SERVER_NAME", b"example.com"), (b"SERVER_PORT", b"80"), (b"HTTP_HOST", b"example.com")]
    if sent is not None:
        pairs.append((b"HTTP_X_REQUEST_ID", sent))
    # --bind replaces --port, left at its default (serve_in_thread's 0 would be refused)
    with serve_in_thread(wsgi_app, bind=("uwsgi://127.0.0.1:0",), port=8000, request_id="on") as srv, \
            socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        sock.sendall(encode_vars(pairs))
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
    rid = seen_id("wsgi", json.loads(body))
    assert fields["x-request-id"] == rid
    assert rid == sent.decode() if sent is not None else HEX32.fullmatch(rid)


def test_static_files_echo_it_too(tmp_path: Any) -> None:
    """The echo is a server field written by the wire: responses made without an app carry it as well."""
    (tmp_path / "a.txt").write_text("static\n")
    with serve_in_thread(asgi_app, static=(f"/s={tmp_path}",), request_id="on") as srv, httpx.Client() as client:
        response = client.get(srv.url + "/s/a.txt", headers={"X-Request-ID": "static-1"})
        missing = client.get(srv.url + "/s/none.txt")
    assert response.text == "static\n" and response.headers["x-request-id"] == "static-1"
    assert missing.status_code == 404 and HEX32.fullmatch(missing.headers["x-request-id"])
