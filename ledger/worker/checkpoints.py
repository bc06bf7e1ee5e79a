"""Delivery of signed audit checkpoints to Kafka and to the append-only file: their own outbox.

The sealer inserts each checkpoint in the database (ledger/audit/tree.py); these jobs deliver
them afterwards, oldest first, and record each delivery (`audit_checkpoint_deliveries`) in the
transaction that read them. A broker that is down or paused only delays a checkpoint: it stays
undelivered and is sent on a later step, once the broker answers. Delivery is at least once: a
step that fails after sending sends again, so readers drop duplicates by `tree_size` (the file
job skips what the file's last line already covers).

One delivery per target at a time (a transaction-level advisory lock per target), so two workers
never interleave their lines in one file or their records on the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.audit import tree_store as store
from ledger.audit.signing import Checkpoint
from ledger.core import limits
from ledger.core.db import run_in_transaction
from ledger.core.errors import ServiceUnavailable
from ledger.core.settings import Settings
from outbox.kafka import KafkaOptions, start_producer

log = structlog.get_logger("ledger.worker.checkpoints")

KAFKA_TARGET = "kafka"
FILE_TARGET = "file"
# The delivery lock's key per target (class AUDIT_CHECKPOINT_DELIVERY of ledger/core/locks.py).
TARGET_LOCK_KEYS = {KAFKA_TARGET: 1, FILE_TARGET: 2}
CHECKPOINT_RECORD_KEY = b"ledger.audit.checkpoint"  # one key: one partition, in order

Send = Callable[[Sequence[Checkpoint]], Awaitable[None]]


async def deliver_step(
    sessionmaker: async_sessionmaker[AsyncSession], target: str, send: Send
) -> int:
    """Deliver one bounded batch to `target`; returns how many (the loop runs again at once
    while a batch came back full)."""

    async def work(session: AsyncSession) -> int:
        if not await store.try_delivery_lock(session, TARGET_LOCK_KEYS[target]):
            return 0
        batch_max = limits.AUDIT_CHECKPOINT_DELIVERY_BATCH_MAX
        pending = await store.undelivered(session, target, batch_max)
        if not pending:
            return 0
        await send(pending)
        sizes = [c.tree_size for c in pending]
        await store.mark_delivered(session, target, sizes, dt.datetime.now(dt.UTC))
        return len(pending)

    delivered = await run_in_transaction(sessionmaker, work)
    if delivered:
        log.info("audit.checkpoints_delivered", target=target, count=delivered)
    return delivered if delivered >= limits.AUDIT_CHECKPOINT_DELIVERY_BATCH_MAX else 0


# -- the file -------------------------------------------------------------------------------------


def last_size_in_file(path: Path) -> int:
    """The tree size of the file's last complete line (0 for none): lines are appended in size
    order, so a checkpoint at or below it is in the file already."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            length = handle.tell()
            handle.seek(max(0, length - limits.AUDIT_CHECKPOINT_FILE_TAIL_BYTES))
            tail = handle.read()
    except FileNotFoundError:
        return 0
    for line in reversed(tail.split(b"\n")):
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            size = json.loads(line).get("tree_size")
            if isinstance(size, int):
                return size
    return 0


def append_to_file(path: Path, checkpoints: Sequence[Checkpoint]) -> None:
    """Append one JSON line per checkpoint not in the file yet, then fsync (a blocking call:
    run it in a thread)."""
    done = last_size_in_file(path)
    lines = [c.json_line() + b"\n" for c in checkpoints if c.tree_size > done]
    if not lines:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"".join(lines))
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sender(path: Path) -> Send:
    async def send(checkpoints: Sequence[Checkpoint]) -> None:
        await asyncio.to_thread(append_to_file, path, checkpoints)

    return send


# -- Kafka ----------------------------------------------------------------------------------------


class KafkaCheckpoints:
    """The producer for the checkpoint topic, kept between steps and closed with the worker."""

    def __init__(self, settings: Settings, options: KafkaOptions | None = None) -> None:
        self.settings = settings.with_(kafka_topic=settings.kafka_checkpoint_topic)
        self.options = options or KafkaOptions()
        self._producer: AIOKafkaProducer | None = None

    async def send(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Send in order and wait for every ack; any failure raises (nothing is marked)."""
        bound_s = self.options.request_timeout_ms / 1000 * 2 + 5
        try:
            producer = await asyncio.wait_for(self._ensure_producer(), bound_s)
            for checkpoint in checkpoints:
                delivery = await producer.send(
                    self.settings.kafka_topic,
                    value=checkpoint.json_line(),
                    key=CHECKPOINT_RECORD_KEY,
                    headers=[("content-type", b"application/json")],
                )
                await asyncio.wait_for(asyncio.shield(delivery), bound_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("audit.checkpoint_publish_failed", error=type(exc).__name__)
            await self.close()
            raise CheckpointNotDelivered(str(exc)) from exc

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = await start_producer(self.settings, self.options)
        return self._producer

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self.options.request_timeout_ms / 1000 + 5)


class CheckpointNotDelivered(ServiceUnavailable):
    """The broker did not take a checkpoint: the transaction rolls back, nothing is marked, and
    the worker loop logs it as a step that found its target unavailable."""
