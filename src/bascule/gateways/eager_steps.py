"""The two pieces of an eager Task start (gateways/eager.py) that must stay interpreted: never in setup.py's COMPILED.

Why not compiled: a compiled function records a traceback entry (``CPy_AddTraceback``, ~1.9k instructions: a
code object, a frame and a traceback) for every exception raised inside it, even one it catches itself. An app
call ends in ``StopIteration`` (a coroutine's return), and the compiled version of this step met it three times
per request: where the first step caught it, and in the ``send`` and ``__next__`` of the object the Task drove,
which raised it again to finish the Task. That was 5.8k instructions, 8% of a whole ``GET /`` (callgrind).

Here the first step catches the ``StopIteration`` in the interpreter (one traceback entry on an existing frame),
and the Task drives :func:`resume`, a native generator: when it returns, or when the coroutine it delegates to
with ``yield from`` returns, the Task learns it through ``PyIter_Send``'s return code, with no exception at all.
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import Coroutine, Generator
from typing import Any


class Finished:
    """The first step ran the coroutine to its end (``error`` is what it raised past its own handlers)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


FINISHED = Finished(None)  # returned normally: shared, it carries nothing
NOT_TAKEN = object()  # no first step was taken here (another task was running): the Task takes it


def first_step(context: contextvars.Context, coro: Coroutine[Any, Any, None]) -> Any:
    """Take ``coro``'s first step in ``context``: what it yielded (the future it waits on), or a :class:`Finished`."""
    try:
        return context.run(coro.send, None)
    except StopIteration:
        return FINISHED
    except BaseException as exc:  # the Task raises it, as if its own step had
        return Finished(exc)


@types.coroutine
def resume(box: list[Any], coro: Coroutine[Any, Any, None]) -> Generator[Any, None, None]:
    """What the Task drives: it continues ``coro`` from the first step whose outcome ``box[0]`` holds.

    When that step finished the coroutine, the generator is left unstarted: the Task's first ``send`` ends it
    (with the step's exception, if any), and a cancel before that ends the Task as cancelled. Otherwise
    :func:`prime` has run it to its first ``yield``, so that a throw before the Task's first step (a cancel)
    lands inside it and goes on to ``coro`` where it is suspended, as with any Task: a cancel cancels the
    future ``coro`` waits on, as Task.cancel() does, and the Task then waits for that future. The Task's
    first ``send`` then gets the future the first step yielded (its blocking flag already set by the
    coroutine's ``await``), so the Task waits on it as if it had taken that step itself; after that,
    ``yield from`` hands every step to ``coro`` directly.
    """
    first = box[0]
    if type(first) is Finished:
        box[0] = None
        if first.error is not None:
            raise first.error
        return
    try:
        yield None  # primed to here
    except GeneratorExit:  # closed (a Task destroyed unfinished): as ``yield from``, close coro, which may be
        box[0] = None  # closed already (the collector's order), rather than throw into it
        coro.close()
        raise
    except BaseException as exc:  # thrown before the Task's first step: a cancel
        first, box[0] = box[0], None
        if first is NOT_TAKEN:  # the coroutine never ran: closed, not left to warn that it was never awaited
            coro.close()
            raise
        if isinstance(exc, asyncio.CancelledError) and asyncio.isfuture(first) \
                and first.cancel(exc.args[0] if exc.args else None):
            # as Task.cancel() on a waiting Task: the future (a child task, a gather) is cancelled, and the
            # coroutine learns it from there (a child that ignores it lets the coroutine go on)
            pending = first
        else:
            try:
                pending = coro.throw(exc)
            except StopIteration:
                return
    else:
        first, box[0] = box[0], None
        if first is NOT_TAKEN:
            yield from coro  # a types.coroutine generator may delegate to a coroutine
            return
        pending = first
    yield from continue_from(coro, pending)


@types.coroutine
def continue_from(coro: Coroutine[Any, Any, None], pending: Any) -> Generator[Any, None, None]:
    """Carry on ``coro``, already started and suspended on ``pending`` (the future its last step yielded).

    The driver (a Task) gets ``pending`` first; a throw while waiting on it (a cancel) goes to ``coro`` where
    it is suspended, and a close closes ``coro`` as ``yield from`` does (it may be closed already, in the
    collector's order, so nothing is thrown into it). After that, ``yield from`` hands every step to ``coro``.
    Used by :func:`resume` and by gateways/eager.py's ``start_eager``.
    """
    while True:
        try:
            yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation (or any throw) goes to the coroutine
            try:
                pending = coro.throw(exc)
            except StopIteration:
                return
        else:
            break
    yield from coro


def prime(task_coro: Generator[Any, None, None]) -> None:
    """Run :func:`resume` to its first ``yield`` (see there), before the Task's first step."""
    task_coro.send(None)
