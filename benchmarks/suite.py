"""What benchmarks/run.py measures: the servers (how each starts), the scenarios, a result, a run's plan.

Every server serves benchmarks/apps.py, one worker process, at its defaults apart from the flags in
:data:`SERVERS`; bascule runs from ``--bascule-python`` (or a ``--bascule-build``'s interpreter), the peers
from their venv. idle_rss.py starts the same servers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import procs
from loadtools import H2_STREAMS, Scenario, Tools

# --------------------------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Env:
    """Where things are: the peers' bin dir, bascule's interpreter and extra flags."""

    peers_bin: Path
    bascule_python: str
    bascule_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Server:
    """One contender: how to start it on a port, and what it is."""

    name: str
    interface: str  # "asgi" or "wsgi"
    distribution: str  # whose version the report names
    argv: Callable[[Env, int | str], list[str]]
    h2c: bool = False  # serves HTTP/2 with prior knowledge on a cleartext port
    python: str = ""  # bascule of a --bascule-build: its interpreter ('' for --bascule-python's)
    extra: tuple[str, ...] = ()  # bascule's own options for this server (--wsgi-mode loop), kept by add_build

    def is_ours(self) -> bool:
        return self.distribution == "bascule"


def _bascule(interface: str, python: str = "", *extra: str) -> Callable[[Env, int | str], list[str]]:
    def argv(env: Env, port: int | str) -> list[str]:
        return [python or env.bascule_python, "-m", "bascule", f"apps:{interface}_app", "--app-dir", str(procs.HERE),
                "--interface", "asgi3" if interface == "asgi" else interface,
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log", *extra, *env.bascule_args]
    return argv


def _peer(tool: str, *args: str) -> Callable[[Env, int | str], list[str]]:
    def argv(env: Env, port: int | str) -> list[str]:
        return [str(env.peers_bin / tool), *(a.replace("{port}", str(port)) for a in args)]
    return argv


_LOOP = ("--wsgi-mode", "loop")
#: Servers measured only when --servers names them.
OPT_IN = ("bascule-wsgi-loop",)
SERVERS: dict[str, Server] = {s.name: s for s in (
    Server("bascule-asgi", "asgi", "bascule", _bascule("asgi"), h2c=True),
    Server("bascule-wsgi", "wsgi", "bascule", _bascule("wsgi"), h2c=True),
    # --wsgi-mode loop beside the default threads mode (issue 18); only when --servers names it
    Server("bascule-wsgi-loop", "wsgi", "bascule", _bascule("wsgi", "", *_LOOP), h2c=True, extra=_LOOP),
    Server("uvicorn-asgi", "asgi", "uvicorn", _peer(
        "uvicorn", "apps:asgi_app", "--host", "127.0.0.1", "--port", "{port}", "--loop", "uvloop",
        "--http", "httptools", "--no-access-log", "--log-level", "warning")),
    Server("uvicorn-wsgi", "wsgi", "uvicorn", _peer(
        "uvicorn", "apps:wsgi_app", "--interface", "wsgi", "--host", "127.0.0.1", "--port", "{port}",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning")),
    Server("granian-asgi", "asgi", "granian", _peer(
        "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1",
        "apps:asgi_app"), h2c=True),
    Server("granian-wsgi", "wsgi", "granian", _peer(
        "granian", "--interface", "wsgi", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1",
        "apps:wsgi_app"), h2c=True),
    Server("hypercorn-asgi", "asgi", "hypercorn", _peer(
        "hypercorn", "-b", "127.0.0.1:{port}", "-k", "uvloop", "-w", "1", "apps:asgi_app"), h2c=True),
    Server("gunicorn-gthread", "wsgi", "gunicorn", _peer(
        "gunicorn", "-b", "127.0.0.1:{port}", "-w", "1", "-k", "gthread", "--threads", "8",
        "apps:wsgi_app")),
    Server("waitress-wsgi", "wsgi", "waitress", _peer(
        "waitress-serve", "--listen=127.0.0.1:{port}", "apps:wsgi_app")),
)}



def add_build(label: str, python: str) -> None:
    """--bascule-build LABEL=PYTHON: bascule's servers again as ``NAME@LABEL``, run by ``python``, registered
    like the built-in servers so that every lookup finds them."""
    for base in [s for s in SERVERS.values() if s.is_ours() and not s.python]:
        name = f"{base.name}@{label}"
        SERVERS[name] = replace(base, name=name, argv=_bascule(base.interface, python, *base.extra), python=python)


# ------------------------------------------------------------------------------------------- scenarios


ECHO_SIZE = 16 * 1024
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("text", "GET / (13 B text), 64 keep-alive connections", "/", 64),
    Scenario("json", "GET /json (~1 KiB JSON), 64 connections", "/json", 64),
    Scenario("big", "GET /big (64 KiB body), 64 connections", "/big", 64),
    Scenario("echo", "POST /echo (16 KiB body echoed), 64 connections", "/echo", 64, "POST", ECHO_SIZE),
    Scenario("stream", "GET /stream (16 x 1 KiB chunks, chunked), 64 connections", "/stream", 64),
    Scenario("text-1000", "GET / (13 B text), 1000 keep-alive connections", "/", 1000),
    Scenario("newconn", "GET / with `Connection: close`: a new connection per request, 32 clients",
             "/", 32, headers=("Connection: close",)),
    Scenario("h2c", f"GET / over HTTP/2 cleartext (h2load, 16 connections x {H2_STREAMS} streams)",
             "/", 16, tool="h2load"),
)}
DEFAULT_SCENARIOS = ("text", "json", "big", "echo", "stream", "text-1000", "newconn")
QUICK_SCENARIOS = ("text", "echo", "stream", "newconn")


# --------------------------------------------------------------------------------------------- results


@dataclass
class Result:
    """One server in one scenario."""

    server: str
    scenario: str
    status: str = "ok"  # "ok", "failed", "skipped"
    note: str = ""
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    error_detail: str = ""
    requests: int = 0
    runs_rps: list[float] = field(default_factory=list)
    idle_rss_kib: int | None = None
    peak_rss_kib: int | None = None
    others_cpu_pct: float | None = None  # CPU used by other work on the machine during the measured run
    log: str = ""


@dataclass
class Plan:
    """What one run measures (servers x scenarios, in rounds), for how long, with what, and where it logs."""

    servers: list[Server]
    scenarios: list[Scenario]
    seconds: float
    warmup: float
    repeat: int
    env: Env
    tools: Tools
    server_cpu: str | None
    start_timeout: float
    log_dir: Path
    quiet_wait: float = 0.0  # seconds to wait, at most, for other work to stop before each run
    busy_retries: int = 0  # how many times a disturbed run is measured again
