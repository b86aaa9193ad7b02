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
    ([HEAD_11[:10], HEAD_11[10:]], ["1.1"]),
    # more than one space, which llhttp takes: the version is further on than one space would put it
    ([b"GET  /1.1 HTTP/1.0\r\n\r\n"], ["1.0"]),
    ([b"GET /x/1.1/  HTTP/1.0\r\n\r\n"], ["1.0"]),
    ([b"GET   /HTTP/1.1 HTTP/1.0\r\nX: HTTP/1.1\r\n\r\n"], ["1.0"]),  # the second read began in the head: llhttp answers
    # a body that looks like a request line: its read began inside a request, never between two
    ([POST_11[:49], POST_11[49:] + HEAD_11], ["1.1", "1.1"]),  # the second read begins with the body
    ([POST_11[:40], POST_11[40:], HEAD_10], ["1.1", "1.0"]),
    ([POST_11 + HEAD_10], ["1.1", "1.0"]),
])
def test_the_version_is_llhttps_however_the_reads_are_cut(reads: list[bytes], versions: list[str]) -> None:
    seen, statuses, _ = drive(reads)
    assert [s[4] for s in seen] == versions
    assert statuses == [200] * len(versions)
