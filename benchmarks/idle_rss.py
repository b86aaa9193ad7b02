"""Idle memory: each server's RSS at rest, and what one idle keep-alive connection adds to it (issue 3).

For each server of benchmarks/run.py (the same commands, one worker): start it, make 20 warm-up requests,
read its RSS (the whole process tree) after a pause: that is "idle". Then open ``--connections``
keep-alive connections, send one request on each (HTTP/1.1, or HTTP/2 with ``--h2``), read every answer,
leave them all open and idle, pause, read RSS again: the difference divided by the connection count is the
cost of one idle keep-alive connection (the client side's sockets are not in the server's RSS). One server
runs at a time; nothing else is loaded.

    python benchmarks/idle_rss.py [--servers bascule-asgi,uvicorn-asgi,granian-asgi] [--connections 1000]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import procs  # benchmarks/procs.py: ports, RSS over a process tree, stopping a server
import suite  # benchmarks/suite.py: run.py's servers and their commands

_BLOCK = b"\x82\x84\x86\x41\x09127.0.0.1"  # HPACK: GET, /, http, :authority 127.0.0.1
H2_REQUEST = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # preface + SETTINGS
              + len(_BLOCK).to_bytes(3, "big") + b"\x01\x05\x00\x00\x00\x01" + _BLOCK)  # HEADERS, stream 1


def one_request(port: int, h2: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if h2:
        sock.sendall(H2_REQUEST)
        data = b""
        while b"Hello" not in data:  # the DATA frame of the answer
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the answer")
            data += chunk
    else:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        data = b""
        while not data.endswith(b"Hello, world!"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the answer")
            data += chunk
    return sock


def measure(server: suite.Server, env: suite.Env, connections: int, h2: bool, settle: float) -> tuple[int, int] | str:
    port = procs.free_port()
    argv = server.argv(env, port)
    if server.is_ours() or server.distribution == "uvicorn":
        argv += ["--timeout-keep-alive", "600"]  # idle connections must outlive the measurement
    elif server.distribution == "gunicorn":
        argv += ["--keep-alive", "600"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=procs.HERE, start_new_session=True)
        try:
            if not procs.wait_port(port, proc, 30):
                return "did not start"
            for _ in range(20):
                one_request(port, h2).close()
            time.sleep(settle)
            idle = procs.tree_rss_kib(proc.pid)
            socks = [one_request(port, h2) for _ in range(connections)]
            time.sleep(settle)
            loaded = procs.tree_rss_kib(proc.pid)
            alive = sum(1 for s in socks if _open(s))
            for s in socks:
                s.close()
            if alive < connections:
                return f"closed {connections - alive} idle connections within {settle} s"
            return idle, loaded
        except (OSError, ConnectionError) as exc:
            return f"failed: {exc}"
        finally:
            procs.stop(proc)


def _open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="bascule-asgi,uvicorn-asgi,granian-asgi,bascule-wsgi,uvicorn-wsgi,"
                                         "gunicorn-gthread")
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--h2", action="store_true", help="HTTP/2 connections (prior knowledge) instead of HTTP/1.1")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait before each RSS reading")
    args = ap.parse_args()
    procs.raise_nofile()
    env = suite.Env(peers_bin=Path("/tmp/bascule-peers/bin"), bascule_python=sys.executable)
    print(f"| server | idle RSS | RSS with {args.connections} idle {'h2' if args.h2 else 'HTTP/1.1'} "
          f"connections | per connection |")
    print("|---|---:|---:|---:|")
    for name in args.servers.split(","):
        server = suite.SERVERS[name]
        if args.h2 and not server.h2c:
            continue
        result = measure(server, env, args.connections, args.h2, args.settle)
        if isinstance(result, str):
            print(f"| {name} | {result} | | |")
            continue
        idle, loaded = result
        per = (loaded - idle) / args.connections
        print(f"| {name} | {idle / 1024:.1f} MiB | {loaded / 1024:.1f} MiB | {per:.1f} KiB |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
