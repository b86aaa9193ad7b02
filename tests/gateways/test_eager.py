"""gateways/eager.py: every app call in a Task of its own from its first instruction, first step at once."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from bascule.gateways.eager import start_eager, start_task

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_first_step_runs_at_once_inside_its_own_task() -> None:
    seen: list[Any] = []

    async def app() -> None:
        seen.append(asyncio.current_task())

    async def go() -> None:
        outer = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def from_a_callback() -> None:  # as a protocol's data_received: no task is current
            seen.append(start_task(loop, app()))
            seen.append("returned")

        loop.call_soon(from_a_callback)
        await asyncio.sleep(0)
        await seen[1]
        assert seen[0] is seen[1] and seen[0] is not outer and seen[2] == "returned"

    run(go())


def test_a_suspended_app_carries_on_in_the_same_task_and_context() -> None:
    events: list[Any] = []

    async def app(name: str) -> None:
        VAR.set(name)
        task = asyncio.current_task()
        await asyncio.sleep(0.01)
        async with asyncio.timeout(1), asyncio.TaskGroup() as group:  # both need a current task
            group.create_task(asyncio.sleep(0))
        events.append((name, task is asyncio.current_task(), VAR.get()))

    async def go() -> None:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        loop.call_soon(lambda: tasks.extend((start_task(loop, app("a")), start_task(loop, app("b")))))
        await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert VAR.get() == "unset"  # the callers' context is never the app's

    run(go())
    assert sorted(events) == [("a", True, "a"), ("b", True, "b")]


def test_a_cancel_before_the_tasks_first_step_reaches_the_app_where_it_waits() -> None:
    reached: list[str] = []

    async def app() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            reached.append("cancelled")
            raise

    async def go() -> None:
        loop = asyncio.get_running_loop()
        box: list[asyncio.Task[None]] = []
        loop.call_soon(lambda: box.append(start_task(loop, app())))
        await asyncio.sleep(0)
        box[0].cancel()  # before the Task took a step of its own
        with pytest.raises(asyncio.CancelledError):
            await box[0]

    run(go())
    assert reached == ["cancelled"]


def test_an_exception_in_the_first_step_is_the_tasks_outcome() -> None:
    async def app() -> None:
        raise LookupError("boom")

    async def go() -> None:
        loop = asyncio.get_running_loop()
        box: list[asyncio.Task[None]] = []
        loop.call_soon(lambda: box.append(start_task(loop, app())))
        await asyncio.sleep(0)
        with pytest.raises(LookupError):
            await box[0]

    run(go())


def test_started_from_inside_another_task_the_first_step_is_left_to_the_task() -> None:
    order: list[str] = []

    async def app() -> None:
        order.append("app")
        assert asyncio.current_task() is task

    async def go() -> None:
        nonlocal task
        task = start_task(asyncio.get_running_loop(), app())
        order.append("caller")
        await task

    task: Any = None
    run(go())
    assert order == ["caller", "app"]


def test_start_eager_runs_server_coroutines_without_a_task_until_they_wait() -> None:
    async def quick() -> None:
        return None

    async def slow() -> None:
        await asyncio.sleep(0)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        assert start_eager(loop, quick()) is None
        task = start_eager(loop, slow())
        assert task is not None
        await task

    run(go())


def test_a_cancel_before_the_tasks_first_step_when_the_first_step_finished_the_app() -> None:
    ran: list[str] = []

    async def app() -> None:
        ran.append("done")

    async def go() -> None:
        loop = asyncio.get_running_loop()
        box: list[asyncio.Task[None]] = []
        loop.call_soon(lambda: box.append(start_task(loop, app())))
        await asyncio.sleep(0)
        box[0].cancel()  # nothing left to reach: the Task ends cancelled
        with pytest.raises(asyncio.CancelledError):
            await box[0]

    run(go())
    assert ran == ["done"]


def test_a_cancel_before_a_task_started_from_inside_another_closes_the_app_unrun() -> None:
    import gc
    import warnings

    ran: list[str] = []

    async def app() -> None:
        ran.append("ran")

    async def go() -> None:
        loop = asyncio.get_running_loop()
        task = start_task(loop, app())  # inside this task: no first step taken here
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine ... was never awaited"
        run(go())
        gc.collect()
    assert ran == []



def test_a_cancel_before_the_tasks_first_step_cancels_what_the_app_awaits() -> None:
    """As Task.cancel() does for a Task that waits: the future the app awaits (here a child task) is
    cancelled, and the app learns it from that future. A child left running would outlive its request."""
    children: list[asyncio.Task[None]] = []

    async def app() -> None:
        children.append(asyncio.get_running_loop().create_task(asyncio.sleep(10)))
        await children[0]

    async def go() -> None:
        loop = asyncio.get_running_loop()
        box: list[asyncio.Task[None]] = []

        def start() -> None:
            box.append(start_task(loop, app()))

        loop.call_soon(start)
        await asyncio.sleep(0)
        box[0].cancel()  # before the Task took a step of its own
        with pytest.raises(asyncio.CancelledError):
            await box[0]
        assert children[0].cancelled()  # now, not when asyncio.run cancels what is left at its end

    run(go())


@pytest.mark.parametrize("taken", ["first step only", "after the task's own step"])
def test_a_task_destroyed_unfinished_closes_the_app_in_either_order(taken: str) -> None:
    """A Task dropped while its app waits is closed by the collector, which may close the app's coroutine
    before the Task's own (the generator that delegates to it). Either way, as ``yield from`` does: the app
    gets GeneratorExit once, and closing the Task's coroutine afterwards raises nothing."""
    closed: list[str] = []

    async def app(fut: asyncio.Future[None]) -> None:
        try:
            await fut
        finally:
            closed.append("app")

    async def go() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        box: list[asyncio.Task[None]] = []
        coro = app(fut)
        loop.call_soon(lambda: box.append(start_task(loop, coro)))
        await asyncio.sleep(0)
        if taken != "first step only":
            await asyncio.sleep(0)
        stepper: Any = box[0].get_coro()
        coro.close()  # the collector's order: the app first
        stepper.close()
        stepper.close()
        fut.cancel()  # the Task, woken, finds its coroutine closed
        await asyncio.gather(box[0], return_exceptions=True)

    run(go())
    assert closed == ["app"]


def test_a_start_eager_task_destroyed_unfinished_closes_the_coroutine_in_either_order() -> None:
    """The same for start_eager's Task (a server coroutine carried on after its first step)."""
    closed: list[str] = []

    async def server_side(fut: asyncio.Future[None]) -> None:
        try:
            await fut
        finally:
            closed.append("coroutine")

    async def go() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        coro = server_side(fut)
        task = start_eager(loop, coro)
        assert task is not None
        await asyncio.sleep(0)
        outer: Any = task.get_coro()
        coro.close()  # the collector's order: the server coroutine first
        outer.close()
        fut.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(go())
    assert closed == ["coroutine"]
