"""ASGI lifespan 2.0: run an app's startup before serving and its shutdown after, with ``state``.

``auto`` mode tolerates apps that do not speak lifespan (they raise, or return, on the lifespan scope
before answering startup): we note it at info level and serve on. ``on`` requires it. A startup failure is
a StartupError, so the server stops with a clear message and a non-zero exit instead of serving a
half-initialised app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from bascule.errors import StartupError
from bascule.gateways.asgi import ASGIApp, Message

_log = logging.getLogger("bascule.error")


class Lifespan:
    """Drives one app's lifespan task; ``state`` is shared with every request scope (shallow copies)."""

    def __init__(self, app: ASGIApp, *, mode: str, label: str, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode
        self.label = label
        self.state = state
        self.supported = True
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._startup: asyncio.Future[str | None] | None = None
        self._shutdown: asyncio.Future[str | None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Send lifespan.startup and wait for the app's answer; raise StartupError if it failed."""
        if self.mode == "off":
            self.supported = False
            return
        loop = asyncio.get_running_loop()
        self._startup = loop.create_future()
        self._shutdown = loop.create_future()
        self._task = loop.create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        failure = await self._startup
        if failure is not None:
            raise StartupError(f"{self.label}: lifespan startup failed: {failure}")

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Send lifespan.shutdown and wait (bounded) for the app's answer; failures are logged."""
        if not self.supported or self._task is None or self._task.done() or self._shutdown is None:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            failure = await asyncio.wait_for(asyncio.shield(self._shutdown), timeout)
        except TimeoutError:
            _log.error("%s: lifespan shutdown did not finish within %.0f s", self.label, timeout)
            self._task.cancel()
            return
        if failure is not None:
            _log.error("%s: lifespan shutdown failed: %s", self.label, failure)

    async def cancel(self) -> None:
        """Forced stop: end the lifespan task without running the app's shutdown."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        mtype = message.get("type")
        assert self._startup is not None and self._shutdown is not None
        if mtype == "lifespan.startup.complete":
            _set(self._startup, None)
        elif mtype == "lifespan.startup.failed":
            _set(self._startup, str(message.get("message", "")) or "the app reported failure")
        elif mtype == "lifespan.shutdown.complete":
            _set(self._shutdown, None)
        elif mtype == "lifespan.shutdown.failed":
            _set(self._shutdown, str(message.get("message", "")) or "the app reported failure")
        else:
            raise RuntimeError(f"unexpected lifespan message {mtype!r}")

    async def _run(self) -> None:
        assert self._startup is not None and self._shutdown is not None
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            _set(self._startup, "cancelled")
            _set(self._shutdown, "cancelled")
            raise  # a forced stop: not the app's failure, nothing to report
        except BaseException as exc:
            if not self._startup.done():
                if self.mode == "auto":
                    self.supported = False
                    _log.info("%s does not support ASGI lifespan (%s: %s); serving without it",
                              self.label, type(exc).__name__, exc)
                    _set(self._startup, None)
                else:
                    _log.error("%s: exception in lifespan startup", self.label, exc_info=exc)
                    _set(self._startup, f"{type(exc).__name__}: {exc}")
            else:
                _log.error("%s: exception in lifespan", self.label, exc_info=exc)
                _set(self._shutdown, f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, Exception):
                raise
        else:
            if not self._startup.done():
                # returned without answering: it ignores lifespan
                self.supported = False
                if self.mode == "on":
                    _set(self._startup, "the app returned without answering lifespan.startup")
                else:
                    _set(self._startup, None)
            _set(self._shutdown, None)


def _set(fut: asyncio.Future[str | None], value: str | None) -> None:
    if not fut.done():
        fut.set_result(value)
