"""The public API: ``bascule.run()`` as a script's main call, and ``await bascule.serve()`` embedded in an
event loop the caller owns (which must leave signal handling alone).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from it_support import APPS, can_connect, clean_env, exit_within, tcp_ready, wait_for

import bascule


def test_run_serves_until_sigterm_then_exits_0(tmp_path: Path) -> None:
    port = free_port()
    marker = tmp_path / "lifespan-shutdown"
    script = tmp_path / "serve_it.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(APPS)!r})
        import bascule
        from it_ops_asgi import app

        if __name__ == "__main__":
            bascule.run(app, port={port}, access_log=False)
            print("run() returned")
        """))
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(script)], env=clean_env(IT_MARKER=str(marker)), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: proc.poll() is not None or tcp_ready(port)(), 15), log.read_text()
        r = httpx.get(f"http://127.0.0.1:{port}/hello", timeout=10)
        assert r.status_code == 200 and r.text == "hello"
        proc.send_signal(signal.SIGTERM)
        assert exit_within(proc, 10) is not None
        assert proc.returncode == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    output = log.read_text()
    assert "received SIGTERM" in output
    assert "run() returned" in output
    assert marker.read_text() == "shutdown"


def test_run_reports_startup_errors_like_the_cli(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = ("import bascule\n"
                "def app(environ, start_response):\n"
                "    start_response('200 OK', []); return [b'']\n"
                f"bascule.run(app, port={port})\n")
        result = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True,
                                timeout=20)
    assert result.returncode == 4
    lines = [line for line in result.stderr.splitlines() if line.startswith("bascule: ")]
    assert len(lines) == 1 and f"cannot bind 127.0.0.1:{port}" in lines[0]
    assert "Traceback" not in result.stderr


class RecordingApp:
    """An ASGI app that answers 'embedded' and records its lifespan events."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"embedded"})


def test_serve_in_a_running_loop_is_stopped_by_cancelling(tmp_path: Path) -> None:
    port = free_port()
    app = RecordingApp()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    state: dict[str, Any] = {}
    started = threading.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(bascule.serve(app, port=port, access_log=False))
        state["loop"], state["task"] = loop, task
        started.set()
        try:
            await task
        except asyncio.CancelledError:
            state["outcome"] = "cancelled"
        else:
            state["outcome"] = "returned"

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    assert wait_for(tcp_ready(port), 10)
    r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert r.status_code == 200 and r.text == "embedded"
    assert {sig: signal.getsignal(sig) for sig in before} == before
    state["loop"].call_soon_threadsafe(state["task"].cancel)
    thread.join(10)
    assert not thread.is_alive()
    assert state["outcome"] == "cancelled"
    assert not can_connect(socket.AF_INET, ("127.0.0.1", port))
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_serve_in_the_main_thread_installs_no_signal_handlers(tmp_path: Path) -> None:
    """In a process's main thread, where a server could take signals over, serve() must not."""
    port = free_port()
    script = tmp_path / "embed.py"
    script.write_text(textwrap.dedent(f"""\
        import asyncio, json, signal
        import bascule

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await send({{"type": "http.response.start", "status": 200, "headers": []}})
            await send({{"type": "http.response.body", "body": b"ok"}})

        SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

        def handlers():
            return [signal.getsignal(s) for s in SIGNALS]

        def same(a, b):
            return [x is y for x, y in zip(a, b)]

        async def main():
            before = handlers()
            task = asyncio.create_task(bascule.serve(app, port={port}, access_log=False))
            for _ in range(200):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", {port})
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            writer.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            reply = await reader.read()
            writer.close()
            during = handlers()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            print(json.dumps({{"during": same(before, during), "after": same(before, handlers()),
                              "reply": reply.decode().split("\\r\\n")[0]}}))

        asyncio.run(main())
        """))
    result = subprocess.run([sys.executable, str(script)], env=clean_env(), capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["reply"] == "HTTP/1.1 200 OK"
    assert report["during"] == [True, True, True]
    assert report["after"] == [True, True, True]


@pytest.mark.parametrize("name", ["run", "serve", "Config", "__version__"])
def test_public_names(name: str) -> None:
    assert name in bascule.__all__
    assert hasattr(bascule, name)
