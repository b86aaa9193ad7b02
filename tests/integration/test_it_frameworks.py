"""Real frameworks (Flask, Django over WSGI and ASGI, FastAPI, Starlette) served by the bascule CLI.

Each app is a module under apps/ started as ``python -m bascule MODULE:ATTR`` in a subprocess, once per
module, and talked to with httpx over a real socket.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from it_support import clean_env, spawn, tcp_ready, wait_for


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, app: str, **env: str) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp(name) / "server.log"
    with spawn([app, "--port", str(port)], env=clean_env(**env), log=log, ready=tcp_ready(port)) as proc:
        yield f"http://127.0.0.1:{port}"
        assert proc.poll() is None, f"{name} server died: {log.read_text()}"


@pytest.fixture(scope="module")
def flask_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _server(tmp_path_factory, "flask", "it_flask_app:app")


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def django_kind(request: pytest.FixtureRequest) -> str:
    """Which of the project's entry points is served: djproj.wsgi or djproj.asgi."""
    return str(request.param)


@pytest.fixture(scope="module")
def django_url(django_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _server(tmp_path_factory, f"django-{django_kind}", f"djproj.{django_kind}:application",
                       DJANGO_SETTINGS_MODULE="djproj.settings")


@pytest.fixture(scope="module")
def fastapi_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _server(tmp_path_factory, "fastapi", "it_fastapi_app:app")


@pytest.fixture(scope="module")
def starlette_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _server(tmp_path_factory, "starlette", "it_starlette_app:app")


def timed_chunks(client: httpx.Client, url: str) -> tuple[httpx.Response, list[tuple[float, bytes]]]:
    """The response and its body as (seconds since the head, bytes) per read, as the bytes arrived."""
    arrivals: list[tuple[float, bytes]] = []
    with client.stream("GET", url) as response:
        start = time.monotonic()
        for data in response.iter_raw():
            arrivals.append((time.monotonic() - start, data))
    return response, arrivals


# -- Flask -------------------------------------------------------------------------------------------


def test_flask_text_and_json(flask_url: str) -> None:
    with httpx.Client(base_url=flask_url, timeout=10) as client:
        r = client.get("/")
        assert r.status_code == 200
        assert r.text == "hello from flask"
        assert r.headers["content-type"].startswith("text/html")
        r = client.get("/json", params={"q": "bridge"})
        assert r.status_code == 200
        assert r.json() == {"framework": "flask", "numbers": [1, 2, 3], "q": "bridge"}


def test_flask_form_post(flask_url: str) -> None:
    r = httpx.post(flask_url + "/form", data={"name": "Ada Lovelace", "lang": "en"}, timeout=10)
    assert r.status_code == 200
    assert r.text == "name=Ada Lovelace lang=en"


def test_flask_multipart_upload(flask_url: str) -> None:
    payload = os.urandom(300_000)
    r = httpx.post(flask_url + "/upload", files={"file": ("data.bin", payload, "application/octet-stream")},
                   data={"note": "hi"}, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"filename": "data.bin", "size": len(payload),
                        "sha256": hashlib.sha256(payload).hexdigest(), "note": "hi"}


def test_flask_stream_with_context(flask_url: str) -> None:
    with httpx.Client(timeout=10) as client:
        response, arrivals = timed_chunks(client, flask_url + "/stream?n=4&prefix=part")
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert b"".join(data for _, data in arrivals) == b"part-0\npart-1\npart-2\npart-3\n"
    assert len(arrivals) >= 2  # the generator's items went out as they were made


def test_flask_404_and_abort(flask_url: str) -> None:
    assert httpx.get(flask_url + "/nope", timeout=10).status_code == 404
    assert httpx.get(flask_url + "/teapot", timeout=10).status_code == 418


def test_flask_exception_is_500_and_server_keeps_serving(flask_url: str) -> None:
    with httpx.Client(base_url=flask_url, timeout=10) as client:
        for _ in range(3):
            assert client.get("/boom").status_code == 500
            assert client.get("/").text == "hello from flask"


# -- Django, through djproj.wsgi:application and djproj.asgi:application -----------------------------


def test_django_text_and_json(django_url: str) -> None:
    with httpx.Client(base_url=django_url, timeout=10) as client:
        r = client.get("/")
        assert r.status_code == 200
        assert r.text == "hello from django /"
        r = client.get("/json/", params={"q": "été"})
        assert r.status_code == 200
        assert r.json() == {"framework": "django", "q": "été", "script_name": ""}


def test_django_post_echo_csrf_exempt(django_url: str) -> None:
    with httpx.Client(base_url=django_url, timeout=10) as client:
        r = client.post("/echo/", data={"a": "1", "b": "two"})
        assert r.status_code == 200
        assert r.json() == {"method": "POST", "content_type": "application/x-www-form-urlencoded",
                            "body": "a=1&b=two", "posted": {"a": "1", "b": "two"}}
        r = client.post("/echo/", content=b'{"x": 1}', headers={"content-type": "application/json"})
        assert r.json()["body"] == '{"x": 1}'
        # the CSRF middleware is live for views that are not exempt
        assert client.post("/protected/", data={"a": "1"}).status_code == 403


def test_django_streaming_response(django_url: str, django_kind: str) -> None:
    # a sync generator under WSGI, an async one under ASGI (Django's own advice for each)
    kind, prefix = ("astream", b"arow") if django_kind == "asgi" else ("stream", b"row")
    with httpx.Client(timeout=10) as client:
        response, arrivals = timed_chunks(client, f"{django_url}/{kind}/")
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert b"".join(data for _, data in arrivals) == b"".join(b"%s %d\n" % (prefix, i) for i in range(4))
    assert len(arrivals) >= 2


def test_django_async_view(django_url: str) -> None:
    r = httpx.get(django_url + "/async/", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"async": True, "path": "/async/"}


def test_django_404_and_500_keep_serving(django_url: str) -> None:
    with httpx.Client(base_url=django_url, timeout=10) as client:
        assert client.get("/missing/").status_code == 404
        assert client.get("/boom/").status_code == 500
        assert client.get("/").status_code == 200


# -- FastAPI -----------------------------------------------------------------------------------------


def test_fastapi_json_and_params(fastapi_url: str) -> None:
    with httpx.Client(base_url=fastapi_url, timeout=10) as client:
        assert client.get("/json").json() == {"framework": "fastapi", "ok": True}
        r = client.get("/items/42", params={"q": "a b", "limit": "3"})
        assert r.status_code == 200
        assert r.json() == {"item_id": 42, "q": "a b", "limit": 3}
        assert client.get("/items/not-a-number").status_code == 422


def test_fastapi_lifespan_state(fastapi_url: str) -> None:
    r = httpx.get(fastapi_url + "/state", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"greeting": "set by lifespan startup"}


def test_fastapi_streaming_arrives_in_chunks(fastapi_url: str) -> None:
    with httpx.Client(timeout=10) as client:
        response, arrivals = timed_chunks(client, fastapi_url + "/stream?n=4&delay=0.15")
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert b"".join(data for _, data in arrivals) == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"
    assert len(arrivals) >= 3
    assert arrivals[0][1].startswith(b"chunk 0")
    # the first chunk came at once, the last one only after the generator's three sleeps (0.45 s)
    assert arrivals[0][0] < 0.2
    assert arrivals[-1][0] - arrivals[0][0] > 0.3


def test_fastapi_upload_file_1mb(fastapi_url: str) -> None:
    payload = os.urandom(1024 * 1024)
    r = httpx.post(fastapi_url + "/upload", files={"file": ("big.bin", payload)}, timeout=20)
    assert r.status_code == 200
    assert r.json() == {"filename": "big.bin", "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def test_fastapi_background_task_runs_after_response(fastapi_url: str, tmp_path: Path) -> None:
    marker = tmp_path / "background.txt"
    r = httpx.post(fastapi_url + "/background", params={"marker": str(marker)}, timeout=10)
    received = time.time()
    assert r.status_code == 200
    assert wait_for(marker.exists, 5), "the background task never wrote its marker"
    wait_for(lambda: marker.read_text().count(" ") == 1, 2)
    started, finished = (float(x) for x in marker.read_text().split())
    assert started == pytest.approx(r.json()["responded_at"])
    assert finished >= received - 0.05  # written after the client already had the response


# -- Starlette ---------------------------------------------------------------------------------------


def test_starlette_plain_and_streaming(starlette_url: str) -> None:
    with httpx.Client(timeout=10) as client:
        r = client.get(starlette_url + "/")
        assert r.status_code == 200
        assert r.text == "hello from starlette /"
        response, arrivals = timed_chunks(client, starlette_url + "/numbers?n=5")
    assert response.headers["transfer-encoding"] == "chunked"
    assert b"".join(data for _, data in arrivals) == b"0\n1\n2\n3\n4\n"
    assert len(arrivals) >= 3
    assert arrivals[-1][0] - arrivals[0][0] > 0.25

