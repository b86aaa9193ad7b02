"""Buffering the block that opens a connection until its parser finds it whole: one reader for three parsers.

A uwsgi packet (protocols/uwsgi_wire.py), an SCGI netstring (protocols/scgi_wire.py) and a PROXY protocol
header (listen/proxy_protocol.py) each come first on a connection, before bytes that belong to something
else (a request body, TLS, HTTP). Their parsers are pure functions of the bytes received so far: the head
and how many bytes it took, None while incomplete, or their own error as soon as the bytes allow. What is
left is the same for all three, and lives here: keep what came until the head is whole, then hand back
what came after it. The common case, a head whole in the first read, is parsed from that read without a
copy. The bound on buffered bytes is the parser's: each refuses a head longer than its limit before
waiting for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from bascule.compile_hints import mypyc_attr

__all__ = ["PrefixReader"]

H = TypeVar("H")


@mypyc_attr(allow_interpreted_subclasses=True)  # listen/proxy_protocol.py's reader is not compiled
class PrefixReader(Generic[H]):
    """``feed`` returns None while more bytes are needed, then the head (kept as :attr:`head`);
    :attr:`leftover` then holds the bytes received after it, for whatever comes next."""

    __slots__ = ("_buffer", "_parse", "head", "leftover", "what")

    def __init__(self, parse: Callable[[bytes | bytearray], tuple[H, int] | None], what: str) -> None:
        self._parse = parse
        self.what = what
        """What the head is, for the error of a feed after it ("the uwsgi packet")."""
        self.head: H | None = None
        self.leftover = b""
        self._buffer = bytearray()

    def feed(self, data: bytes) -> H | None:
        if self.head is not None:
            raise RuntimeError(f"{self.what} is already parsed: further bytes belong to what follows it")
        buffer = self._buffer
        if buffer:
            buffer += data
            result = self._parse(buffer)
        else:  # the common case: the whole head in one read, parsed without a copy
            result = self._parse(data)
            if result is None:
                buffer += data
        if result is None:
            return None
        head, used = result
        self.head = head
        self.leftover = bytes(buffer[used:]) if buffer else data[used:]
        self._buffer = bytearray()
        return head
