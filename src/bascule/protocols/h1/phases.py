"""The phases of an HTTP/1.1 connection: everything that moves :class:`H1Connection.phase` is written here.

:data:`TRANSITIONS` is the spec, in the manner of ``gateways/asgi.py``'s: the connection's hot path does
not look the table up (hashing an Enum member is a Python-level call); it assigns the phase with identity
checks that encode the table, and tests/protocols/h1/test_h1_phases.py checks every (phase, event) pair
against it, and drives a real connection with raw bytes through each phase.

A phase says what the connection is reading, and whether the transport is still this object's. Whether a
response is in progress is not a phase: with pipelining, an app answers one request while the next one's
head or body arrives, so it overlaps every reading phase; it is ``H1Connection.active``, with the requests
waiting behind it in ``queue``. Nor are the outbox's reasons to pause reading (a body buffer the app has
not drained, a pipeline waiting) or ``write_paused``: flow control comes and goes within a phase. STOPPED
keeps reading paused for good, with a reason of its own (PAUSE_UPGRADE, PAUSE_ERROR), until the close.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """What an HTTP/1.1 connection is reading, from the server's side."""

    IDLE = "idle"  # between requests: the next byte begins a head (keep-alive wait if nothing is answered)
    HEAD = "head"  # a request head is arriving: its size and its deadline are watched
    BODY = "body"  # a request body is arriving, framed by llhttp (the body-idle deadline is watched)
    UPGRADE_BODY = "upgrade body"  # the body of an Upgrade request not taken: llhttp stopped, we count it
    STOPPED = "stopped"  # nothing more is parsed (an Upgrade not taken, a refused request): closes after the answer
    LINGERING = "lingering"  # FIN sent: what still arrives is read and dropped until the close
    SWITCHED = "switched"  # the transport now belongs to HTTP/2 or WebSocket
    CLOSED = "closed"  # the transport is gone


class Event(enum.Enum):
    """What moves a connection from one phase to the next."""

    URL = "url"  # llhttp's on_url: (a piece of) a request target, which opens a head
    HEADERS_COMPLETE = "headers complete"  # llhttp's on_headers_complete: the request is built
    MESSAGE_COMPLETE = "message complete"  # llhttp's on_message_complete (also at an Upgrade, before its body)
    SWITCH = "switch"  # HTTP/2 (the front door's sniff, a preface in pieces, Upgrade: h2c) or WebSocket takes over
    UPGRADE_REFUSED = "upgrade refused"  # an Upgrade not taken, without a body: served, then closed
    UPGRADE_BODY = "upgrade body"  # an Upgrade not taken, with a Content-Length body we read ourselves
    UPGRADE_BODY_READ = "upgrade body read"  # that body is complete
    REFUSE = "refuse"  # a request (or the connection) is refused: an error answer is sent, or waits its turn
    LINGER = "linger"  # FIN sent while the client may still be sending
    LOST = "lost"  # connection_lost


TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.IDLE, Event.URL): Phase.HEAD,
    (Phase.IDLE, Event.SWITCH): Phase.SWITCHED,
    (Phase.IDLE, Event.UPGRADE_REFUSED): Phase.STOPPED,
    (Phase.IDLE, Event.UPGRADE_BODY): Phase.UPGRADE_BODY,
    (Phase.IDLE, Event.REFUSE): Phase.STOPPED,
    (Phase.IDLE, Event.LOST): Phase.CLOSED,
    (Phase.HEAD, Event.URL): Phase.HEAD,  # a target split over reads comes in pieces
    (Phase.HEAD, Event.HEADERS_COMPLETE): Phase.BODY,
    (Phase.HEAD, Event.SWITCH): Phase.SWITCHED,  # "PRI * HTTP/2.0": the HTTP/2 preface
    (Phase.HEAD, Event.REFUSE): Phase.STOPPED,
    (Phase.HEAD, Event.LOST): Phase.CLOSED,
    (Phase.BODY, Event.MESSAGE_COMPLETE): Phase.IDLE,
    (Phase.BODY, Event.REFUSE): Phase.STOPPED,
    (Phase.BODY, Event.LINGER): Phase.LINGERING,  # answered before the body was read: no RST over the answer
    (Phase.BODY, Event.LOST): Phase.CLOSED,
    (Phase.UPGRADE_BODY, Event.UPGRADE_BODY_READ): Phase.STOPPED,
    (Phase.UPGRADE_BODY, Event.REFUSE): Phase.STOPPED,
    (Phase.UPGRADE_BODY, Event.LINGER): Phase.LINGERING,
    (Phase.UPGRADE_BODY, Event.LOST): Phase.CLOSED,
    (Phase.STOPPED, Event.LINGER): Phase.LINGERING,
    (Phase.STOPPED, Event.LOST): Phase.CLOSED,
    (Phase.LINGERING, Event.LOST): Phase.CLOSED,
}
"""(phase, event) -> the next phase; a pair not listed does not happen. SWITCHED and CLOSED are final."""
