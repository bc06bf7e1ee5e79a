"""What the webhook tests share: settings that allow a loopback receiver, the relay and the
webhook dispatcher running in the test's own loop, waits, and the feed's envelopes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import psycopg

from ledger.core.settings import Settings
from ledger.webhooks.delivery.dispatcher import WebhookDispatcher
from ledger.webhooks.delivery.lane import LaneBounds
from ledger.webhooks.secrets import SecretBox
from outbox.relay import Relay
from tests.helpers import AUDIT_KEY_ENV
from tests.stored_events import ENVELOPE_COLUMNS, envelope_text

DEADLINE_SECONDS = 60.0  # an upper bound for waits, never a timing assert
STEP_SECONDS = 0.05


def receiver_settings(db_url: str) -> Settings:
    """As a developer runs it against a loopback receiver: plain http and private addresses
    allowed, and the audit key the secrets are sealed with."""
    return Settings(
        database_url=db_url,
        admin_key="lk_test_admin_secret_0123456789",
        log_format="json",
        audit_signing_key=os.environ[AUDIT_KEY_ENV],
        webhook_allow_http=True,
        webhook_allow_private=True,
    )


async def _loop(step: Callable[[], Any], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            await step()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), STEP_SECONDS)


@contextlib.asynccontextmanager
async def delivering(
    settings: Settings, bounds: LaneBounds | None = None, box: SecretBox | None = None
) -> AsyncIterator[WebhookDispatcher]:
    """The relay (no Kafka: it gives events their feed positions) and a dispatcher, stepping
    as `ledger worker` steps them, until the block ends."""
    relay = Relay(settings)
    dispatcher = WebhookDispatcher(settings, bounds=bounds, box=box)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(_loop(relay.step, stop)),
        asyncio.create_task(_loop(dispatcher.step, stop)),
    ]
    try:
        yield dispatcher
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await dispatcher.close()
        await relay.close()


async def wait_for(
    predicate: Callable[[], bool], what: str, deadline_s: float = DEADLINE_SECONDS
) -> None:
    stop_at = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > stop_at:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


def feed_envelopes(db: psycopg.Connection[Any], after: int = 0) -> list[tuple[int, str]]:
    """(position, envelope text) of every fed event after `after`, in feed order."""
    rows = db.execute(
        f"SELECT f.position, {ENVELOPE_COLUMNS} FROM outbox_feed f "
        "JOIN outbox_events e ON e.id = f.id WHERE f.position > %s ORDER BY f.position",
        (after,),
    ).fetchall()
    return [(int(r[0]), envelope_text(r[1], r[2])) for r in rows]


def unfed(db: psycopg.Connection[Any]) -> int:
    row = db.execute(
        "SELECT count(*) FROM outbox_events e "
        "WHERE NOT EXISTS (SELECT 1 FROM outbox_feed f WHERE f.id = e.id)"
    ).fetchone()
    return int(row[0]) if row else 0


async def create_endpoint(client: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
