"""One read shared by every caller that asks for it at about the same time.

For reads anyone may trigger without credentials (/metrics' outbox status, /ready): however many
callers come, a process runs at most one such read at a time and starts at most one per interval,
so a flood of requests costs the database a bounded amount of work and at most one connection.

Unlike a cache, a caller never gets an answer read before it arrived: it joins the next read,
which starts after the previous one ended and the interval since that one's start has passed.
A caller may wait up to the interval (plus one read) for its answer; callers that arrived while
that next read was waiting all get its answer (or its exception)."""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedRead(Generic[T]):
    def __init__(self, interval_seconds: float) -> None:
        self.interval_seconds = interval_seconds
        self._next: asyncio.Task[T] | None = None  # not started yet: new callers join it
        self._last: asyncio.Task[T] | None = None  # the read created most recently
        self._started_at = -math.inf  # event-loop time the last read started

    async def get(self, read: Callable[[], Awaitable[T]]) -> T:
        """The result of a `read()` started after this call began, shared with other callers."""
        task = self._next
        if task is None:
            # A clean context: the shared read belongs to no one caller's trace or log ids.
            task = asyncio.get_running_loop().create_task(
                self._run(read, self._last), context=contextvars.Context()
            )
            task.add_done_callback(_mark_retrieved)
            self._next = self._last = task
        # A caller that goes away (a client disconnect) leaves the read to the others.
        return await asyncio.shield(task)

    async def _run(self, read: Callable[[], Awaitable[T]], previous: asyncio.Task[T] | None) -> T:
        if previous is not None:
            await asyncio.wait([previous])  # one read at a time, even a slow one
        loop = asyncio.get_running_loop()
        delay = self._started_at + self.interval_seconds - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # From here on this read may have missed what a new caller wants counted: it makes
        # the next one.
        self._next = None
        self._started_at = loop.time()
        return await read()


def _mark_retrieved(task: asyncio.Task[T]) -> None:
    """Every waiter may have gone: asyncio must then not log the exception as never retrieved
    (the read itself logs its failures, once for all its callers)."""
    if not task.cancelled():
        task.exception()
