"""Tests for bascule.mounts: WSGI and ASGI apps side by side, longest prefix, root_path, per-mount lifespan.

Mounts take import strings, so every test writes a small module and runs ``python -m bascule --mount ...``
in that directory. The routing table is checked path by path against one long-lived server.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Running, http_exchange, run_cli
from tls_certs import server_files

from bascule.config import Config
from bascule.loader import LoadedApp
from bascule.mounts import AppTable, Mount, thread_policy_batch

APPS = textwrap.dedent("""
    import json
    import os

    RECORD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lifespan.txt")


    def wsgi_app(environ, start_response):
        body = json.dumps({
            "app": "wsgi",
            "SCRIPT_NAME": environ["SCRIPT_NAME"],
            "PATH_INFO": environ["PATH_INFO"],
            "QUERY_STRING": environ["QUERY_STRING"],
        }).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


    def make_asgi(name):
        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        with open(RECORD, "a") as f:
                            f.write(name + "\\n")
                        scope["state"]["started_by"] = name
                        await send({"type": "lifespan.startup.complete"})
                    else:
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            body = json.dumps({
                "app": name,
                "root_path": scope["root_path"],
                "path": scope["path"],
                "raw_path": scope["raw_path"].decode("latin-1"),
                "query_string": scope["query_string"].decode("latin-1"),
                "started_by": scope["state"].get("started_by"),
            }).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
        return app


    asgi_app = make_asgi("root")
    api = make_asgi("api")
    api_v2 = make_asgi("api_v2")
""")

MOUNTS = ["--mount", "/wsgi=apps:wsgi_app", "--mount", "/api=apps:api", "--mount", "/api/v2/=apps:api_v2",
          "--mount", "/=apps:asgi_app"]


def write_apps(directory: Path) -> Path:
    (directory / "apps.py").write_text(APPS)
    return directory


def get(srv: Running, path: str) -> dict[str, Any]:
    response = httpx.get(srv.url + path)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One server with a WSGI app at /wsgi, ASGI apps at /api and /api/v2, and an ASGI app at the root."""
    directory = write_apps(tmp_path_factory.mktemp("mounts"))
    with run_cli([*MOUNTS, "--no-access-log"], cwd=directory, tmp=directory) as srv:
        yield srv


# -- routing --------------------------------------------------------------------------------------------

ROUTES = [
    # path                  app        root_path / SCRIPT_NAME   path / PATH_INFO
    ("/wsgi/rest", "wsgi", "/wsgi", "/rest"),
    ("/wsgi/rest/deeper", "wsgi", "/wsgi", "/rest/deeper"),
    ("/wsgi", "wsgi", "/wsgi", ""),
    ("/wsgi/", "wsgi", "/wsgi", "/"),
    ("/wsgix", "root", "", "/wsgix"),
    ("/api", "api", "/api", "/api"),
    ("/api/", "api", "/api", "/api/"),
    ("/api/x", "api", "/api", "/api/x"),
    ("/api/v2", "api_v2", "/api/v2", "/api/v2"),
    ("/api/v2/y/z", "api_v2", "/api/v2", "/api/v2/y/z"),
    ("/api/v2x", "api", "/api", "/api/v2x"),
    ("/api/v3/x", "api", "/api", "/api/v3/x"),
    ("/apix", "root", "", "/apix"),
    ("/ap", "root", "", "/ap"),
    ("/", "root", "", "/"),
    ("/other/page", "root", "", "/other/page"),
]


@pytest.mark.parametrize(("path", "app", "mount_point", "sub_path"), ROUTES, ids=[r[0] for r in ROUTES])
def test_longest_prefix_wins(mounted: Running, path: str, app: str, mount_point: str, sub_path: str) -> None:
    result = get(mounted, path)
    assert result["app"] == app
    if app == "wsgi":
        assert result["SCRIPT_NAME"] == mount_point
        assert result["PATH_INFO"] == sub_path
    else:
        assert result["root_path"] == mount_point
        assert result["path"] == sub_path  # the full path, root_path included (as uvicorn and Starlette expect)
        assert result["path"].startswith(result["root_path"])


def test_query_string_reaches_both_kinds(mounted: Running) -> None:
    assert get(mounted, "/wsgi/rest?a=1&b=%20")["QUERY_STRING"] == "a=1&b=%20"
    assert get(mounted, "/api/x?a=1&b=%20")["query_string"] == "a=1&b=%20"


def test_percent_encoded_path_under_a_mount(mounted: Running) -> None:
    result = get(mounted, "/api/caf%C3%A9")
    assert result["app"] == "api"
    assert result["path"] == "/api/café"
    assert result["raw_path"] == "/api/caf%C3%A9"
    assert get(mounted, "/wsgi/caf%C3%A9")["PATH_INFO"] == "/café".encode().decode("latin-1")


def test_mounts_share_one_keep_alive_connection(mounted: Running) -> None:
    with httpx.Client(base_url=mounted.url) as client:
        apps = [client.get(path).json()["app"] for path in ("/wsgi/a", "/api/a", "/api/v2/a", "/", "/wsgi/b")]
    assert apps == ["wsgi", "api", "api_v2", "root", "wsgi"]


def test_each_asgi_mount_gets_its_own_lifespan(mounted: Running, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert get(mounted, "/")["started_by"] == "root"
    assert get(mounted, "/api/x")["started_by"] == "api"
    assert get(mounted, "/api/v2/x")["started_by"] == "api_v2"
    assert mounted.log_path is not None
    started = (mounted.log_path.parent / "lifespan.txt").read_text().split()
    assert sorted(started) == ["api", "api_v2", "root"]  # each exactly once


# -- one server per case --------------------------------------------------------------------------------


def test_root_path_combines_with_mounts(cli_server: Any, tmp_path: Path) -> None:
    write_apps(tmp_path)
    with cli_server([*MOUNTS, "--root-path", "/proxy"], cwd=tmp_path) as srv:
        wsgi = get(srv, "/wsgi/rest")
        assert (wsgi["SCRIPT_NAME"], wsgi["PATH_INFO"]) == ("/proxy/wsgi", "/rest")
        api = get(srv, "/api/x")
        assert (api["app"], api["root_path"], api["path"]) == ("api", "/proxy/api", "/proxy/api/x")
        assert api["raw_path"] == "/proxy/api/x"
        v2 = get(srv, "/api/v2/y")
        assert (v2["app"], v2["root_path"], v2["path"]) == ("api_v2", "/proxy/api/v2", "/proxy/api/v2/y")
        root = get(srv, "/page")
        assert (root["app"], root["root_path"], root["path"]) == ("root", "/proxy", "/proxy/page")


def test_no_match_and_no_root_mount_is_404(cli_server: Any, tmp_path: Path) -> None:
    write_apps(tmp_path)
    with cli_server(["--mount", "/wsgi=apps:wsgi_app", "--mount", "/api=apps:api"], cwd=tmp_path) as srv:
        for path in ("/", "/apix", "/other", "/wsgix/y"):
            response = httpx.get(srv.url + path)
            assert response.status_code == 404, path
            assert response.headers["content-type"].startswith("text/plain")
        assert get(srv, "/api/x")["app"] == "api"
        assert get(srv, "/wsgi/y")["app"] == "wsgi"
        with srv.connect() as sock:  # a 404 from the router keeps the connection usable
            assert http_exchange(sock, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404 ")
            assert http_exchange(sock, b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")


def test_positional_app_is_the_root_mount(cli_server: Any, tmp_path: Path) -> None:
    write_apps(tmp_path)
    with cli_server(["apps:asgi_app", "--mount", "/wsgi=apps:wsgi_app"], cwd=tmp_path) as srv:
        assert get(srv, "/anything")["app"] == "root"
        assert get(srv, "/wsgi/x")["PATH_INFO"] == "/x"


def test_same_app_at_two_prefixes_has_one_lifespan(cli_server: Any, tmp_path: Path) -> None:
    write_apps(tmp_path)
    with cli_server(["--mount", "/a=apps:api", "--mount", "/b=apps:api"], cwd=tmp_path) as srv:
        a, b = get(srv, "/a/x"), get(srv, "/b/x")
        assert (a["root_path"], b["root_path"]) == ("/a", "/b")
        assert a["started_by"] == b["started_by"] == "api"
    assert (tmp_path / "lifespan.txt").read_text().split() == ["api"]


def _wsgi(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b""]


async def _asgi(scope: Any, receive: Any, send: Any) -> None:
    pass


@pytest.mark.parametrize(("policy", "kinds", "options", "batch"), [
    ("auto", ["wsgi"], {}, True),  # the default: a WSGI app alone
    ("auto", ["wsgi", "wsgi"], {"workers": 2}, True),  # as many workers as CPUs
    ("auto", ["wsgi", "asgi3"], {}, False),  # an ASGI app can keep the loop busy by itself
    ("auto", ["asgi3", "wsgi"], {}, False),
    ("auto", ["wsgi"], {"static": True}, False),  # and so can static files,
    ("auto", ["wsgi"], {"tls": True}, False),  # TLS,
    ("auto", ["wsgi"], {"tls": True, "http3": True}, False),  # HTTP/3,
    ("auto", ["wsgi"], {"workers": 3}, False),  # and other workers' loops beyond the CPUs
    ("batch", ["wsgi", "asgi3"], {"static": True, "tls": True, "workers": 3}, True),  # asked for: taken
    ("inherit", ["wsgi"], {}, False),
])
def test_the_wsgi_pool_runs_batch_only_where_asked_or_where_the_loop_works_for_it_alone(
        tmp_path: Path, policy: str, kinds: list[str], options: dict[str, Any], batch: bool) -> None:
    apps = {"wsgi": _wsgi, "asgi3": _asgi}
    mounts = [Mount(f"/m{i}" if i else "", LoadedApp(apps[kind], kind, kind))  # type: ignore[arg-type]
              for i, kind in enumerate(kinds)]
    settings: dict[str, Any] = {"workers": options.get("workers", 1), "http3": options.get("http3", False)}
    if options.get("static"):
        settings["static"] = [f"/static={tmp_path}"]
    if options.get("tls"):
        files = server_files(tmp_path)
        settings.update(ssl_certfile=str(files.cert), ssl_keyfile=str(files.key))
    config = Config(app="unused:app", wsgi_thread_policy=policy, **settings)  # never imported: the mounts are given
    assert thread_policy_batch(config, mounts, cpus=2) is batch
    if options.get("workers", 1) <= len(os.sched_getaffinity(0)):  # the machine's own count, through the table
        table = AppTable(config, mounts)
        assert table.pool is not None and table.pool.batch is batch
