"""Precompressed siblings: ``app.js.br``, ``app.js.zst``, ``app.js.gz`` next to ``app.js``, sent in its
place to a client whose Accept-Encoding takes them (RFC 9110 12.5.3), with ``Content-Encoding`` and
``Vary: Accept-Encoding``. Build tools write these files (Django's compress, Vite's plugins); bascule never
compresses here.

Each sibling is its own representation: its own ETag (the encoding is part of it), Last-Modified, length
and ranges (a range of a gzip file is a range of the gzip bytes, as nginx's gzip_static sends it).
"""

from __future__ import annotations

from typing import Final

SIBLINGS: Final = (("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz"))
"""Content codings bascule looks for, and their file suffixes, in the server's order of preference."""
_RANK: Final = {coding: rank for rank, (coding, _) in enumerate(SIBLINGS)}


def accepted_codings(value: bytes) -> dict[str, float]:
    """Accept-Encoding as {coding: q}, names lowercased (``x-gzip`` is ``gzip``); a malformed q counts as 0
    (refused) rather than as a preference the client did not state."""
    weights: dict[str, float] = {}
    for item in value.decode("latin-1").split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        if name == "x-gzip":
            name = "gzip"
        q = 1.0
        for param in params.split(";"):
            key, _, number = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(number.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:  # also nan
                    q = 0.0
        weights[name] = q
    return weights


def choose_coding(accept_encoding: bytes | None, available: tuple[str, ...]) -> str | None:
    """The coding to send among ``available`` (a subset of SIBLINGS' names), or None for the file itself.

    The client's highest q wins, ties going to the server's order (br, zstd, gzip); ``*`` stands for every
    coding it does not name; q=0 refuses. No Accept-Encoding means the file itself, as nginx and whitenoise
    send it (the RFC allows any coding then, but old clients without the header may not decode).
    """
    if accept_encoding is None or not available:
        return None
    weights = accepted_codings(accept_encoding)
    star = weights.get("*", 0.0)
    best: str | None = None
    best_key = (0.0, 0)
    for coding in available:
        q = weights.get(coding, star)
        if q <= 0.0:
            continue
        key = (q, -_RANK[coding])
        if best is None or key > best_key:
            best, best_key = coding, key
    return best
