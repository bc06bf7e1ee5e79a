"""Console sessions kept in PostgreSQL, behind Litestar's server-side session middleware.

Why server-side, in the database every API process already shares: the cookie carries a random
id and nothing else (no key, not even encrypted), a sign-out deletes the row so the cookie is
dead everywhere at once, and no new shared secret has to be handed to each process. The data is
`{"key_id": ...}`: the API key's id, never its secret; each page checks that key is still live.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TypeVar

from litestar.stores.base import Store
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.console import repository as repo
from ledger.core import limits

T = TypeVar("T")

SESSION_COOKIE = "ledger_console"
# Set on the scope's state at sign-in: the session middleware then stores the session under a
# new id (never one the browser brought along: no session fixation).
ROTATE_SESSION_ID = "ledger.console.rotate_session_id"
Run = Callable[[Callable[[AsyncSession], Awaitable[T]]], Awaitable[T]]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _seconds(value: int | dt.timedelta | None) -> int:
    if value is None:
        return limits.CONSOLE_SESSION_SECONDS
    if isinstance(value, dt.timedelta):
        return int(value.total_seconds())
    return value


class DatabaseSessionStore(Store):
    """Litestar's `Store`, over the `console_sessions` table. `run` is the app's transaction
    helper (one transaction per call; a database away is a 503)."""

    def __init__(self, run: Run[object]) -> None:
        self._run = run

    async def set(
        self, key: str, value: str | bytes, expires_in: int | dt.timedelta | None = None
    ) -> None:
        data = value.encode() if isinstance(value, str) else value
        expires_at = _now() + dt.timedelta(seconds=_seconds(expires_in))

        async def work(session: AsyncSession) -> None:
            await repo.put_session(session, key, data, expires_at)

        await self._run(work)

    async def get(self, key: str, renew_for: int | dt.timedelta | None = None) -> bytes | None:
        now = _now()

        async def work(session: AsyncSession) -> bytes | None:
            data = await repo.session_data(session, key, now)
            if data is not None and renew_for is not None:
                expires_at = now + dt.timedelta(seconds=_seconds(renew_for))
                await repo.renew_session(session, key, expires_at)
            return data

        found = await self._run(work)
        return found if isinstance(found, bytes) else None

    async def delete(self, key: str) -> None:
        async def work(session: AsyncSession) -> None:
            await repo.delete_session(session, key)

        await self._run(work)

    async def delete_all(self) -> None:
        async def work(session: AsyncSession) -> None:
            await repo.delete_all_sessions(session)

        await self._run(work)

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        async def work(session: AsyncSession) -> dt.datetime | None:
            return await repo.session_expires_at(session, key)

        expires_at = await self._run(work)
        if not isinstance(expires_at, dt.datetime):
            return None
        return max(0, int((expires_at - _now()).total_seconds()))
