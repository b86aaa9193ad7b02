"""ASGI ``http.response.zerocopysend`` (asgiref's extension) over real sockets: the app's open file, a window of
it or the rest from its position, mixed with body messages, with sendfile on cleartext HTTP/1.1 and pieces
under flow control on HTTP/2."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import serve_in_thread

import bascule.protocols.sendfile as sendfile_module

SIZE = 1024 * 1024 + 77


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(SIZE)
    path = tmp_path / "z.bin"
    path.write_bytes(data)
    return path, data


def app_for(path: Path) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        assert "http.response.zerocopysend" in scope["extensions"]
        route = scope["path"]
        with open(path, "rb") as file:
            if route == "/window":  # a declared window: Content-Length from count
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.zerocopysend", "file": file, "offset": 100, "count": 5000})
            elif route == "/position":  # no offset: from the file's position, which then moves on
                file.seek(1000)
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.zerocopysend", "file": file, "count": 10, "more_body": True})
                await send({"type": "http.response.zerocopysend", "file": file.fileno(), "count": 10,
                            "more_body": True})
                await send({"type": "http.response.body", "body": b"|%d" % file.tell()})
            elif route == "/mixed":  # body, file, body: the order is the body's
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"<", "more_body": True})
                await send({"type": "http.response.zerocopysend", "file": file, "offset": 0, "more_body": True})
                await send({"type": "http.response.body", "body": b">"})
            elif route == "/bad":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.zerocopysend", "file": "not a file"})
            else:  # the whole file
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.zerocopysend", "file": file})

    return app


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_zerocopysend(data_file: tuple[Path, bytes], http2: bool, monkeypatch: pytest.MonkeyPatch,
                      caplog: pytest.LogCaptureFixture) -> None:
    path, data = data_file
    calls: list[int] = []
    real = os.sendfile

    def spy(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        calls.append(n)
        return n

    monkeypatch.setattr(sendfile_module.os, "sendfile", spy)
    with caplog.at_level(logging.ERROR, logger="bascule.error"), serve_in_thread(app_for(path)) as srv, \
            httpx.Client(http1=not http2, http2=http2) as client:
        whole = client.get(srv.url + "/")
        window = client.get(srv.url + "/window")
        position = client.get(srv.url + "/position")
        mixed = client.get(srv.url + "/mixed")
        bad = client.get(srv.url + "/bad")
    assert whole.content == data and whole.headers["content-length"] == str(SIZE)
    assert window.content == data[100:5100] and window.headers["content-length"] == "5000"
    assert position.content == data[1000:1020] + b"|1020"
    assert mixed.content == b"<" + data + b">" and "content-length" not in mixed.headers
    assert bad.status_code == 500
    assert any(r.exc_info and "zerocopysend" in str(r.exc_info[1]) for r in caplog.records)
    assert (sum(calls) == SIZE + 5000 + 20 + SIZE) if not http2 else calls == []
