"""A worker's SIGTERM with --shutdown-delay: it stops, unless the master says it is holding its delay.

A process group's SIGTERM reaches the master and its workers together (systemd's default KillMode); the
master marks workers.DrainFlag, and a worker that sees the mark serves on until the master stops it.
"""

from __future__ import annotations

import asyncio
import os

from bascule.workers import DrainFlag, on_sigterm


class Server:
    def __init__(self) -> None:
        self.exits = 0

    def request_exit(self, force: bool = False) -> None:
        self.exits += 1


def run(flag: DrainFlag | None, *, mark_after: float | None = None) -> int:
    """Deliver one SIGTERM to the handler and wait past its second look; the number of exits asked."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        server = Server()
        handler = on_sigterm(loop, server, flag, recheck=0.05)
        if mark_after is not None and flag is not None:
            loop.call_later(mark_after, flag.set, DrainFlag.DELAYING)
        handler()
        await asyncio.sleep(0.15)
        return server.exits

    return asyncio.run(main())


def test_without_a_flag_sigterm_stops_at_once() -> None:
    assert run(None) == 1


def test_an_idle_master_means_stop() -> None:
    assert run(DrainFlag()) == 1


def test_a_master_in_its_delay_means_serve_on() -> None:
    flag = DrainFlag()
    flag.set(DrainFlag.DELAYING)
    assert run(flag) == 0


def test_a_master_that_marks_its_delay_a_moment_later_is_seen() -> None:
    assert run(DrainFlag(), mark_after=0.01) == 0


def test_the_masters_own_sigterm_after_the_delay_stops() -> None:
    flag = DrainFlag()
    flag.set(DrainFlag.STOPPING)
    assert run(flag) == 1


def test_a_forked_child_sees_the_parents_writes() -> None:
    flag = DrainFlag()
    read_r, read_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child waits for the parent's write, then reports what it reads
        os.read(go_r, 1)
        os.write(read_w, bytes([flag.get()]))
        os._exit(0)
    flag.set(DrainFlag.DELAYING)
    os.write(go_w, b"x")
    assert os.read(read_r, 1) == bytes([DrainFlag.DELAYING])
    os.waitpid(pid, 0)
    for fd in (read_r, read_w, go_r, go_w):
        os.close(fd)
