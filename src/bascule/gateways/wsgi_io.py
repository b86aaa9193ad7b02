"""The stream objects of a WSGI environ: ``wsgi.input``, ``wsgi.errors`` and ``wsgi.file_wrapper``.

``wsgi.input`` pulls the body from the connection piece by piece (the puller blocks the WSGI thread, never
the event loop), so an upload is never held whole in memory; reading paused on the connection is resumed
as the app consumes. A body that had fully arrived before the app started is served from memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

_log = logging.getLogger("bascule.error")


class WSGIInput:
    """A file-like reader over the request body (PEP 3333 ``wsgi.input``), read incrementally."""

    __slots__ = ("_buf", "_eof", "_pull")

    def __init__(self, pull: Callable[[], bytes] | None, initial: bytes = b"") -> None:
        self._pull = pull
        self._buf = initial
        self._eof = pull is None

    def _pull_piece(self) -> bytes:
        """The next piece from the connection; b'' at the end of the body."""
        if self._eof or self._pull is None:
            return b""
        data = self._pull()
        if not data:
            self._eof = True
        return data

    def _gather(self, enough: Callable[[int, bytes], bool]) -> None:
        """Pull pieces until ``enough(total, piece)`` or EOF, then join them with the buffer once.

        Joining once per call (not once per piece) keeps reading an N-byte body O(N), not O(N^2).
        """
        pieces = [self._buf]
        total = len(self._buf)
        while True:
            piece = self._pull_piece()
            if not piece:
                break
            pieces.append(piece)
            total += len(piece)
            if enough(total, piece):
                break
        if len(pieces) > 1:
            self._buf = b"".join(pieces)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            self._gather(_never)
            data, self._buf = self._buf, b""
            return data
        if len(self._buf) < size:
            self._gather(lambda total, _piece: total >= size)
        return self._take(size)

    def _take(self, size: int) -> bytes:
        """The first ``size`` buffered bytes. All of them are handed over as they are: compiled code slices
        bytes by copying even when the slice is the whole (a 16 KiB body read with read(CONTENT_LENGTH), as
        frameworks do, was copied once more for nothing)."""
        buf = self._buf
        if size >= len(buf):
            self._buf = b""
            return buf
        self._buf = buf[size:]
        return buf[:size]

    def read1(self, size: int | None = -1) -> bytes:
        """At most one pull: what is buffered, or the next piece (None or a negative size: all of it)."""
        if not self._buf:
            self._buf = self._pull_piece()
        if size is None or size < 0:
            size = len(self._buf)
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        buf = self._buf
        if b"\n" not in buf and not (0 <= limit <= len(buf)):
            self._gather(lambda total, piece: b"\n" in piece or 0 <= limit <= total)
            buf = self._buf
        end = buf.find(b"\n")
        cut = len(buf) if end < 0 else end + 1
        if 0 <= limit < cut:
            cut = limit
        data, self._buf = buf[:cut], buf[cut:]
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        """Apps may close the input; what is left is read and dropped by the server."""


def _never(_total: int, _piece: bytes) -> bool:
    return False


class WSGIErrors:
    """``wsgi.errors``: text written here goes to the bascule.error logger, one record per line."""

    __slots__ = ("_lock", "_pending")

    def __init__(self) -> None:
        self._pending = ""
        self._lock = threading.Lock()  # one instance serves every worker thread

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            while "\n" in self._pending:
                line, self._pending = self._pending.split("\n", 1)
                if line:
                    _log.error("%s", line)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                _log.error("%s", self._pending)
                self._pending = ""


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in blocks; bascule sends real files with sendfile instead."""

    def __init__(self, filelike: IO[bytes], blksize: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.blksize = blksize
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> Iterator[object]:
        """The file's blocks as read() returns them (a custom stream may give bytearray: the gateway
        converts, and compiled code would reject it under an Iterator[bytes] annotation)."""
        read: Callable[[int], object] = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data
