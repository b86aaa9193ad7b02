"""JSON access lines and request ids from a real ``bascule`` process, read by real clients (curl over HTTP/1.1
and HTTP/2, httpx, nginx in front): every line parses, says what the client and the app saw, and a user's own
formatter (--log-config) gets the same fields."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from it_support import log_lines_with, spawn, tcp_ready, wait_for
from nginx_support import have_nginx, nginx, server

from bascule.accesslog import JSON_KEYS

CURL = shutil.which("curl")
HEX32 = re.compile(r"[0-9a-f]{32}")
AGENT = 'evil"\\\t{"status":500} \u00e9'  # quote, backslash, tab, JSON, non-ASCII: llhttp lets these through
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def json_lines(log: Path, count: int) -> list[dict[str, object]]:
    """The access lines of ``log`` (stdout and stderr together: the JSON objects are the lines that start
    with ``{``), waiting for ``count``; each must parse, with exactly the documented keys in order."""
    lines = log_lines_with(log, '{"time":', count, timeout=10)
    records = [json.loads(line) for line in lines]
    for line, record in zip(lines, records, strict=True):
        assert line.startswith("{") and list(record) == list(JSON_KEYS), line
    return records


def curl(*args: str) -> tuple[dict[str, str], str]:
    """curl's response headers (lower-cased names) and body."""
    assert CURL is not None
    out = subprocess.run([CURL, "-sS", "-D", "-", *args], capture_output=True, timeout=15, check=True).stdout
    head, _, body = out.decode("latin-1").partition("\r\n\r\n")
    headers = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


@pytest.mark.skipif(CURL is None, reason="needs curl")
def test_json_lines_from_two_workers_with_curl_and_httpx(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with spawn(["it_request_id_app:app", "--port", str(port), "--workers", "2", "--access-log-format", "json"],
               log=log, ready=tcp_ready(port)) as proc:
        assert wait_for(lambda: len(children(proc.pid)) == 2, 10)
        workers = children(proc.pid)
        base = f"http://127.0.0.1:{port}"
        h1, body1 = curl("-A", AGENT, "-H", f"traceparent: {TRACEPARENT}", base + "/id?q=%22x%22&n=1")
        h2, body2 = curl("--http2-prior-knowledge", "-H", "X-Request-ID: from-a-trusted-peer", base + "/id")
        with httpx.Client() as client:
            streamed = client.get(base + "/stream", headers={"X-Request-ID": "not valid!"})
            raw = client.get(base + "/a%0Ab/%C3%A9")
        records = json_lines(log, 4)
    by_path = {record["path"]: record for record in records if record["path"] != "/id"}
    ids = {record["protocol"]: record for record in records if record["path"] == "/id"}
    one, two = ids["HTTP/1.1"], ids["HTTP/2"]
    # made here (the client sent none): the app, the response and the line agree
    assert HEX32.fullmatch(str(one["request_id"]))
    assert json.loads(body1) == {"extension": one["request_id"], "header": one["request_id"]}
    assert h1["x-request-id"] == one["request_id"]
    assert (one["query"], one["traceparent"]) == ("q=%22x%22&n=1", TRACEPARENT)
    assert one["user_agent"] == AGENT.encode().decode("latin-1")  # the bytes as received, one code point each
    assert (one["method"], one["status"], one["client"], one["peer"]) == ("GET", 200, "127.0.0.1", "127.0.0.1")
    assert one["bytes"] == len(body1)
    # from loopback, which --forwarded-allow-ips trusts by default: kept
    assert two["request_id"] == "from-a-trusted-peer" == h2["x-request-id"]
    assert json.loads(body2)["extension"] == "from-a-trusted-peer"
    # an invalid one is replaced; the head went out well before the end of the body
    stream = by_path["/stream"]
    assert HEX32.fullmatch(str(stream["request_id"])) and streamed.headers["x-request-id"] == stream["request_id"]
    assert isinstance(stream["ttfb_ms"], float) and isinstance(stream["duration_ms"], float)
    assert stream["ttfb_ms"] < 200 <= stream["duration_ms"]
    assert raw.status_code == 200 and "/a%0Ab/%C3%A9" in by_path
    assert {record["worker"] for record in records} <= workers  # the worker's pid, never the master's


@pytest.mark.skipif(not have_nginx(), reason="needs nginx")
def test_nginx_request_id_is_believed_and_echoed(tmp_path: Path) -> None:
    """nginx in front setting ``X-Request-ID $request_id``: the same id in nginx, the app and the line."""
    port, front = free_port(), free_port()
    log = tmp_path / "server.log"
    location = (f"proxy_pass http://127.0.0.1:{port}; proxy_set_header X-Request-ID $request_id; "
                f"add_header X-Nginx-Request-ID $request_id;")
    with spawn(["it_request_id_app:wsgi", "--port", str(port), "--access-log-format", "json"], log=log,
               ready=tcp_ready(port)), nginx(tmp_path / "nginx", server(front, location), [front]):
        response = httpx.get(f"http://127.0.0.1:{front}/id", headers={"X-Request-ID": "the-clients-own"})
        (record,) = json_lines(log, 1)
    rid = response.headers["x-nginx-request-id"]
    assert HEX32.fullmatch(rid) and rid != "the-clients-own"
    assert response.json() == {"environ": rid, "header": rid}
    assert record["request_id"] == rid and response.headers["x-request-id"] == rid


def test_a_log_config_formatter_reads_the_fields(tmp_path: Path) -> None:
    """--log-config with a formatter of the user's naming the record attributes, text access format."""
    port = free_port()
    out = tmp_path / "access.log"
    config = tmp_path / "logging.json"
    config.write_text(json.dumps({
        "version": 1,
        "formatters": {"mine": {"format": "%(request_id)s|%(method)s|%(path)s|%(status)d|%(protocol)s|%(worker)d"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(out), "formatter": "mine"}},
        "loggers": {"bascule.access": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    }))
    with spawn(["it_request_id_app:wsgi", "--port", str(port), "--log-config", str(config), "--request-id", "on"],
               log=tmp_path / "server.log", ready=tcp_ready(port)) as proc:
        response = httpx.get(f"http://127.0.0.1:{port}/id")
        lines = log_lines_with(out, "|GET|", 1)
    rid = response.headers["x-request-id"]
    assert lines == [f"{rid}|GET|/id|200|HTTP/1.1|{proc.pid}"]
