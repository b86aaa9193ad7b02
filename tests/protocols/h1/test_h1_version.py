"""The HTTP version of each request, as llhttp parsed it, whichever way the reads were cut: the first head of a
read that began between requests takes it from the read's first line (h1_checks.request_line_version), the
others from llhttp (get_http_version)."""

from __future__ import annotations

import pytest
from test_fuzz_h1 import drive

HEAD_11 = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
HEAD_10 = b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
POST_11 = b"POST /c HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\nGET / HTTP/1.0\r\n\r\nab"


@pytest.mark.parametrize(("reads", "versions"), [
    ([HEAD_11], ["1.1"]),
    ([HEAD_10], ["1.0"]),
    ([HEAD_10 + HEAD_11 + HEAD_10], ["1.0", "1.1", "1.0"]),  # pipelined: llhttp answers for the later two
    ([HEAD_11 + HEAD_10[:9], HEAD_10[9:]], ["1.1", "1.0"]),  # the second began in the first read
    ([b"GE", b"T /x HTTP/1.0\r\n\r\n"], ["1.0"]),  # the read began inside the method
    ([b"\r\n" + HEAD_10], ["1.0"]),  # an empty line before the head
    ([b"\r\n", HEAD_10], ["1.0"]),
    ([HEAD_11[:10], HEAD_11[10:]], ["1.1"]),  # the second read began in the head: llhttp answers
    # more than one space, which llhttp takes: the version is further on than one space would put it
    ([b"GET  /1.1 HTTP/1.0\r\n\r\n"], ["1.0"]),
    ([b"GET /x/1.1/  HTTP/1.0\r\n\r\n"], ["1.0"]),
    ([b"GET   /HTTP/1.1 HTTP/1.0\r\nX: HTTP/1.1\r\n\r\n"], ["1.0"]),
    # a body that looks like a request line: its read began inside a request, never between two
    ([POST_11[:49], POST_11[49:] + HEAD_11], ["1.1", "1.1"]),  # the second read begins with the body
    ([POST_11[:40], POST_11[40:], HEAD_10], ["1.1", "1.0"]),
    ([POST_11 + HEAD_10], ["1.1", "1.0"]),
])
def test_the_version_is_llhttps_however_the_reads_are_cut(reads: list[bytes], versions: list[str]) -> None:
    seen, statuses, _ = drive(reads)
    assert [s[4] for s in seen] == versions
    assert statuses == [200] * len(versions)


NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNKED = b"Host: x\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n3\r\nabc\r\n0\r\n\r\n"


@pytest.mark.parametrize("reads", [
    # HTTP/0.9's line (no version), which llhttp takes with fields after it: a field value at the version's place
    [b"GET /\r\nab: 1.1\r\nHost: x\r\n\r\n"],
    [b"GET   /\r\nab: 1.0\r\n\r\n"],
    [b"POST /\r\nab: 1.1\r\n" + CHUNKED + NEXT],
    # the read began after "METHOD SP", inside an absolute target spelled like the method
    [b"POST ", b"POST://a/ HTTP/1.0\r\n1:1\r\n" + CHUNKED + NEXT],
    [b"HEAD ", b"HEAD://a/ HTTP/1.1\r\n1:0\r\n\r\n"],
    [b"CONNECT ", b"CONNECT HTTP/1.0\r\nabc1:1\r\n\r\n"],
    [b"PROPFIND ", b"PROPFIND HTTP/1.0\r\nab: HTTP/1.1\r\n\r\n"],
])
def test_the_verdict_is_the_same_as_with_llhttps_version(reads: list[bytes]) -> None:
    """Found in review: each of these was answered (200, the connection kept) where llhttp's version refuses it.
    One byte per read never takes the version from the read: the verdict must be the same."""
    whole = b"".join(reads)
    assert drive(reads) == drive([bytes([b]) for b in whole])
