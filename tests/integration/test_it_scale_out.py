"""The scale-out test: two bascule instances behind a real nginx upstream and a real HAProxy, restarted in
turn under load with SIGTERM and --shutdown-delay, and not one request lost.

Instance "a" is a master with two workers, instance "b" one process, so both ways of draining are on the
path. Each has an admin listener; HAProxy checks ``GET /readyz`` there (``option httpchk``) every 200 ms and
takes an instance out of rotation on the first failure, which is what ``--shutdown-delay`` gives it time for.

- HAProxy runs in TCP mode without retries: a Layer-4 balancer, as kube-proxy or a cloud network balancer
  is, which cannot replay a connection the backend refused. This is the case the delay exists for: without
  it (measured with --shutdown-delay 0, same test otherwise) wrk saw socket errors through HAProxy (5 in one
  run), the connections it sent to an instance that had stopped accepting before the check noticed.
- nginx has no active checks: it keeps sending to a draining instance (which still serves), and once the
  instance stops accepting, passes the refused connection to the other one (``proxy_next_upstream error``),
  as it does any idempotent request whose keep-alive connection the upstream closed.

Load: two wrk clients (one per proxy, 1 thread, 4 keep-alive connections each) for a bounded time; the test
fails on any socket error or any response that is not 2xx, and checks that both instances serve through both
proxies after their restarts.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from it_support import APPS, clean_env, exit_within, spawn, stop, tcp_ready, wait_for
from nginx_support import NGINX, nginx
from test_it_admin import get

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
WRK = shutil.which("wrk")
APP = "it_admin_app:app"
DELAY = 1.5
LOAD_SECONDS = 18

pytestmark = pytest.mark.skipif(NGINX is None or HAPROXY is None or WRK is None,
                                reason="needs nginx, haproxy and wrk (apt-get install nginx haproxy wrk)")


class Instance:
    """One bascule instance on fixed ports, so it can be stopped and started again in the same place."""

    def __init__(self, tmp: Path, name: str, *extra: str) -> None:
        self.tmp, self.name, self.extra = tmp, name, extra
        self.port, self.admin = free_port(), free_port()
        self.starts = 0
        self._stack: contextlib.ExitStack | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        args = [APP, "--port", str(self.port), "--admin-bind", f"127.0.0.1:{self.admin}", "--no-access-log",
                "--shutdown-delay", str(DELAY), "--timeout-graceful-shutdown", "5", *self.extra]
        self._stack = contextlib.ExitStack()
        self.proc = self._stack.enter_context(spawn(args, cwd=APPS, env=clean_env(IT_NAME=self.name),
                                                    log=self.tmp / f"{self.name}-{self.starts}.log",
                                                    ready=tcp_ready(self.port)))
        assert wait_for(lambda: get(self.admin, "/readyz")[0] == 200, 15)

    def restart(self) -> float:
        """SIGTERM, wait for the exit (0), start again; the seconds the old one took to go."""
        assert self.proc is not None and self._stack is not None
        self.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: get(self.admin, "/readyz")[0] == 503, 1)  # not ready at once
        took = exit_within(self.proc, 15)
        assert took is not None and self.proc.returncode == 0, (self.tmp / f"{self.name}-{self.starts}.log").read_text()
        self._stack.close()
        self.start()
        return took

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()


@contextlib.contextmanager
def haproxy(tmp: Path, front: int, instances: list[Instance]) -> Iterator[Path]:
    assert HAPROXY is not None
    servers = "\n".join(f"    server {i.name} 127.0.0.1:{i.port} check port {i.admin} inter 200ms fall 1 rise 2"
                        for i in instances)
    config = tmp / "haproxy.cfg"
    config.write_text(f"""
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 0
frontend front
    bind 127.0.0.1:{front}
    default_backend app
backend app
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers}
""")
    log = tmp / "haproxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        assert wait_for(lambda: proc.poll() is not None or tcp_ready(front)(), 10) and proc.poll() is None, \
            log.read_text()
        yield log
    finally:
        stop(proc)


def nginx_blocks(front: int, instances: list[Instance]) -> str:
    servers = " ".join(f"server 127.0.0.1:{i.port} max_fails=0;" for i in instances)
    return f"""
upstream app {{ {servers} keepalive 16; }}
server {{
    listen 127.0.0.1:{front};
    location / {{
        proxy_pass http://app;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_next_upstream error timeout;
        proxy_connect_timeout 2s;
    }}
}}
"""


def wrk(port: int, seconds: int) -> subprocess.Popen[str]:
    assert WRK is not None
    return subprocess.Popen([WRK, "-t1", "-c4", f"-d{seconds}s", "--timeout", "5s", f"http://127.0.0.1:{port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_result(proc: subprocess.Popen[str]) -> tuple[int, int, int, str]:
    """(requests, socket errors, non-2xx/3xx responses, the whole output) of a finished wrk."""
    out, _ = proc.communicate(timeout=LOAD_SECONDS + 30)
    done = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert done is not None, out
    return (int(done.group(1)), sum(int(n) for n in errors.groups()) if errors else 0,
            int(non2xx.group(1)) if non2xx else 0, out)


def names_through(port: int, tries: int = 20) -> set[str]:
    return {get(port, "/")[1].split()[0].decode() for _ in range(tries)}


def test_rolling_restart_behind_nginx_and_haproxy_loses_no_request(tmp_path: Path) -> None:
    instances = [Instance(tmp_path, "a", "--workers", "2"), Instance(tmp_path, "b")]
    nginx_front, haproxy_front = free_port(), free_port()
    try:
        for instance in instances:
            instance.start()
        with nginx(tmp_path / "nginx", nginx_blocks(nginx_front, instances), [nginx_front]), \
                haproxy(tmp_path, haproxy_front, instances) as haproxy_log:
            assert wait_for(lambda: names_through(haproxy_front, 6) == {"a", "b"}, 10), haproxy_log.read_text()
            assert names_through(nginx_front, 6) == {"a", "b"}
            loads = [wrk(nginx_front, LOAD_SECONDS), wrk(haproxy_front, LOAD_SECONDS)]
            started = time.monotonic()
            try:
                time.sleep(2)
                took = []
                for instance in instances:
                    took.append(instance.restart())
                    time.sleep(1.5)  # HAProxy's rise (2 checks 200 ms apart) and a moment of both serving
                assert time.monotonic() - started < LOAD_SECONDS - 1, "the restarts outlasted the load"
            finally:
                results = [wrk_result(load) for load in loads]
            assert all(t >= DELAY for t in took), took  # each served on through its delay
            for front in (nginx_front, haproxy_front):
                assert wait_for(lambda front=front: names_through(front, 6) == {"a", "b"}, 5)  # both back
        for (done, errors, non2xx, out), proxy in zip(results, ("nginx", "haproxy"), strict=True):
            assert errors == 0 and non2xx == 0, f"{proxy}: {out}"
            assert done > 500, f"{proxy}: {out}"
            print(f"{proxy}: {done} requests in {LOAD_SECONDS} s through two rolling restarts, 0 failed")
        haproxy_text = haproxy_log.read_text()
        assert "is DOWN" in haproxy_text and "is UP" in haproxy_text  # the checks took each one out, then back
    finally:
        for instance in instances:
            instance.close()
