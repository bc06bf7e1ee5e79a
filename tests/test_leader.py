"""The worker's shared failover machinery (ledger/core/leader.py, ledger/worker/jobs.py): one
leader per lock class on direct connections, a leader whose session ends gives way, and a job
loop that backs off while its database is away and comes back by itself."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.core import limits
from ledger.core.errors import ServiceUnavailable
from ledger.core.leader import Leadership
from ledger.core.locks import LockClass
from ledger.core.settings import Settings
from ledger.worker.jobs import Job, _away_seconds, run_job

LOCK = LockClass.OUTBOX_RELAY


async def backend_pid(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())


async def test_one_leader_at_a_time_and_the_next_takes_over_when_its_session_ends(
    settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    first, second = Leadership(settings, "first", LOCK), Leadership(settings, "second", LOCK)
    try:
        assert await first.lead()
        assert not await second.lead()
        pid = await first.run(backend_pid)
        # The leader's backend ends (its server restarted, its host failed over): its next work
        # fails as unavailable and gives the lock up; the other one leads at its next try.
        sync_db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        try:
            await first.run(backend_pid)
        except ServiceUnavailable:
            pass
        else:
            raise AssertionError("work on a terminated session must fail")
        assert not first.leading
        assert await second.lead()
        assert not await first.lead()  # connects again, finds the lock taken, stands by
    finally:
        await first.close()
        await second.close()
    # closed: the lock is free again
    third = Leadership(settings, "third", LOCK)
    try:
        assert await third.lead()
    finally:
        await third.close()


async def test_leadership_on_a_database_that_is_away_is_unavailable(settings: Settings) -> None:
    away = settings.with_(database_url="postgresql://postgres@127.0.0.1:1/nowhere")
    leader = Leadership(away, "away", LOCK)
    try:
        for _ in range(2):
            try:
                await leader.lead()
            except ServiceUnavailable:
                pass
            else:
                raise AssertionError("no database: no leadership")
    finally:
        await leader.close()


def test_the_wait_after_failures_grows_from_the_interval_to_its_cap() -> None:
    job = Job("j", lambda: asyncio.sleep(0, 0), 0.5)
    cap = limits.JOB_UNAVAILABLE_BACKOFF_MAX_SECONDS
    for failures, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (10, cap), (40, cap)):
        waits = [_away_seconds(job, failures) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits), (failures, waits)
    fast = Job("fast", lambda: asyncio.sleep(0, 0), 0.0)
    assert all(0.05 <= _away_seconds(fast, 1) <= 0.1 for _ in range(20))


async def test_a_job_whose_database_is_away_keeps_trying_and_comes_back() -> None:
    calls: list[str] = []
    stop = asyncio.Event()

    async def step() -> int:
        calls.append("step")
        if len(calls) <= 3:
            raise ServiceUnavailable("the database is away")
        stop.set()
        return 0

    job = Job("flaky", step, 0.01)
    await asyncio.wait_for(run_job(job, stop), timeout=30)
    assert len(calls) == 4
