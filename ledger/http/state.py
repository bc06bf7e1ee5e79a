"""What the HTTP layer keeps on app state: settings, sessions and the authenticated-key cache.

The layer knows nothing of the packages above it: the app factory passes in how a bearer secret
becomes an actor (`Authenticate`), and any feature's own service (group commit) lives in
`extensions`, read back by the controllers that own it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from litestar.connection import ASGIConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.core import limits
from ledger.core.context import Actor
from ledger.core.db import run_in_transaction
from ledger.core.replica import ReadReplica
from ledger.core.settings import Settings

T = TypeVar("T")

# A bearer secret -> the actor it authenticates, or None when unknown or revoked.
Authenticate = Callable[[AsyncSession, str], Awaitable[Actor | None]]


@dataclass(slots=True)
class Services:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    authenticate: Authenticate
    key_cache: KeyCache = field(default_factory=lambda: KeyCache())
    extensions: dict[str, Any] = field(default_factory=dict)
    # LEDGER_DATABASE_READ_URL's standby, when set (ledger/core/replica.py).
    replica: ReadReplica | None = None

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """On the primary: writes, and reads that must see the caller's own writes or whose
        answer a write is judged against (an ETag for `If-Match`)."""
        return await run_in_transaction(self.sessionmaker, work)

    async def read(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """A read that may be served by the standby (lists, statements, reports, the feed, the
        console): never older than any write acknowledged before it arrived."""
        if self.replica is None:
            return await self.run(work)
        return await self.replica.read(work)


class KeyCache:
    """Authenticated keys by secret hash, for a short time: every request authenticates, and a
    database round trip per request for the same few keys was an eighth of the API's CPU.
    Unknown secrets are never cached. A revocation through this process empties the cache."""

    def __init__(
        self,
        ttl_seconds: float = limits.API_KEY_CACHE_TTL_SECONDS,
        entries_max: int = limits.API_KEY_CACHE_ENTRIES_MAX,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.entries_max = entries_max
        self.entries: dict[str, tuple[Actor, float]] = {}

    def get(self, secret_hash: str) -> Actor | None:
        found = self.entries.get(secret_hash)
        if found is None:
            return None
        actor, expires = found
        if expires < time.monotonic():
            del self.entries[secret_hash]
            return None
        return actor

    def put(self, secret_hash: str, actor: Actor) -> None:
        if len(self.entries) >= self.entries_max:
            self.entries.clear()
        self.entries[secret_hash] = (actor, time.monotonic() + self.ttl_seconds)

    def clear(self) -> None:
        self.entries.clear()


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    services: Services = connection.app.state.services
    return services
