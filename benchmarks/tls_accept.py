"""TLS accept cost on uvloop: ``create_server(ssl=...)`` against ``start_tls`` after a plain accept (issue 13).

The front door can run the TLS handshake two ways. With ``ssl=`` the loop wraps every accepted socket
itself; with ``loop.start_tls`` the connection is accepted in clear first, which is what lets a PROXY
protocol header be read before TLS (issue 14), at the price of a task and a transport swap per
connection. This script measures both on one server process, side by side in one run: a client process
opens ``--connections`` TLS connections one after the other over loopback (full handshakes, no session
resumption), each reading one byte the server writes once the handshake is done, and reports handshakes
per second for each way, repeated ``--repeats`` times with the order alternating.

    python benchmarks/tls_accept.py --connections 500 --repeats 3

The certificate is made with trustme (a test dependency). Both listeners offer ALPN h2 and http/1.1, as
bascule's do. A third, cleartext listener gives the accept cost without TLS for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class Hello(asyncio.Protocol):
    """Writes one byte as soon as the connection is made (after the handshake, with TLS), then closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"!")  # type: ignore[attr-defined]
        transport.close()


class CPUTime(asyncio.Protocol):
    """Answers with the server process's CPU time so far (seconds), so the client can charge each run."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(repr(time.process_time()).encode())  # type: ignore[attr-defined]
        transport.close()


class StartTLS(asyncio.Protocol):
    """Accepted in clear, then ``start_tls`` (where a PROXY header would be read first, issue 14).

    uvloop starts reading only after ``connection_made`` returns (a pause there is ignored), so the
    ClientHello may reach this protocol before ``start_tls`` has taken the transport: such bytes are kept
    and handed to the TLS protocol once ``start_tls`` has set it (bascule's front door does the same).
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.transport: asyncio.Transport | None = None
        self.early = b""
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.task = asyncio.get_running_loop().create_task(self._handshake())

    def data_received(self, data: bytes) -> None:
        self.early += data
        assert self.transport is not None
        self.transport.pause_reading()

    def _hand_early_bytes(self) -> None:
        data, self.early = self.early, b""
        if data and self.transport is not None:
            tls_protocol: Any = self.transport.get_protocol()
            buffer = tls_protocol.get_buffer(len(data))
            buffer[:len(data)] = data
            tls_protocol.buffer_updated(len(data))

    async def _handshake(self) -> None:
        loop = asyncio.get_running_loop()
        app = Hello()
        assert self.transport is not None
        step = loop.create_task(loop.start_tls(self.transport, app, self.context, server_side=True,
                                               ssl_handshake_timeout=10.0))
        loop.call_soon(self._hand_early_bytes)  # runs after start_tls's first step has set its protocol
        try:
            tls = await step
        except (OSError, TimeoutError, ssl.SSLError):
            self.transport.close()
            return
        if tls is not None:
            app.connection_made(tls)


async def serve(cert: str, key: str, ready_fd: int) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2", "http/1.1"])
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(Hello, "127.0.0.1", 0, ssl=context, backlog=1024, ssl_handshake_timeout=10.0),
        await loop.create_server(lambda: StartTLS(context), "127.0.0.1", 0, backlog=1024),
        await loop.create_server(Hello, "127.0.0.1", 0, backlog=1024),
        await loop.create_server(CPUTime, "127.0.0.1", 0),
    ]
    ports = [srv.sockets[0].getsockname()[1] for srv in servers]
    os.write(ready_fd, (" ".join(map(str, ports)) + "\n").encode())
    os.close(ready_fd)
    await asyncio.Event().wait()  # until killed


def server_cpu(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        return float(sock.makefile("rb").read())


def handshakes_per_second(port: int, count: int, context: ssl.SSLContext | None, resume: bool = False) -> float:
    """``count`` connections one after the other; with ``resume``, each resumes the previous one's session."""
    session: ssl.SSLSession | None = None
    start = time.perf_counter()
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            if context is None:
                sock: socket.socket = raw
            else:
                sock = context.wrap_socket(raw, server_hostname="localhost", session=session)
            if sock.recv(1) != b"!":
                raise RuntimeError("the server did not answer")
            if resume and isinstance(sock, ssl.SSLSocket):
                if session is not None and not sock.session_reused:
                    raise RuntimeError("the server did not resume the TLS session")
                session = sock.session
            sock.close()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500, help="sequential connections per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each way (order alternates)")
    parser.add_argument("--resume", action="store_true", help="resume the previous TLS session (abbreviated "
                        "handshakes, as returning browsers make), instead of full handshakes")
    parser.add_argument("--serve", nargs=3, metavar=("CERT", "KEY", "FD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(args.serve[0], args.serve[1], int(args.serve[2])))
        return
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        ready_r, ready_w = os.pipe()
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(cert), str(key), str(ready_w)],
                                pass_fds=(ready_w,))
        os.close(ready_w)
        try:
            with os.fdopen(ready_r) as ready:
                ssl_port, start_tls_port, clear_port, cpu_port = map(int, ready.readline().split())
            client = ssl.create_default_context()
            ca.configure_trust(client)
            client.set_alpn_protocols(["h2", "http/1.1"])
            handshakes_per_second(ssl_port, 50, client)  # warm both up
            handshakes_per_second(start_tls_port, 50, client)
            ways = {"create_server(ssl=)": ssl_port, "start_tls": start_tls_port}
            resume = args.resume
            rates: dict[str, list[float]] = {name: [] for name in ways}
            cpu: dict[str, list[float]] = {name: [] for name in ways}  # server CPU microseconds per connection
            clear: list[float] = []
            for i in range(args.repeats):
                order = list(ways.items()) if i % 2 == 0 else list(reversed(ways.items()))
                for name, port in order:
                    before = server_cpu(cpu_port)
                    rates[name].append(handshakes_per_second(port, args.connections, client, resume))
                    cpu[name].append((server_cpu(cpu_port) - before) * 1e6 / args.connections)
                clear.append(handshakes_per_second(clear_port, args.connections, None))
        finally:
            proc.kill()
            proc.wait()
    kind = "resumed" if args.resume else "full"
    print(f"uvloop, {args.connections} sequential TLS connections ({kind} handshakes) per run, {args.repeats} runs "
          f"(Python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION})")
    for name, values in rates.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        spent = ", ".join(f"{v:.0f}" for v in cpu[name])
        print(f"  {name:<20} median {statistics.median(values):7.0f} handshakes/s   (runs: {runs}); "
              f"server CPU median {statistics.median(cpu[name]):5.0f} us/connection (runs: {spent})")
    ratio = statistics.median(rates["start_tls"]) / statistics.median(rates["create_server(ssl=)"])
    cpu_ratio = statistics.median(cpu["start_tls"]) / statistics.median(cpu["create_server(ssl=)"])
    print(f"  start_tls / ssl=     rate {ratio:.3f}, server CPU per connection {cpu_ratio:.3f}")
    print(f"  cleartext (no TLS)   median {statistics.median(clear):7.0f} connections/s")


if __name__ == "__main__":
    main()
