"""Starting app coroutines: every ASGI call in a Task of its own, with its first step run at once.

Apps rely on ``asyncio.current_task()`` from their first instruction: sniffio and anyio (FastAPI's sync
endpoints, ``BackgroundTasks``, Starlette's ``BaseHTTPMiddleware``, ``FileResponse``), ``asyncio.timeout``
and ``asyncio.TaskGroup`` all fail without one. So an ASGI call always gets a real Task with its own
``contextvars`` copy (:func:`start_task`), which ``--timeout-request`` and a forced stop can cancel.

Most responses are produced without ever waiting, so the Task's first step is run eagerly, inside the
dispatch call, instead of one trip round the event loop later: the response joins the connection's
write of this loop pass, and pipelined requests are answered in one write. Python 3.12 does this itself
(``eager_start``); on 3.11 :func:`start_task` makes the Task, enters it as the loop's current task, runs
the coroutine's first step in the Task's context, and hands the Task a generator that continues from where
that step stopped (both in gateways/eager_steps.py, which stays interpreted: see why there). That costs a
Task and one extra step per request compared with no Task at all, which is what correctness costs.

:func:`start_eager` is for the server's own coroutines that never run app code that could ask for a
task (the WSGI gateway's loop-mode helpers): no Task unless the coroutine really suspends.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from bascule.gateways.eager_steps import FINISHED, NOT_TAKEN, Finished, continue_from, first_step, prime, resume

_enter_task: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None] = asyncio.tasks._enter_task
_leave_task: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None] = asyncio.tasks._leave_task
EAGER_START = sys.version_info >= (3, 12)


def start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``coro`` in a new Task of its own (own context copy), taking its first step now.

    Called from inside another Task (a request whose completion starts the next), the first step is
    left to the Task: a loop has one current task at a time.
    """
    context = contextvars.copy_context()
    if EAGER_START:
        return asyncio.Task(coro, loop=loop, context=context, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    box: list[Any] = [NOT_TAKEN]
    stepper = resume(box, coro)
    task: asyncio.Task[None] = loop.create_task(stepper, context=context)
    try:
        _enter_task(loop, task)
    except RuntimeError:  # another task is running: it must finish its step first
        prime(stepper)
        return task
    try:
        first = box[0] = first_step(context, coro)
    finally:
        _leave_task(loop, task)
    if first is not FINISHED and type(first) is not Finished:
        prime(stepper)  # the coroutine waits: a cancel before the Task's first step must reach it
    return task


def start_eager(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run one of the server's own coroutines until it first suspends; None if it finished, else the
    Task that carries it on. Never for app code (see :func:`start_task`): this first step has no Task."""
    context = contextvars.copy_context()
    try:
        pending = context.run(coro.send, None)
    except StopIteration:
        return None
    return loop.create_task(continue_from(coro, pending), context=context)
