"""A connection's request-stream slots (QUIC MAX_STREAMS) kept while apps run, and its reset budget.

aioquic gives a client stream's slot back (it adds one to MAX_STREAMS, maybe in the very call that writes the
next packets) once the stream is over on the wire, whatever its app is doing. A stream that ends on the wire
while its app still runs (the client reset it, or it made us reset it) would then free a slot for another
running app, and a client could have any number of apps running on one connection (CVE-2023-44487 "rapid
reset", and its "MadeYouReset" variant). :class:`StreamSlots` withholds such a slot (``hold``: the next raise
of the limit is skipped, protocols/h3/quic.py's StreamCredit, since credit already sent cannot be taken back)
until the app returns (``release``, on the connection's tick), as protocols/h2 counts its orphans, and counts
the streams reset per tick: over :data:`RESETS_PER_TICK` the connection closes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bascule.protocols.stream_table import RESETS_PER_TICK

if TYPE_CHECKING:
    from bascule.protocols.h3.quic import PacedQuic
    from bascule.protocols.h3.stream import H3Stream

__all__ = ["RESETS_PER_TICK", "StreamSlots"]


class StreamSlots:
    """The orphans of one connection (streams over on the wire, apps still running) and its reset count."""

    def __init__(self, quic: PacedQuic) -> None:
        self.quic = quic
        self.orphans: dict[int, H3Stream] = {}
        self.resets = 0

    def hold(self, st: H3Stream) -> None:
        """``st`` is over (or being ended) on the wire: while its app runs, its slot stays taken."""
        task = st.app_task
        if task is not None and not task.done() and st.stream_id not in self.orphans:
            self.orphans[st.stream_id] = st
            self.quic.credit.withhold()

    def release(self) -> bool:
        """Give back the slots of orphans whose apps returned; True if any (MAX_STREAMS may be sent)."""
        released = False
        for sid, st in list(self.orphans.items()):
            if st.app_task is None or st.app_task.done():
                del self.orphans[sid]
                self.quic.credit.give_back()
                released = True
        return released

    def charge(self) -> bool:
        """One more stream reset this tick: True when that is over the budget."""
        self.resets += 1
        return self.resets > RESETS_PER_TICK

    def tick(self) -> bool:
        """A new tick: the budget starts again, and the slots of returned apps come back (True if any)."""
        self.resets = 0
        return bool(self.orphans) and self.release()

    def clear(self) -> list[H3Stream]:
        """The connection is over: the orphans, for their disconnect."""
        orphans = list(self.orphans.values())
        self.orphans.clear()
        return orphans
