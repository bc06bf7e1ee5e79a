"""Cleanup of delivery rows: finished ones (delivered, failed) past the event retention, and
everything of deleted endpoints, in bounded batches, then the deleted endpoints' rows."""

from __future__ import annotations

import datetime as dt

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.core import limits
from ledger.core.db import run_in_transaction
from ledger.core.settings import Settings
from ledger.webhooks import deliveries as store
from ledger.webhooks import repository as repo

log = structlog.get_logger("ledger.webhooks.retention")


async def retention_step(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """One bounded batch; returns how many rows went (the loop runs again at once while a
    batch came back full)."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=settings.event_retention_hours)
    batch = limits.WEBHOOK_RETENTION_BATCH_SIZE

    async def work(session: AsyncSession) -> int:
        deleted = await store.delete_finished_before(session, cutoff, batch)
        for endpoint_id in await repo.deleted_endpoint_ids(session, 1):
            removed = await store.delete_of_endpoint(session, endpoint_id, batch)
            if removed < batch:
                await repo.delete_endpoint_row(session, endpoint_id)
            deleted += removed
        return deleted

    deleted = await run_in_transaction(sessionmaker, work)
    if deleted:
        log.info("webhook.deliveries_trimmed", count=deleted)
    return deleted if deleted >= batch else 0
