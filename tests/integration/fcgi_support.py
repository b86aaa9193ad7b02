"""Raw FastCGI records for the integration tests: a request's records, and a reader of the answers by request id.

Built on bascule's own encoders (protocols/fastcgi_wire.py), which tests/protocols/test_fastcgi_wire.py checks
against the specification's layout byte for byte.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator

from bascule.protocols.fastcgi_wire import (
    BEGIN_REQUEST,
    END_REQUEST,
    KEEP_CONN,
    PARAMS,
    RESPONDER,
    STDERR,
    STDIN,
    STDOUT,
    encode_pairs,
    record,
)

_HEADER = struct.Struct("!BBHHBx")


def begin(request_id: int, keep: bool = True) -> bytes:
    return record(BEGIN_REQUEST, request_id, struct.pack("!HB5x", RESPONDER, KEEP_CONN if keep else 0))


def cgi_vars(method: str, target: str, body: bytes | None = b"", **extra: str) -> list[tuple[bytes, bytes]]:
    """The variables nginx's fastcgi_params would send for ``method target`` (CONTENT_LENGTH left out when
    ``body`` is None), with ``extra`` added or replacing them."""
    path, _, query = target.partition("?")
    pairs = {"REQUEST_METHOD": method, "REQUEST_URI": target, "QUERY_STRING": query, "SCRIPT_NAME": path,
             "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000",
             "SERVER_NAME": "example.com", "SERVER_PORT": "80", "HTTP_HOST": "example.com"}
    if body is not None:
        pairs["CONTENT_LENGTH"] = str(len(body))
    pairs.update(extra)
    return [(name.encode(), value.encode()) for name, value in pairs.items()]


def request(request_id: int, pairs: list[tuple[bytes, bytes]], body: bytes = b"", keep: bool = True) -> bytes:
    """A whole request: BEGIN_REQUEST, the params in one record and the end, the body and STDIN's end."""
    out = begin(request_id, keep) + record(PARAMS, request_id, encode_pairs(pairs)) + record(PARAMS, request_id)
    for start in range(0, len(body), 65535):
        out += record(STDIN, request_id, body[start:start + 65535])
    return out + record(STDIN, request_id)


class Records:
    """Reads FastCGI records from a socket (its timeout bounds every read)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self) -> tuple[int, int, bytes] | None:
        """(type, request id, content) of the next record, or None at the end of the stream."""
        while True:
            if len(self.buffer) >= 8:
                version, kind, request_id, length, padding = _HEADER.unpack_from(self.buffer)
                assert version == 1, self.buffer[:16]
                if len(self.buffer) >= 8 + length + padding:
                    content = self.buffer[8:8 + length]
                    self.buffer = self.buffer[8 + length + padding:]
                    return kind, request_id, content
            data = self.sock.recv(65536)
            if not data:
                assert not self.buffer, f"the stream ended inside a record: {self.buffer[:32]!r}"
                return None
            self.buffer += data

    def responses(self, ids: set[int]) -> tuple[dict[int, bytes], dict[int, tuple[int, int]], list[tuple[int, int]]]:
        """Read until every request of ``ids`` has its END_REQUEST: each one's STDOUT stream, its (app status,
        protocol status), and the order of the records seen as (type, id)."""
        out: dict[int, bytes] = {request_id: b"" for request_id in ids}
        ends: dict[int, tuple[int, int]] = {}
        order: list[tuple[int, int]] = []
        while set(ends) != ids:
            got = self.next()
            assert got is not None, f"the connection closed before END_REQUEST for {ids - set(ends)}: {out}"
            kind, request_id, content = got
            order.append((kind, request_id))
            assert request_id in ids, (kind, request_id, content)
            assert request_id not in ends, f"a record after END_REQUEST: {(kind, request_id, content)}"
            if kind == STDOUT:
                out[request_id] += content
            elif kind == END_REQUEST:
                app_status, protocol_status = struct.unpack("!IB3x", content)
                ends[request_id] = app_status, protocol_status
            else:
                assert kind == STDERR, (kind, request_id, content)
        return out, ends, order


@contextlib.contextmanager
def fcgi_connection(port: int, timeout: float = 10) -> Iterator[tuple[socket.socket, Records]]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        yield sock, Records(sock)


def split_cgi(stream: bytes) -> tuple[bytes, bytes]:
    head, sep, body = stream.partition(b"\r\n\r\n")
    assert sep, stream[:200]
    return head, body
