"""The webhook dispatcher: the worker's job that runs one lane per enabled endpoint.

One dispatcher is active per database, as one relay is: it holds a session-level advisory lock
(class WEBHOOK_DISPATCHER) on a connection of its own, and every read and write of every lane
goes through that connection, in its own short transaction. A second worker's dispatcher finds
the lock taken and stands by; when the first one's connection ends (the process killed, the
database restarted), its lock goes with it, and the standby takes over from the cursors and
delivery rows in the database. A dispatcher that loses its connection stops its lanes at once
and cannot write anything after that.

Every WEBHOOK_POLL_INTERVAL_SECONDS a step looks at the feed's head and wakes the lanes when it
moved; every WEBHOOK_ENDPOINTS_REFRESH_SECONDS it reads the endpoints and their secrets, and
starts, restarts (a new URL, types or secret) or stops lanes to match. HTTP requests never hold
the connection: a lane reads, lets go, sends, then records.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.core import limits
from ledger.core.db import direct_engine
from ledger.core.errors import ServiceUnavailable
from ledger.core.locks import SINGLETON_KEY, LockClass
from ledger.core.settings import Settings
from ledger.webhooks import repository as repo
from ledger.webhooks.delivery.lane import Lane, LaneBounds, LaneConfig
from ledger.webhooks.delivery.transport import guarded_client
from ledger.webhooks.secrets import SecretBox, SecretUnreadable, secret_box
from outbox import repository as feed

log = structlog.get_logger("ledger.webhooks.dispatcher")
T = TypeVar("T")
DISPATCHER_LOCK = (int(LockClass.WEBHOOK_DISPATCHER), SINGLETON_KEY)


class WebhookDispatcher:
    def __init__(
        self,
        settings: Settings,
        *,
        bounds: LaneBounds | None = None,
        box: SecretBox | None = None,
        instance: str | None = None,
    ) -> None:
        self.settings = settings
        # Names the lock connection (`ledger-webhooks-<instance>`): the worker's pid by default.
        self.instance = instance or str(os.getpid())
        self.bounds = bounds or LaneBounds()
        self.box = box or secret_box(settings)
        self._engine: AsyncEngine | None = None
        self._conn: AsyncConnection | None = None
        self._conn_lock = asyncio.Lock()
        self._leading = False
        self._said_standby = False
        self._lanes: dict[uuid.UUID, tuple[Lane, asyncio.Task[None]]] = {}
        self._refreshed_at = 0.0
        self._head = -1

    @property
    def leading(self) -> bool:
        return self._leading

    # -- the job's step ------------------------------------------------------------------------

    async def step(self) -> int:
        if not await self._lead():
            await self._stop_lanes()
            return 0
        if time.monotonic() - self._refreshed_at >= limits.WEBHOOK_ENDPOINTS_REFRESH_SECONDS:
            await self._refresh()
        head = await self.run(feed.last_feed_position)
        if head != self._head:
            self._head = head
            for lane, _task in self._lanes.values():
                lane.wake.set()
        return 0

    # -- the lock connection -------------------------------------------------------------------

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work(conn)` in one transaction on the lock holder's connection, one at a time. A
        database failure gives the lock up (the connection is closed); the next step leads anew
        or stands by, and stops the lanes."""
        async with self._conn_lock:
            conn = self._conn
            if conn is None or not self._leading:
                raise ServiceUnavailable("the webhook dispatcher is not leading")
            try:
                async with conn.begin():
                    return await work(conn)
            except DBAPIError as exc:
                await self._drop_connection()
                raise ServiceUnavailable("the webhook dispatcher lost its database") from exc

    async def _lead(self) -> bool:
        if self._leading:
            return True
        if self._engine is None:
            self._engine = _dispatcher_engine(self.settings, self.instance)
        async with self._conn_lock:
            try:
                if self._conn is None:
                    self._conn = await self._engine.connect()
                async with self._conn.begin():
                    result = await self._conn.execute(
                        sa.select(sa.func.pg_try_advisory_lock(*DISPATCHER_LOCK))
                    )
                    self._leading = bool(result.scalar())
            except DBAPIError as exc:
                await self._drop_connection()
                raise ServiceUnavailable(
                    "the webhook dispatcher cannot reach the database"
                ) from exc
        if self._leading:
            log.info("webhook.dispatcher_leading")
            self._said_standby = False
            self._refreshed_at = 0.0
            self._head = -1
        elif not self._said_standby:
            log.info("webhook.dispatcher_standby", detail="another worker holds the lock")
            self._said_standby = True
        return self._leading

    async def _drop_connection(self) -> None:
        conn, self._conn, self._leading = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    # -- lanes ---------------------------------------------------------------------------------

    async def _refresh(self) -> None:
        now = dt.datetime.now(dt.UTC)

        async def read(
            conn: AsyncConnection,
        ) -> tuple[list[repo.Endpoint], list[repo.StoredSecret]]:
            endpoints = await repo.live_endpoints(conn, limits.WEBHOOK_ENDPOINTS_MAX)
            return endpoints, await repo.valid_secrets(conn, now)

        endpoints, stored = await self.run(read)
        self._refreshed_at = time.monotonic()
        wanted = {e.id: self._config(e, stored) for e in endpoints if e.enabled}
        for endpoint_id in list(self._lanes):
            lane, _task = self._lanes[endpoint_id]
            if wanted.get(endpoint_id) != lane.config:
                await self._stop_lane(endpoint_id)
        for endpoint_id, config in wanted.items():
            if endpoint_id not in self._lanes:
                self._start_lane(config)

    def _config(self, endpoint: repo.Endpoint, stored: list[repo.StoredSecret]) -> LaneConfig:
        secrets: list[str] = []
        error = None
        for secret in stored:  # newest first
            if secret.endpoint_id != endpoint.id:
                continue
            try:
                secrets.append(self.box.open(secret.sealed, secret.key_id, endpoint.id, secret.id))
            except SecretUnreadable as exc:
                error = str(exc)
        return LaneConfig(
            endpoint_id=endpoint.id,
            url=endpoint.url,
            event_types=endpoint.event_types,
            secrets=tuple(secrets),
            secrets_error=error if not secrets else None,
        )

    def _start_lane(self, config: LaneConfig) -> None:
        session = guarded_client(
            allow_private=self.settings.webhook_allow_private,
            connections_max=self.bounds.concurrency,
        )
        lane = Lane(config, self.run, session, self.bounds)
        task = asyncio.create_task(lane.run_forever(), name=f"webhook-lane-{config.endpoint_id}")
        self._lanes[config.endpoint_id] = (lane, task)
        log.info("webhook.lane_started", endpoint_id=str(config.endpoint_id))

    async def _stop_lane(self, endpoint_id: uuid.UUID) -> None:
        lane, task = self._lanes.pop(endpoint_id)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        with contextlib.suppress(Exception):
            await lane.session.close()
        lane.forget_metrics()
        log.info("webhook.lane_stopped", endpoint_id=str(endpoint_id))

    async def _stop_lanes(self) -> None:
        for endpoint_id in list(self._lanes):
            await self._stop_lane(endpoint_id)

    # -- shutdown ------------------------------------------------------------------------------

    async def close(self) -> None:
        await self._stop_lanes()
        if self._conn is not None and self._leading:
            with contextlib.suppress(Exception):
                async with self._conn.begin():
                    await self._conn.execute(
                        sa.select(sa.func.pg_advisory_unlock(*DISPATCHER_LOCK))
                    )
        await self._drop_connection()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


def _dispatcher_engine(settings: Settings, instance: str) -> AsyncEngine:
    """The dispatcher's own engine, without a pool (its connection holds a session lock), on
    LEDGER_DATABASE_DIRECT_URL like the relay's leader connection (ledger/core/leader.py)."""
    return direct_engine(settings, f"ledger-webhooks-{instance}")
