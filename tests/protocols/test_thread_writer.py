"""ThreadWriter (protocols/thread_writer.py): a duplicate of a connection's socket that WSGI pool threads write
complete responses to. Raw sockets: what the peer reads, what is handed back when the socket is full or
broken or the writer closed, that a close during a write leaves the closing to that write, and that closing never
touches the connection's own descriptor."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bascule.protocols.thread_writer import ROOM, STOP, ThreadWriter


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


def _nothing_buffered() -> int:
    """A transport's get_write_buffer_size with nothing queued."""
    return 0


def _fill(sock: socket.socket) -> None:
    """Write until the socket's buffers are full (EAGAIN)."""
    while True:
        try:
            sock.send(b"x" * 65536)
        except BlockingIOError:
            return


def test_a_complete_write_hands_nothing_back(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    writer = ThreadWriter(ours.fileno(), _nothing_buffered)
    assert writer.send(b"HTTP/1.1 200 OK\r\n\r\nhi") == b""
    assert _read(peer, 21) == b"HTTP/1.1 200 OK\r\n\r\nhi"
    assert writer.send(b"head|", b"body") == b""  # head and body in one writev
    assert _read(peer, 9) == b"head|body"
    writer.close()


def test_a_full_socket_hands_back_all_of_it_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _peer = pair
    _fill(ours)
    writer = ThreadWriter(ours.fileno(), _nothing_buffered)
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
    writer = ThreadWriter(ours.fileno(), _nothing_buffered)
    rest = writer.send(head, body)
    assert rest and len(rest) < len(head) + len(body)
    written = len(head) + len(body) - len(rest)
    assert _read(peer, written) + rest == head + body
    writer.close()


def test_a_broken_socket_takes_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    """EPIPE: everything comes back (the loop's own write of it then meets the error and closes)."""
    ours, peer = pair
    peer.close()
    writer = ThreadWriter(ours.fileno(), _nothing_buffered)
    assert writer.send(b"head", b"body") == b"headbody"
    writer.close()


def test_close_closes_the_duplicate_only_and_once(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    writer = ThreadWriter(ours.fileno(), _nothing_buffered)
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
    writer = ThreadWriter(ours.fileno(), _nothing_buffered)
    ours.close()  # as uvloop closes its own descriptor
    peer.settimeout(0.2)
    with pytest.raises(TimeoutError):
        peer.recv(1)
    writer.close()
    peer.settimeout(5)
    assert peer.recv(1) == b""


def test_a_closed_writer_takes_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    """After close (the connection let go of its socket): everything comes back, no sendfile piece goes out."""
    ours, peer = pair
    writer = ThreadWriter(ours.fileno(), _nothing_buffered)
    writer.close()
    assert writer.send(b"head", b"body") == b"headbody"
    with open(__file__, "rb") as file:
        assert writer.sendfile(file.fileno(), 0, 10) == STOP
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)  # nothing reached the peer


def test_a_close_during_a_write_leaves_the_closing_to_the_write(pair: tuple[socket.socket, socket.socket]) -> None:
    """The loop never waits for a pool thread: a close while a write is in progress marks the writer closed
    at once, and the write closes the duplicate as it returns (until then the number stays the socket's)."""
    ours, peer = pair
    _fill(ours)
    ours.setblocking(True)  # (the duplicate shares the flag) so the write below waits for room: in progress
    writer = ThreadWriter(ours.fileno(), _nothing_buffered)
    dup = writer.fd
    results: list[bytes] = []
    thread = threading.Thread(target=lambda: results.append(writer.send(b"late")))
    thread.start()
    deadline = time.monotonic() + 5
    while writer._writing != 1:  # the thread holds the duplicate (then waits in writev for room)
        assert time.monotonic() < deadline
        time.sleep(0.001)
    writer.close()
    assert writer.fd == -1
    os.fstat(dup)  # still open: the write holds it
    peer.setblocking(False)
    while thread.is_alive():  # make room: the write completes
        assert time.monotonic() < deadline
        try:
            peer.recv(1 << 20)
        except BlockingIOError:
            thread.join(0.01)
    assert results == [b""]
    with pytest.raises(OSError):
        os.fstat(dup)  # closed by the write as it returned
    ours.send(b"")  # the connection's own descriptor is untouched
    writer.close()  # twice: nothing


def test_a_write_that_raises_still_closes_after_a_close(pair: tuple[socket.socket, socket.socket]) -> None:
    """Not only OSError: whatever a write raises, the writer stops holding the duplicate, so a close that came
    during it is not left waiting (the descriptor and the client's socket would never be closed)."""
    ours, _peer = pair
    writer = ThreadWriter(ours.fileno(), _nothing_buffered)
    dup = writer.fd
    with pytest.raises(OverflowError), open(__file__, "rb") as file:
        writer.sendfile(file.fileno(), 1 << 80, 10)  # an offset no off_t holds: raised before any system call
    writer.close()
    with pytest.raises(OSError):
        os.fstat(dup)


def test_sendfile_pieces_and_room(pair: tuple[socket.socket, socket.socket], tmp_path: Path) -> None:
    """ThreadWriter.sendfile: the bytes sent, then ROOM once the socket's buffer is full."""
    ours, peer = pair
    data = os.urandom(4 << 20)
    path = tmp_path / "data"
    path.write_bytes(data)
    writer = ThreadWriter(ours.fileno(), _nothing_buffered)
    with path.open("rb") as file:
        first = writer.sendfile(file.fileno(), 0, len(data))
        assert 0 < first < len(data)  # a socketpair's buffer is far smaller than 4 MiB
        assert writer.sendfile(file.fileno(), first, len(data) - first) == ROOM
    assert _read(peer, first) == data[:first]
    writer.close()
