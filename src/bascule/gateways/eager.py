"""Eager start of a coroutine: run its first step now, and make a Task only if it really suspends.

Most ASGI responses are produced without ever waiting (the body arrived with the head, the transport is
not paused), so ``create_task`` would cost a Task, a registration in asyncio's task set and one more trip
round the event loop before the first byte is written. Python 3.12 has this as ``eager_task_factory``;
this is the same idea for 3.11: step the coroutine inside its own ``contextvars`` context (so requests
never see each other's context variables) and, if it yields a future, hand the suspended coroutine to a
Task that resumes it in that same context.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Generator
from typing import Any


class Resume:
    """An awaitable that continues an already-started coroutine from the future it is waiting on."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Coroutine[Any, Any, None], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, None, None]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                yield pending
            except BaseException as exc:  # cancellation (or any throw) goes to the coroutine
                try:
                    pending = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    pending = coro.send(None)
                except StopIteration:
                    return


async def _finish(resume: Resume) -> None:
    await resume


def start_eager(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], *,
                carry_on: Callable[[Resume], Coroutine[Any, Any, None]] = _finish) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first suspends; None if it finished, else the Task that carries it on.

    ``carry_on`` builds the Task's coroutine around the suspended one (it must await the Resume it gets),
    for callers that handle the outcome. Exceptions escaping the first step propagate to the caller.
    """
    context = contextvars.copy_context()
    try:
        pending = context.run(coro.send, None)
    except StopIteration:
        return None
    return loop.create_task(carry_on(Resume(coro, pending)), context=context)
