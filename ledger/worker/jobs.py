"""`ledger worker`: background jobs, each a bounded step run in a loop with its own interval.

A step does a bounded amount of work in its own transactions and returns how much it did; the
loop runs it again at once while there is work, and otherwise sleeps (or is woken early)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from ledger.core import limits
from ledger.core.backoff import jittered_backoff_ms
from ledger.core.db import connection_defaults, run_in_transaction
from ledger.core.errors import LedgerError
from ledger.core.settings import Settings
from ledger.idempotency import store as idempotency
from ledger.worker.expiry import ExpiryRetries, expire_retry_step, expire_step

log = structlog.get_logger("ledger.worker")


@dataclass
class Job:
    name: str
    step: Callable[[], Awaitable[int]]
    interval_seconds: float
    # Releases what the job holds between steps (a connection, an advisory lock) at shutdown.
    close: Callable[[], Awaitable[None]] | None = None
    # Set by the job's own listener (the relay's LISTEN) to run the next step before the interval.
    wake: asyncio.Event | None = None
    # Called once when the worker is told to stop, while a step may be running: a job whose step
    # can run long (the sealer through a backlog) ends it at its next transaction's end.
    stop_soon: Callable[[], None] | None = None


async def idempotency_retention_step(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Delete one bounded batch of Idempotency-Key rows past their life (a key that old is a new
    key to a request anyway); the loop runs again at once while a batch came back full."""

    async def delete(session: AsyncSession) -> int:
        return await idempotency.delete_expired(
            session, dt.datetime.now(dt.UTC), limits.IDEMPOTENCY_DELETE_BATCH_MAX
        )

    deleted = await run_in_transaction(sessionmaker, delete)
    if deleted:
        log.info("idempotency.keys_deleted", count=deleted)
    return deleted if deleted >= limits.IDEMPOTENCY_DELETE_BATCH_MAX else 0


async def run_job(job: Job, stop: asyncio.Event) -> None:
    """Run `job` until `stop`. A step that finds what it needs away (`ServiceUnavailable`: no
    primary to connect to, a broker down) is retried with a capped, jittered backoff, so every
    job follows a failover by itself: its next step connects again, through libpq's host list,
    to whichever server is the primary by then. One line when a job loses its database or broker,
    one when it is back."""
    away = 0  # consecutive steps that found the database (or the broker) away
    while not stop.is_set():
        if job.wake is not None:
            job.wake.clear()  # cleared before the step: a wake-up during the step is kept
        try:
            done = await job.step()
        except LedgerError as exc:
            away += 1
            if away == 1:
                log.warning("worker.step_unavailable", job=job.name, error=exc.code)
            await _idle(job, stop, _away_seconds(job, away))
            continue
        except Exception:
            log.exception("worker.step_failed", job=job.name)
            done = 0
        if away:
            log.info("worker.step_available", job=job.name, after_failed_steps=away)
            away = 0
        if done:
            continue
        await _idle(job, stop, job.interval_seconds)


def _away_seconds(job: Job, failures: int) -> float:
    """From the job's own interval (at least 0.1 s), doubling to JOB_UNAVAILABLE_BACKOFF_MAX."""
    initial_ms = max(100, round(job.interval_seconds * 1000))
    cap_ms = max(initial_ms, round(limits.JOB_UNAVAILABLE_BACKOFF_MAX_SECONDS * 1000))
    return jittered_backoff_ms(failures, initial_ms=initial_ms, max_ms=cap_ms) / 1000


async def _idle(job: Job, stop: asyncio.Event, seconds: float) -> None:
    """Wait for `seconds`, the stop signal or the job's wake-up, whichever comes first."""
    waits = [asyncio.ensure_future(stop.wait())]
    if job.wake is not None:
        waits.append(asyncio.ensure_future(job.wake.wait()))
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()


def default_jobs(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> list[Job]:
    jobs = [
        *expiry_jobs(sessionmaker, ExpiryRetries()),
        Job(
            "idempotency-retention",
            lambda: idempotency_retention_step(sessionmaker),
            limits.IDEMPOTENCY_RETENTION_INTERVAL_SECONDS,
        ),
    ]
    if settings.audit_sealer:
        jobs.append(audit_sealer_job(sessionmaker, settings))
    jobs.extend(checkpoint_jobs(settings, sessionmaker))
    jobs.extend(event_jobs(settings, sessionmaker))
    jobs.extend(webhook_jobs(settings, sessionmaker))
    return jobs


def expiry_jobs(
    sessionmaker: async_sessionmaker[AsyncSession], retries: ExpiryRetries
) -> list[Job]:
    """Due holds, and apart from them the holds whose expiry failed, retried after a backoff
    (ledger/worker/expiry.py): a hold that keeps failing holds up neither job's other holds."""
    return [
        Job("expiry", lambda: expire_step(sessionmaker, retries), limits.EXPIRY_INTERVAL_SECONDS),
        Job(
            "expiry-retry",
            lambda: expire_retry_step(sessionmaker, retries),
            limits.EXPIRY_RETRY_INTERVAL_SECONDS,
        ),
    ]


def event_jobs(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> list[Job]:
    """The outbox relay (one active per database, others stand by) and feed retention."""
    from outbox.relay import Relay, trim_published_step

    relay = Relay(settings)

    async def relay_step() -> int:
        """A batch that came back short took every event visible: no known backlog, so the loop
        waits for the next wake-up (a commit's notification) or the poll interval, rather than
        spending a round trip on an empty read after every batch."""
        published = await relay.step()
        return published if published >= relay.batch_size else 0

    return [
        Job(
            "outbox-relay",
            relay_step,
            limits.OUTBOX_POLL_INTERVAL_SECONDS,
            close=relay.close,
            wake=relay.wake,
        ),
        Job(
            "outbox-retention",
            lambda: trim_published_step(settings, sessionmaker),
            limits.OUTBOX_RETENTION_INTERVAL_SECONDS,
        ),
    ]


def webhook_jobs(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> list[Job]:
    """Webhook delivery (one active dispatcher per database, others stand by, as the relay) and
    the cleanup of its delivery log. The dispatcher runs in a child process of the worker
    (ledger/worker/webhook_process.py), so deliveries never take the relay's CPU.
    LEDGER_WEBHOOK_DELIVERY=off leaves delivery to other workers."""
    from ledger.webhooks.delivery.retention import retention_step
    from ledger.worker.webhook_process import DeliveryProcess

    jobs = [
        Job(
            "webhook-retention",
            lambda: retention_step(settings, sessionmaker),
            limits.WEBHOOK_RETENTION_INTERVAL_SECONDS,
        )
    ]
    if settings.webhook_delivery:
        child = DeliveryProcess(settings)
        jobs.append(
            Job(
                "webhook-delivery",
                child.step,
                limits.WEBHOOK_CHILD_POLL_SECONDS,
                close=child.close,
                wake=child.wake,
            )
        )
    return jobs


async def run_webhook_delivery(
    settings: Settings, stop: asyncio.Event, *, with_parent: bool
) -> None:
    """`ledger webhook-delivery`: the webhook dispatcher alone, until `stop`. With `with_parent`
    (started by `ledger worker`): until the worker's pipe on stdin closes too, and the metrics
    reported on stdout (ledger/worker/webhook_process.py)."""
    from ledger.webhooks.delivery.dispatcher import WebhookDispatcher
    from ledger.worker.webhook_process import exit_with_parent, instance_name, report_metrics

    dispatcher = WebhookDispatcher(settings, instance=instance_name(with_parent))
    job = Job(
        "webhook-dispatcher",
        dispatcher.step,
        limits.WEBHOOK_POLL_INTERVAL_SECONDS,
        close=dispatcher.close,
    )
    helpers = [exit_with_parent(stop), report_metrics(stop)] if with_parent else []
    tasks = [asyncio.create_task(helper) for helper in helpers]
    log.info("webhook.delivery_started", pid=os.getpid(), with_parent=with_parent)
    try:
        await run_job(job, stop)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await dispatcher.close()
        log.info("webhook.delivery_stopped", pid=os.getpid())


def audit_sealer_job(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings | None = None
) -> Job:
    """Seals new audit records into the hash chain and the Merkle tree, and signs checkpoints
    with LEDGER_AUDIT_SIGNING_KEY (`ledger worker` refuses to start without it); one active
    sealer per database."""
    from ledger.audit.keys import keyring
    from ledger.audit.sealer import AuditSealer, engine_of
    from ledger.audit.signing import load_signer

    key = None if settings is None else settings.audit_signing_key
    signer = None if key is None else load_signer(key)
    database = engine_of(sessionmaker) if settings is None else _sealer_database(settings)
    keys = None if settings is None or signer is None else keyring(settings, signer)
    sealer = AuditSealer(database, signer=signer, keys=keys)
    return Job(
        "audit-sealer",
        sealer.paced_step,
        limits.AUDIT_SEAL_INTERVAL_SECONDS,
        close=sealer.close,
        stop_soon=sealer.stop_soon,
    )


def _sealer_database(settings: Settings) -> AsyncEngine:
    """What the sealer connects to: its leader lock is session state, so the direct URL (with
    the service's TCP keepalives); the sealer builds its own pool-less engine from this URL."""
    url = settings.direct_database.with_defaults(connection_defaults("ledger-sealer"))
    return create_async_engine(url.sqlalchemy_url(), poolclass=NullPool)


def checkpoint_jobs(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> list[Job]:
    """Delivery of signed checkpoints to the file and to Kafka, when each is configured: only
    those whose signatures hold under the configured public keys."""
    from pathlib import Path

    from ledger.audit.keys import keyring
    from ledger.worker.checkpoints import (
        KafkaCheckpoints,
        deliver_step,
        file_sender,
        file_target,
        kafka_target,
    )

    interval = limits.AUDIT_CHECKPOINT_DELIVERY_INTERVAL_SECONDS
    jobs: list[Job] = []
    if not settings.audit_checkpoint_file and settings.kafka_bootstrap_servers is None:
        return jobs
    keys = keyring(settings)
    if settings.audit_checkpoint_file:
        path = Path(settings.audit_checkpoint_file)
        to_file, send_file = file_target(path, keys), file_sender(path, keys)
        jobs.append(
            Job(
                "checkpoint-file",
                lambda: deliver_step(sessionmaker, to_file, send_file, keys),
                interval,
            )
        )
    if settings.kafka_bootstrap_servers is not None:
        kafka = KafkaCheckpoints(settings)
        to_kafka = kafka_target(settings.kafka_checkpoint_topic)
        jobs.append(
            Job(
                "checkpoint-kafka",
                lambda: deliver_step(sessionmaker, to_kafka, kafka.send, keys),
                interval,
                close=kafka.close,
            )
        )
    return jobs


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    from ledger.core.db import create_engine, create_sessionmaker

    engine = create_engine(settings, pool_size=4)
    sessionmaker = create_sessionmaker(engine)
    jobs = default_jobs(settings, sessionmaker)
    if settings.kafka_bootstrap_servers is None:
        log.info("worker.kafka_disabled", detail="events stay in the outbox and the HTTP feed")
    log.info("worker.started", jobs=[j.name for j in jobs])
    stopping = asyncio.ensure_future(_tell_jobs_to_stop(jobs, stop))
    try:
        await asyncio.gather(*(run_job(job, stop) for job in jobs))
    finally:
        stopping.cancel()
        for job in jobs:
            if job.close is not None:
                with contextlib.suppress(Exception):
                    await job.close()
        await engine.dispose()
        log.info("worker.stopped")


async def _tell_jobs_to_stop(jobs: list[Job], stop: asyncio.Event) -> None:
    """Once `stop` is set: say so, and ask each job that can run a long step to end it soon
    (the loop checks `stop` only between steps)."""
    await stop.wait()
    log.info("worker.stopping")
    for job in jobs:
        if job.stop_soon is not None:
            job.stop_soon()
