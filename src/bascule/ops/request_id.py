"""Request ids: one per request, believed from a trusted proxy's header or made here, seen by app and log.

A request id ties an access-log line to the app's own log lines and to the proxy's (nginx ``$request_id``,
an AWS load balancer's trace id, Envoy's ``x-request-id``). With ``--request-id`` every request gets one:

- from the ``--request-id-header`` field (default ``X-Request-ID``) when the connection's peer is in
  ``--forwarded-allow-ips`` (the peer that :mod:`bascule.trust` believes about the client, judged the same
  way: the socket's peer, or a PROXY protocol header's source) and the value is well formed: 1 to
  :data:`MAX_LENGTH` characters from :data:`SAFE`, and the field appears once;
- otherwise made here: 32 lower-case hex digits of :func:`os.urandom` (nginx's ``$request_id`` form), taken
  from a pool refilled every :data:`POOL_IDS` ids, so a request costs a string slice, not a system call.

An untrusted peer's value, or an invalid one, is replaced, never passed on: the header the app then reads
carries the id bascule logs (so middleware that reads ``X-Request-ID`` agrees with the access log), and a
client cannot put log-forging or header-splitting bytes into an id that is echoed and logged.
"""

from __future__ import annotations

import os
from typing import Any

from bascule.trust import TrustedProxies

__all__ = ["DEFAULT_HEADER", "MAX_LENGTH", "POOL_IDS", "SAFE", "RequestIds", "sets_field", "valid"]

DEFAULT_HEADER = "X-Request-ID"
MAX_LENGTH = 200
"""Longest id believed from a proxy: a UUID is 36, nginx's 32, an AWS trace id about 40; Heroku's router
takes 20 to 200 characters of the same kind, which this bound keeps compatible with."""
SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:+/=@~"
"""The characters of an id believed from a proxy: letters, digits and the punctuation of UUIDs, base64 and
trace ids; no space, quote, backslash, comma or control byte, so an id needs no escaping anywhere."""
_CHECK = bytes(byte if byte in SAFE else 0 for byte in range(256))
"""Maps every byte outside :data:`SAFE` to 0 (itself included): one translate pass and a memchr tell an id from
anything else, where ``translate(None, SAFE)`` builds a deletion table per call (measured: 7x the time)."""
POOL_IDS = 128
"""Ids made from one :func:`os.urandom` call (4 KiB of entropy)."""


def valid(value: bytes) -> bool:
    """Whether a header value may be used as a request id as it is (bounded, :data:`SAFE` characters only)."""
    return 0 < len(value) <= MAX_LENGTH and 0 not in value.translate(_CHECK)


class RequestIds:
    """Gives each request its id (on the loop thread: ServerContext.request_started calls :meth:`assign`)."""

    def __init__(self, header: str, trusted: TrustedProxies) -> None:
        self.name = header.strip().lower().encode("latin-1")  # header names are lower case on the exchange
        self.trusted = trusted
        self._pool = ""
        self._next = 0

    def new_id(self) -> str:
        """A fresh random id: 32 hex digits (128 bits), sliced from a pool of :data:`POOL_IDS`."""
        at = self._next
        if at >= len(self._pool):
            self._pool = os.urandom(16 * POOL_IDS).hex()
            at = 0
        self._next = at + 32
        return self._pool[at:at + 32]

    def assign(self, ex: Any) -> None:
        """Set ``ex.rid`` and make the request's id header say the same (one field, replaced or added).

        ``ex`` is an Exchange (typed Any: compiled code would check a declared class at run time, and
        anything with the fields will do). The header list is the request's own (the protocol made it for
        this request), changed in place, as ServerContext.forwarded changes the Host field."""
        name = self.name
        headers: list[tuple[bytes, bytes]] = ex.headers
        sent: bytes | None = None
        copies = 0
        for key, value in headers:
            if key == name:
                sent = value
                copies += 1
        if sent is not None and copies == 1 and valid(sent) and self.trusted.trusts_peer(_peer_host(ex)):
            ex.rid = sent.decode("ascii")
            ex.rid_header = name
            return
        rid = self.new_id()
        ex.rid = rid
        ex.rid_header = name
        if sent is not None:  # not believed (or sent twice): no copy reaches the app, the id's field replaces it
            headers[:] = [pair for pair in headers if pair[0] != name]
        headers.append((name, rid.encode("ascii")))


def _peer_host(ex: Any) -> str | None:
    """The connection's peer host (None for a Unix socket): the one trust.py judges, as for proxy headers."""
    peer = ex.peer if ex.proxied else ex.client
    return peer[0] if peer else None


def sets_field(headers: list[tuple[bytes, bytes]], name: bytes) -> bool:
    """Whether a response's header list (an app's) has the field ``name`` (lower case), in any case: an app
    that echoes ids on its own (asgi-correlation-id, django-guid) keeps its value, and there is never a second."""
    size = len(name)
    for key, _ in headers:  # noqa: SIM110  (interpreted, any() over a generator costs more)
        if len(key) == size and key.lower() == name:  # the length first: no lowered copy of every name
            return True
    return False
