"""benchmarks/suite.py: the servers run.py measures, how each is started, and --bascule-build's extra ones."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import procs
import suite

ENV = suite.Env(Path("/peers/bin"), "/py/python", ("--wsgi-threads", "8"))


@pytest.fixture
def servers() -> Iterator[None]:
    """SERVERS as it was: add_build registers into it."""
    before = dict(suite.SERVERS)
    yield
    suite.SERVERS.clear()
    suite.SERVERS.update(before)


def test_bascule_and_a_peer_on_a_port() -> None:
    assert suite.SERVERS["bascule-wsgi"].argv(ENV, 8000) == [
        "/py/python", "-m", "bascule", "apps:wsgi_app", "--app-dir", str(procs.HERE), "--interface", "wsgi",
        "--host", "127.0.0.1", "--port", "8000", "--no-access-log", "--wsgi-threads", "8"]
    assert suite.SERVERS["bascule-asgi"].argv(ENV, "PORT")[7] == "asgi3"
    assert suite.SERVERS["hypercorn-asgi"].argv(ENV, 9) == [
        "/peers/bin/hypercorn", "-b", "127.0.0.1:9", "-k", "uvloop", "-w", "1", "apps:asgi_app"]
    assert [s.name for s in suite.SERVERS.values() if s.is_ours()] == [
        "bascule-asgi", "bascule-wsgi", "bascule-wsgi-loop"]


def test_add_build_registers_bascule_from_another_interpreter(servers: None) -> None:
    suite.add_build("before", "/v/before/python")
    asgi = suite.SERVERS["bascule-asgi@before"]
    assert (asgi.python, asgi.interface, asgi.h2c, asgi.is_ours()) == ("/v/before/python", "asgi", True, True)
    assert asgi.argv(ENV, 1)[:4] == ["/v/before/python", "-m", "bascule", "apps:asgi_app"]
    assert suite.SERVERS["bascule-wsgi@before"].argv(ENV, 1)[0] == "/v/before/python"
    loop = suite.SERVERS["bascule-wsgi-loop@before"].argv(ENV, 1)  # still loop mode, as the server it copies
    assert loop[0] == "/v/before/python" and loop[-4:] == ["--wsgi-mode", "loop", "--wsgi-threads", "8"]
    suite.add_build("after", "/v/after/python")  # built on the built-in servers, not on @before's
    assert "bascule-asgi@before@after" not in suite.SERVERS
    assert suite.SERVERS["bascule-asgi@after"].python == "/v/after/python"


def test_scenarios() -> None:
    assert set(suite.DEFAULT_SCENARIOS) | set(suite.QUICK_SCENARIOS) <= set(suite.SCENARIOS)
    assert "h2c" not in suite.DEFAULT_SCENARIOS and suite.SCENARIOS["h2c"].tool == "h2load"
    echo = suite.SCENARIOS["echo"]
    assert (echo.method, echo.body_size) == ("POST", suite.ECHO_SIZE)
