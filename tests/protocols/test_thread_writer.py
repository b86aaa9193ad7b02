"""ThreadWriter (protocols/thread_writer.py): a duplicate of a connection's socket that WSGI pool threads write
complete responses to. Raw sockets: what the peer reads, what is handed back when the socket is full or
broken, and that closing waits for a write in progress and never touches the connection's own descriptor."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bascule.protocols.thread_writer import ThreadWriter


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)  # as uvloop's transports are
    try:
        yield ours, peer
    finally:
        ours.close()
        peer.close()


def _read(sock: socket.socket, count: int) -> bytes:
    data = b""
    sock.settimeout(5)
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "peer closed early"
        data += chunk
    return data


def _fill(sock: socket.socket) -> None:
    """Write until the socket's buffers are full (EAGAIN)."""
    while True:
        try:
            sock.send(b"x" * 65536)
        except BlockingIOError:
            return


def test_a_complete_write_hands_nothing_back(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    writer = ThreadWriter(ours.fileno())
    with writer.lock:
        assert writer.send(b"HTTP/1.1 200 OK\r\n\r\nhi") == b""
    assert _read(peer, 21) == b"HTTP/1.1 200 OK\r\n\r\nhi"
    with writer.lock:
        assert writer.send(b"head|", b"body") == b""  # head and body in one writev
    assert _read(peer, 9) == b"head|body"
    writer.close()


def test_a_full_socket_hands_back_all_of_it_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _peer = pair
    _fill(ours)
    writer = ThreadWriter(ours.fileno())
    with writer.lock:
        assert writer.send(b"head", b"body") == b"headbody"
        assert writer.send(b"head") == b"head"
    writer.close()


@pytest.mark.parametrize("head_size", [10, 300_000])
def test_a_partial_write_hands_back_exactly_the_rest(pair: tuple[socket.socket, socket.socket],
                                                     head_size: int) -> None:
    """The socket takes part (its buffer is smaller than the response): written + handed back == all, in order,
    whether the cut falls in the body or in the head."""
    ours, peer = pair
    head = os.urandom(head_size)
    body = os.urandom(600_000)
    writer = ThreadWriter(ours.fileno())
    with writer.lock:
        rest = writer.send(head, body)
    assert rest and len(rest) < len(head) + len(body)
    written = len(head) + len(body) - len(rest)
    assert _read(peer, written) + rest == head + body
    writer.close()


def test_a_broken_socket_takes_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    """EPIPE: everything comes back (the loop's own write of it then meets the error and closes)."""
    ours, peer = pair
    peer.close()
    writer = ThreadWriter(ours.fileno())
    with writer.lock:
        assert writer.send(b"head", b"body") == b"headbody"
    writer.close()


def test_close_closes_the_duplicate_only_and_once(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    writer = ThreadWriter(ours.fileno())
    dup = writer.fd
    assert dup != ours.fileno()
    assert os.get_inheritable(dup) is False  # an app's subprocess does not inherit the client's socket
    writer.close()
    assert writer.fd == -1
    with pytest.raises(OSError):
        os.fstat(dup)
    writer.close()  # twice: nothing (the number may belong to another file by now)
    ours.send(b"still ours")  # the connection's own descriptor is untouched
    assert _read(peer, 10) == b"still ours"


def test_the_socket_stays_open_until_the_duplicate_is_closed(pair: tuple[socket.socket, socket.socket]) -> None:
    """Why the connection must close its writer as it lets go of the transport: until then the client sees no end."""
    ours, peer = pair
    writer = ThreadWriter(ours.fileno())
    ours.close()  # as uvloop closes its own descriptor
    peer.settimeout(0.2)
    with pytest.raises(TimeoutError):
        peer.recv(1)
    writer.close()
    peer.settimeout(5)
    assert peer.recv(1) == b""


def test_close_waits_for_a_write_in_progress(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _peer = pair
    writer = ThreadWriter(ours.fileno())
    closed = threading.Event()
    writer.lock.acquire()  # a pool thread is writing
    closer = threading.Thread(target=lambda: (writer.close(), closed.set()))
    closer.start()
    time.sleep(0.1)
    assert not closed.is_set() and writer.fd >= 0
    writer.lock.release()
    assert closed.wait(5)
    closer.join(5)
    assert writer.fd == -1

