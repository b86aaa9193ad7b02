"""Conformance: the Autobahn case suite (through kosoku, in fuzzingclient mode) against an echo app.

Every case outside 9.* (the performance cases, run by hand) must end OK, NON-STRICT or INFORMATIONAL; one
FAILED, UNIMPLEMENTED or ERROR case fails the test and is named. Categories 12 and 13 (permessage-deflate,
thousands of compressed messages: minutes of CPU) run in CI (``CI`` set) or with BASCULE_AUTOBAHN_ALL=1;
the rest (a few seconds) always. Keepalive pings are off for the run: no case involves them, and kosoku
stops a case that receives an unsolicited ping.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from it_support import clean_env, spawn, tcp_ready

pytestmark = pytest.mark.skipif(importlib.util.find_spec("kosoku") is None, reason="needs kosoku (pip install kosoku)")
KOSOKU = [sys.executable, "-c", "import sys; from kosoku._cli import main; sys.exit(main())"]  # its console script

ECHO_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
'''


SLOW_GROUPS_ENABLED = bool(os.environ.get("CI") or os.environ.get("BASCULE_AUTOBAHN_ALL"))


@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("include", "exclude", "minimum"), [
    pytest.param(["*"], ["9.*", "12.*", "13.*"], 240, id="1-8,10"),
    pytest.param(["12.*", "13.*"], [], 200, id="12-13-compression", marks=pytest.mark.skipif(
        not SLOW_GROUPS_ENABLED, reason="minutes of CPU: runs in CI (CI=1) or with BASCULE_AUTOBAHN_ALL=1")),
])
def test_autobahn_cases(tmp_path: Path, include: list[str], exclude: list[str], minimum: int) -> None:
    (tmp_path / "autobahn_echo.py").write_text(ECHO_APP)
    port = free_port()
    report = tmp_path / "report"
    selection = [arg for case in include for arg in ("-i", case)] + [arg for case in exclude for arg in ("-x", case)]
    with spawn(["autobahn_echo:app", "--port", str(port), "--ws-ping-interval", "0", "--no-access-log",
                "--lifespan", "off"], cwd=tmp_path, env=clean_env(), log=tmp_path / "server.log",
               ready=tcp_ready(port)) as proc:
        run = subprocess.run([*KOSOKU, f"127.0.0.1:{port}", *selection, "-p", "2", "-o", str(report)],
                             capture_output=True, text=True, timeout=1150)
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
    index = json.loads((report / "index.json").read_text())
    results = {case: result for cases in index.values() for case, result in cases.items()}
    assert len(results) >= minimum, run.stdout + run.stderr
    bad = {case: (r["behavior"], r["behaviorClose"]) for case, r in results.items()
           if r["behavior"] in ("FAILED", "UNIMPLEMENTED", "ERROR")}
    assert not bad, f"{len(bad)} Autobahn case(s) failed: {bad}\n{run.stdout[-3000:]}"
