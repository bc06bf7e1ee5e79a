"""Delivery of signed audit checkpoints to Kafka and to append-only files: their own outbox.

The sealer inserts each checkpoint in the database (ledger/audit/tree.py); these jobs deliver
them afterwards, oldest first. Two rules make every copy whole and genuine:

- **Per target.** Delivery state belongs to one target, named by its kind and its identity
  (`kafka:<topic>`, `file:<host>:<absolute path>`), as Kafka consumer groups keep offsets per
  group: two workers with two files each write every checkpoint to their own. A file's position
  is its own last genuine line (the database's row only reports it), so nothing written in the
  database can make a file skip or repeat a checkpoint; Kafka's is `audit_checkpoint_targets`.
- **Only what the keys signed.** A row goes out only when its signatures hold under the
  configured public keys (ledger/audit/keys.py). Any other row is reported (an error log line,
  `ledger_audit_checkpoints_refused`, `GET /v1/audit/verify`) and passed over: genuine
  checkpoints after it go out as usual.

A broker that is down or paused only delays a checkpoint: the target's position does not move
and a later step sends it. Delivery is at least once: readers drop duplicates by `tree_size`.
One delivery per target at a time (a transaction-level advisory lock keyed by the target's
name; a file is also locked with `flock` while a step appends to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.audit import checkpoint_store as store
from ledger.audit import repository as repo
from ledger.audit.keys import Keyring
from ledger.audit.refusals import ReportedOnce
from ledger.audit.signing import Checkpoint, checkpoint_from
from ledger.core import limits
from ledger.core.db import run_in_transaction
from ledger.core.errors import ServiceUnavailable
from ledger.core.settings import Settings
from observability import metrics
from outbox.kafka import KafkaOptions, start_producer

log = structlog.get_logger("ledger.worker.checkpoints")

CHECKPOINT_RECORD_KEY = b"ledger.audit.checkpoint"  # one key: one partition, in order

Send = Callable[[Sequence[Checkpoint]], Awaitable[None]]


@dataclass(slots=True)
class Target:
    """One place checkpoints go: its kind, its identity, and what this process knows of it."""

    kind: str  # "kafka" or "file"
    identity: str
    # The file's own position (None: the target's row in the database is its position).
    position: Callable[[], Awaitable[int]] | None = None
    # (position, size): from that position, the rows up to that size were read and refused
    # (never past the chain's head, where a later genuine checkpoint could land).
    skipped: tuple[int, int] = (0, 0)
    reported: ReportedOnce = field(default_factory=ReportedOnce)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.identity}"

    @property
    def lock_key(self) -> int:
        """A signed 32-bit key from the name: two names rarely share one (then they only take
        turns)."""
        value = int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:4], "big")
        return value - (1 << 32) if value >= (1 << 31) else value


def kafka_target(topic: str) -> Target:
    return Target("kafka", topic)


def file_target(path: Path, keys: Keyring) -> Target:
    absolute = Path(os.path.abspath(path))

    async def position() -> int:
        return await asyncio.to_thread(last_size_in_file, absolute, keys)

    return Target("file", f"{socket.gethostname()}:{absolute}", position=position)


async def deliver_step(
    sessionmaker: async_sessionmaker[AsyncSession], target: Target, send: Send, keys: Keyring
) -> int:
    """Deliver one bounded batch of genuine checkpoints to `target`; returns how many (the loop
    runs again at once while a batch came back full)."""

    async def work(session: AsyncSession) -> int:
        if not await store.try_delivery_lock(session, target.lock_key):
            return 0
        if target.position is not None:
            after = await target.position()
        else:
            after = await store.target_position(session, target.name)
        head = await repo.chain_head(session)
        head_seq = 0 if head is None else head.seq
        genuine = await _genuine_after(session, target, keys, after, head_seq)
        if not genuine:
            return 0
        await send(genuine)
        newest = genuine[-1].tree_size
        await store.set_target_position(session, target.name, newest, dt.datetime.now(dt.UTC))
        return len(genuine)

    delivered = await run_in_transaction(sessionmaker, work)
    if delivered:
        log.info("audit.checkpoints_delivered", target=target.name, count=delivered)
    return delivered if delivered >= limits.AUDIT_CHECKPOINT_DELIVERY_BATCH_MAX else 0


async def _genuine_after(
    session: AsyncSession, target: Target, keys: Keyring, after: int, head: int
) -> list[Checkpoint]:
    """Genuine checkpoints above `after`, oldest first, reading past refused rows: at most a
    batch of them, and at most AUDIT_CHECKPOINT_SCAN_MAX rows. Only rows up to the chain's head
    are read (a genuine checkpoint is never larger). After a flood of refused rows (the scan
    bound reached with nothing genuine) they stay passed over (`skipped`), below the head only:
    the sealer signs at the head or above, so nothing genuine lands there later."""
    skipped_from, skipped_to = target.skipped
    cursor = max(after, skipped_to) if skipped_from == after else after
    genuine: list[Checkpoint] = []
    scanned, flood = 0, True
    while scanned < limits.AUDIT_CHECKPOINT_SCAN_MAX:
        batch = limits.AUDIT_CHECKPOINT_DELIVERY_BATCH_MAX
        rows = await store.oldest_first(session, after_size=cursor, up_to_size=head, limit=batch)
        scanned += len(rows)
        for row in rows:
            why = keys.problem(row)
            if why is None:
                genuine.append(row)
            else:
                _report(target, row, why)
            if len(genuine) == batch:
                return genuine
            cursor = row.tree_size
        if genuine or len(rows) < batch:
            flood = False
            break
    if flood and not genuine:
        target.skipped = (after, min(cursor, head - 1))
    return genuine


def _report(target: Target, row: Checkpoint, why: str) -> None:
    if not target.reported.first(row.tree_size, row.signature):
        return
    metrics.AUDIT_CHECKPOINTS_REFUSED.labels(where=target.kind).inc()
    log.error(
        "audit.checkpoint_refused",
        target=target.name,
        tree_size=row.tree_size,
        key_id=row.key_id[:64],
        reason=why,
        detail="not delivered: its signatures do not hold under the configured public keys",
    )


# -- the file -------------------------------------------------------------------------------------


def last_size_in_file(path: Path, keys: Keyring) -> int:
    """The tree size of the file's last line that is a genuine checkpoint (0 for none): lines
    are appended in size order, so a checkpoint at or below it is in the file already. Lines
    that do not verify (a partial line, or one a version that did not check wrote) are passed
    over, reading back from the end a chunk at a time."""
    try:
        with path.open("rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            tail = b""
            while end > 0:
                start = max(0, end - limits.AUDIT_CHECKPOINT_FILE_TAIL_BYTES)
                handle.seek(start)
                tail = handle.read(end - start) + tail
                lines = tail.split(b"\n")
                head, lines = (lines[0], lines[1:]) if start > 0 else (b"", lines)
                for line in reversed(lines):
                    size = _genuine_size(line, keys)
                    if size is not None:
                        return size
                tail, end = head, start
    except FileNotFoundError:
        return 0
    return 0


def _genuine_size(line: bytes, keys: Keyring) -> int | None:
    with contextlib.suppress(ValueError, RecursionError):
        checkpoint = checkpoint_from(json.loads(line))
        if keys.problem(checkpoint) is None:
            return checkpoint.tree_size
    return None


def append_to_file(path: Path, checkpoints: Sequence[Checkpoint], keys: Keyring) -> None:
    """Append one JSON line per checkpoint not in the file yet, then fsync, holding the file's
    lock (a blocking call: run it in a thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        done = last_size_in_file(path, keys)
        lines = [c.json_line() + b"\n" for c in checkpoints if c.tree_size > done]
        if lines:
            os.write(fd, b"".join(lines))
            os.fsync(fd)
    finally:
        os.close(fd)


def file_sender(path: Path, keys: Keyring) -> Send:
    async def send(checkpoints: Sequence[Checkpoint]) -> None:
        await asyncio.to_thread(append_to_file, path, checkpoints, keys)

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
    """The broker did not take a checkpoint: the transaction rolls back, the target's position
    stays, and the worker loop logs it as a step that found its target unavailable."""
