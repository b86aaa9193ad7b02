"""Unit tests of the WSGI environ's stream objects: WSGIInput over a scripted puller, WSGIErrors, FileWrapper.

WSGIInput is fed by a fake ``pull`` that hands out scripted pieces, so every read is checked against piece
boundaries without sockets; a seeded model test compares long random call sequences with io.BytesIO.
The integration side (real uploads through a server) lives in test_wsgi.py.
"""

from __future__ import annotations

import io
import logging
import random

import pytest

from bascule.gateways.wsgi_io import FileWrapper, WSGIErrors, WSGIInput


class Pull:
    """A scripted puller: returns ``pieces`` one per call, then b'' once; a call after that fails."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)
        self.calls = 0
        self.eof_sent = False

    def __call__(self) -> bytes:
        assert not self.eof_sent, "pull() called again after it returned b'' (end of body)"
        self.calls += 1
        if self.pieces:
            return self.pieces.pop(0)
        self.eof_sent = True
        return b""


def stream(*pieces: bytes) -> tuple[WSGIInput, Pull]:
    pull = Pull(*pieces)
    return WSGIInput(pull), pull


# -- read ------------------------------------------------------------------------------------------------


def test_read_n_across_piece_boundaries() -> None:
    body, pull = stream(b"ab", b"cde", b"f")
    assert body.read(4) == b"abcd"
    assert pull.calls == 2  # only as many pieces as the read needed
    assert body.read(1) == b"e"
    assert pull.calls == 2  # served from what was left over
    assert body.read(10) == b"f"
    assert body.read(10) == b""
    assert body.read(1) == b""


@pytest.mark.parametrize("size", [-1, None])
def test_read_all(size: int | None) -> None:
    body, pull = stream(b"ab", b"cd", b"ef")
    assert body.read(size) == b"abcdef"
    assert pull.eof_sent
    assert body.read(size) == b""


def test_read_without_argument() -> None:
    body, _ = stream(b"x" * 10, b"y" * 5)
    assert body.read() == b"x" * 10 + b"y" * 5


def test_read_zero_does_not_pull() -> None:
    body, pull = stream(b"abc")
    assert body.read(0) == b""
    assert pull.calls == 0


def test_read_exact_piece() -> None:
    body, pull = stream(b"abc", b"def")
    assert body.read(3) == b"abc"
    assert pull.calls == 1
    assert body.read(3) == b"def"
    assert body.read(3) == b""


def test_read_after_eof_never_pulls_again() -> None:
    body, pull = stream(b"abc")
    assert body.read() == b"abc"
    calls = pull.calls
    for _ in range(3):
        assert body.read(5) == b""
        assert body.read() == b""
        assert body.readline() == b""
        assert body.readlines() == []
        assert list(body) == []
    assert pull.calls == calls  # Pull itself also fails on a call after b''


def test_empty_body() -> None:
    body, _ = stream()
    assert body.read(1) == b""
    assert body.read() == b""
    assert body.readline() == b""
    assert body.readlines() == []
    assert list(body) == []


def test_buffered_body_without_puller() -> None:
    body = WSGIInput(None, b"line1\nline2\nrest")
    assert body.readline() == b"line1\n"
    assert body.read(3) == b"lin"
    assert body.read() == b"e2\nrest"
    assert body.read() == b""


def test_initial_bytes_then_pulled_pieces() -> None:
    body = WSGIInput(Pull(b"cd", b"ef"), b"ab")
    assert body.read(3) == b"abc"
    assert body.read() == b"def"


def test_read1_returns_at_most_one_piece() -> None:
    body, pull = stream(b"abc", b"def")
    assert body.read1(10) == b"abc"
    assert pull.calls == 1
    assert body.read1(2) == b"de"
    assert body.read1() == b"f"
    assert body.read1() == b""


# -- readline --------------------------------------------------------------------------------------------


def test_readline_lines_spanning_pieces() -> None:
    body, _ = stream(b"li", b"ne1\nli", b"ne2", b"\n", b"tail")
    assert body.readline() == b"line1\n"
    assert body.readline() == b"line2\n"
    assert body.readline() == b"tail"
    assert body.readline() == b""


def test_readline_does_not_pull_past_the_line() -> None:
    body, pull = stream(b"one\ntwo\n", b"three\n")
    assert body.readline() == b"one\n"
    assert body.readline() == b"two\n"
    assert pull.calls == 1


@pytest.mark.parametrize(
    ("pieces", "limit", "expected", "rest"),
    [
        ((b"abcdef\n",), 3, b"abc", b"def\n"),
        ((b"ab", b"cdef\n"), 3, b"abc", b"def\n"),  # the limit falls in the second piece
        ((b"ab", b"c", b"def\n"), 4, b"abcd", b"ef\n"),
        ((b"abc\n",), 4, b"abc\n", b""),  # limit exactly at the newline
        ((b"abc\n",), 10, b"abc\n", b""),  # limit past the newline
        ((b"ab", b"c\nd"), 3, b"abc", b"\nd"),  # limit right before the newline
        ((b"abc",), 10, b"abc", b""),  # no newline before the end
        ((b"abc\n",), 0, b"", b"abc\n"),
        ((b"abc\n",), None, b"abc\n", b""),
        ((b"abc\n",), -1, b"abc\n", b""),
    ],
)
def test_readline_limit(pieces: tuple[bytes, ...], limit: int | None, expected: bytes, rest: bytes) -> None:
    body, _ = stream(*pieces)
    assert body.readline(limit) == expected
    assert body.read() == rest


def test_readline_limit_does_not_pull_more_than_needed() -> None:
    body, pull = stream(b"abcdef", b"ghi\n")
    assert body.readline(4) == b"abcd"
    assert pull.calls == 1


def test_readline_zero_does_not_pull() -> None:
    body, pull = stream(b"abc\n")
    assert body.readline(0) == b""
    assert pull.calls == 0


# -- readlines and iteration -----------------------------------------------------------------------------


def test_readlines() -> None:
    body, _ = stream(b"a\nb", b"b\n", b"ccc")
    assert body.readlines() == [b"a\n", b"bb\n", b"ccc"]


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (-1, [b"aa\n", b"bb\n", b"cc\n"]),
        (0, [b"aa\n", b"bb\n", b"cc\n"]),  # like io: hint <= 0 means no limit
        (1, [b"aa\n"]),
        (3, [b"aa\n"]),  # stops once the total reaches the hint
        (4, [b"aa\n", b"bb\n"]),
        (100, [b"aa\n", b"bb\n", b"cc\n"]),
    ],
)
def test_readlines_hint(hint: int, expected: list[bytes]) -> None:
    body, _ = stream(b"aa\nb", b"b\ncc\n")
    assert body.readlines(hint) == expected
    assert io.BytesIO(b"aa\nbb\ncc\n").readlines(hint) == expected  # same as the standard library


def test_iteration_yields_lines() -> None:
    body, _ = stream(b"x\ny", b"\nz")
    assert iter(body) is body
    assert list(body) == [b"x\n", b"y\n", b"z"]
    assert list(body) == []


def test_close_is_a_no_op() -> None:
    body, _ = stream(b"abc")
    body.close()
    assert body.read() == b"abc"


def test_random_call_sequences_match_bytesio() -> None:
    """Seeded model test: any mix of reads over any piece split behaves like io.BytesIO over the whole."""
    rng = random.Random(3333)
    for _ in range(300):
        data = bytes(rng.choice(b"ab\n") for _ in range(rng.randrange(0, 60)))
        cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randrange(0, 6))))
        pieces = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True) if data[i:j]]
        body, model = WSGIInput(Pull(*pieces)), io.BytesIO(data)
        for _ in range(12):
            op = rng.randrange(5)
            n = rng.randrange(-1, 12)
            if op == 0:
                assert body.read(n) == model.read(n), (pieces, n)
            elif op == 1:
                assert body.readline(n) == model.readline(n), (pieces, n)
            elif op == 2:
                assert body.readlines(n) == model.readlines(n), (pieces, n)
            elif op == 3:
                assert body.read(None) == model.read(None), pieces
            else:
                assert body.readline() == model.readline(), pieces


# -- wsgi.errors -----------------------------------------------------------------------------------------


@pytest.fixture
def error_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    monkeypatch.setattr(logging.getLogger("bascule.error"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="bascule.error")
    return caplog


def _messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "bascule.error"]


def test_errors_write_logs_one_record_per_line(error_log: pytest.LogCaptureFixture) -> None:
    errors = WSGIErrors()
    assert errors.write("first\nsecond\n") == len("first\nsecond\n")
    assert _messages(error_log) == [(logging.ERROR, "first"), (logging.ERROR, "second")]


def test_errors_partial_line_waits_for_newline_or_flush(error_log: pytest.LogCaptureFixture) -> None:
    errors = WSGIErrors()
    errors.write("par")
    errors.write("tial")
    assert _messages(error_log) == []
    errors.write(" line\nrest")
    assert _messages(error_log) == [(logging.ERROR, "partial line")]
    errors.flush()
    assert _messages(error_log)[-1] == (logging.ERROR, "rest")
    errors.flush()
    assert len(_messages(error_log)) == 2  # nothing pending: flush logs nothing


def test_errors_writelines_and_blank_lines(error_log: pytest.LogCaptureFixture) -> None:
    errors = WSGIErrors()
    errors.writelines(["a\n", "\n", "b\n"])
    assert _messages(error_log) == [(logging.ERROR, "a"), (logging.ERROR, "b")]


def test_errors_text_is_not_interpreted_as_a_format(error_log: pytest.LogCaptureFixture) -> None:
    WSGIErrors().write("100% %s %d\n")
    assert _messages(error_log) == [(logging.ERROR, "100% %s %d")]


# -- wsgi.file_wrapper -----------------------------------------------------------------------------------


def test_file_wrapper_iterates_in_blocks() -> None:
    wrapper = FileWrapper(io.BytesIO(b"abcdefg"), 3)
    assert list(wrapper) == [b"abc", b"def", b"g"]


def test_file_wrapper_default_block_size() -> None:
    data = bytes(range(256)) * 1000
    blocks = list(FileWrapper(io.BytesIO(data)))
    assert b"".join(blocks) == data
    assert all(len(b) == 64 * 1024 for b in blocks[:-1])


def test_file_wrapper_starts_at_the_current_position() -> None:
    f = io.BytesIO(b"0123456789")
    f.seek(4)
    assert b"".join(FileWrapper(f, 4)) == b"456789"


def test_file_wrapper_close_closes_the_file() -> None:
    f = io.BytesIO(b"abc")
    wrapper = FileWrapper(f)
    wrapper.close()
    assert f.closed


def test_file_wrapper_without_close_has_no_close() -> None:
    class Reader:
        def __init__(self) -> None:
            self.data = [b"xy", b""]

        def read(self, size: int) -> bytes:
            return self.data.pop(0)

    wrapper = FileWrapper(Reader())  # type: ignore[arg-type]
    assert not hasattr(wrapper, "close")
    assert list(wrapper) == [b"xy"]


@pytest.mark.parametrize("how", ["read(len)", "read(more)", "read()", "read1()", "read1(len)"])
def test_reading_the_whole_buffered_body_hands_it_over_uncopied(how: str) -> None:
    """A body read whole (read(CONTENT_LENGTH), as frameworks do) is the buffered bytes object itself: a
    16 KiB echo copied it once more for nothing (compiled slicing copies even a whole-range slice)."""
    body = bytes(range(256)) * 64
    stream = WSGIInput(None, body)
    got = {"read(len)": lambda: stream.read(len(body)), "read(more)": lambda: stream.read(len(body) + 10),
           "read()": lambda: stream.read(), "read1()": lambda: stream.read1(),
           "read1(len)": lambda: stream.read1(len(body))}[how]()
    assert got is body
    assert stream.read() == b""


def test_a_partial_read_leaves_the_rest_buffered() -> None:
    stream = WSGIInput(None, b"0123456789")
    assert stream.read(4) == b"0123"
    assert stream.read1(3) == b"456"
    assert stream.read(10) == b"789"
    assert stream.read() == b""
