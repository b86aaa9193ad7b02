"""benchmarks/wakeups.py and the WSGI options of callgrind.py and of run.py's servers (suite.py): issue 18's
profiling tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import callgrind
import suite
import wakeups


def test_count_is_the_difference_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    tables = {0: {"futex": 100, "write": 10}, 1000: {"futex": 14_100, "write": 2010, "read": 2000}}
    monkeypatch.setattr(wakeups, "traced_calls", lambda _python, _args, requests: tables[requests])
    calls = wakeups.count("python", argparse.Namespace(requests=1000))
    assert calls == {"futex": 14.0, "write": 2.0, "read": 2.0}


def test_callgrind_wsgi_app_and_path_names() -> None:
    args = callgrind.parse_args(["--app", "wsgi", "--protocols", "h1", "python3"])
    assert args.app == "wsgi" and callgrind.APPS["wsgi"] == ("apps:wsgi_app", "wsgi")
    assert callgrind.path_name("h1", "wsgi") == "HTTP/1.1 -> WSGI"
    assert callgrind.path_name("h2", "asgi") == "HTTP/2 -> ASGI"


def test_wsgi_loop_server_is_opt_in() -> None:
    assert "bascule-wsgi-loop" in suite.SERVERS and "bascule-wsgi-loop" in suite.OPT_IN
    env = argparse.Namespace(bascule_python="py", bascule_args=[])
    argv = suite.SERVERS["bascule-wsgi-loop"].argv(env, 8000)  # type: ignore[arg-type]
    assert argv[-2:] == ["--wsgi-mode", "loop"]
