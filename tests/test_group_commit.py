"""Group commit under real concurrency: many requests share transactions, each keeps its own
outcome, idempotency, events and audit record."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import psycopg
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from ledger.core.context import Actor, WriteContext
from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.settings import Settings
from tests.helpers import balances, create_account, transfer, violations
from transfers.group_commit import GroupCommitter, Submission
from transfers.schemas import TransferCreate
from transfers.service import to_command


def _batch_stats() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("ledger_group_commit_batch_size_count") or 0.0
    total = REGISTRY.get_sample_value("ledger_group_commit_batch_size_sum") or 0.0
    return count, total


async def test_bank_with_hot_account_under_group_commit(
    client: AsyncTestClient[Any], settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    accounts = [await create_account(client) for _ in range(5)]
    hot = accounts[0]
    for account in accounts:
        assert (await transfer(client, source["id"], account["id"], 5_000)).status_code == 201
    deadlocks_before = sync_db.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    count_before, sum_before = _batch_stats()
    rng = random.Random(7)
    requests = []
    for i in range(240):
        a, b = rng.sample(accounts, 2)
        if i % 2 == 0:  # every other transfer touches the hot account, in both directions
            a, b = (hot, b) if rng.random() < 0.5 else (a, hot)
            if a is b:
                continue
        amount = rng.choice([1, 5, 25, 100, 9_999_999])  # the last always fails: no funds
        requests.append(
            client.post(
                "/v1/transfers",
                json={"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": amount},
                headers={"X-Request-ID": f"bank-{i}"},
            )
        )
    responses = await asyncio.gather(*requests)
    statuses = {r.status_code for r in responses}
    assert statuses <= {201, 422}, [r.text for r in responses if r.status_code not in (201, 422)]
    refused = [r for r in responses if r.status_code == 422]
    assert refused
    codes = {r.json()["code"] for r in refused}
    assert codes == {"insufficient_funds"}, [r.text for r in refused][:3]
    accepted = [r.json()["id"] for r in responses if r.status_code == 201]
    assert len(accepted) == len(set(accepted)) > 100
    stored = sync_db.execute(
        "SELECT count(*) FROM transfers WHERE id = ANY(%s)", ([uuid.UUID(i) for i in accepted],)
    ).fetchone()
    assert stored == (len(accepted),)
    total = sum([(await balances(client, a["id"]))["posted"] for a in accounts])
    assert total == 5 * 5_000
    for account in accounts:
        assert (await balances(client, account["id"]))["available"] >= 0
    count_after, sum_after = _batch_stats()
    assert sum_after - sum_before > count_after - count_before, "no batch held two requests"
    audit_ids = {
        row[0]
        for row in sync_db.execute(
            "SELECT request_id FROM audit_records WHERE action = 'transfer.create'"
            " AND request_id LIKE 'bank-%%'"
        )
    }
    assert len(audit_ids) == len(accepted)
    deadlocks_after = sync_db.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert deadlocks_after == deadlocks_before
    assert await violations(settings) == []


async def test_a_refused_transfer_does_not_fail_its_batch(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    a = await create_account(client)
    b = await create_account(client)
    assert (await transfer(client, source["id"], a["id"], 100)).status_code == 201
    engine = create_engine(settings, pool_size=2)
    committer = GroupCommitter(create_sessionmaker(engine), inflight_max=1)
    ctx = WriteContext(actor=Actor.cli())
    bodies = [
        TransferCreate(
            debit_account_id=uuid.UUID(a["id"]), credit_account_id=uuid.UUID(b["id"]), amount=amount
        )
        for amount in (60, 50, 40)  # the middle one no longer fits after the first
    ]
    try:
        results = await asyncio.gather(
            *(committer.submit(to_command(body), ctx, None) for body in bodies)
        )
    finally:
        await engine.dispose()
    assert [r.status for r in results if r is not None] == [201, 422, 201]
    assert (await balances(client, a["id"]))["posted"] == 0
    assert (await balances(client, b["id"]))["posted"] == 100
    assert await violations(settings) == []


async def test_one_idempotency_key_many_concurrent_requests(client: AsyncTestClient[Any]) -> None:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    a = await create_account(client)
    body = {"debit_account_id": source["id"], "credit_account_id": a["id"], "amount": 10}
    responses = await asyncio.gather(
        *(
            client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "same-key"})
            for _ in range(25)
        )
    )
    ok = [r for r in responses if r.status_code == 201]
    assert {r.status_code for r in responses} <= {201, 409}
    assert len({r.content for r in ok}) == 1
    assert all(
        r.json()["code"] == "idempotency_key_in_use" for r in responses if r.status_code == 409
    )
    assert (await balances(client, a["id"]))["posted"] == 10
    replay = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "same-key"})
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == ok[0].content
    reused = await client.post(
        "/v1/transfers", json={**body, "amount": 11}, headers={"Idempotency-Key": "same-key"}
    )
    assert reused.status_code == 422
    assert reused.json()["code"] == "idempotency_key_reused"


async def test_refusal_is_stored_for_its_key(client: AsyncTestClient[Any]) -> None:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    a = await create_account(client)
    b = await create_account(client)
    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 10}
    first = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "k-refused"})
    assert first.status_code == 422
    assert first.headers["content-type"].startswith("application/problem+json")
    # money arrives, but the key still answers what it answered the first time
    assert (await transfer(client, source["id"], a["id"], 100)).status_code == 201
    again = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "k-refused"})
    assert again.status_code == 422
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert (await balances(client, b["id"]))["posted"] == 0


async def test_trailing_slash_is_the_same_request_for_its_key(client: AsyncTestClient[Any]) -> None:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    a = await create_account(client)
    body = {"debit_account_id": source["id"], "credit_account_id": a["id"], "amount": 3}
    first = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "slash"})
    again = await client.post("/v1/transfers/", json=body, headers={"Idempotency-Key": "slash"})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert (await balances(client, a["id"]))["posted"] == 3


async def test_requests_on_accounts_a_running_batch_holds_wait_for_the_next_batch() -> None:
    """The scheduling rule, step by step: a queued request whose account is locked by a running
    batch stays queued (in order) while unrelated requests start; when the batch ends, all the
    waiters leave together in one batch."""
    committer = GroupCommitter(cast(Any, None), batch_size_max=3)
    hot, a, b, c, d = (uuid.uuid4() for _ in range(5))
    ctx = WriteContext(actor=Actor.cli())

    def submission(debit: uuid.UUID, credit: uuid.UUID) -> Submission:
        command = to_command(
            TransferCreate(debit_account_id=debit, credit_account_id=credit, amount=1)
        )
        return Submission(command=command, ctx=ctx, claim=None)

    first = submission(a, hot)
    committer.queue = [first]
    running = committer._take()
    assert running == [first]

    waiting = [submission(b, hot), submission(hot, c)]
    unrelated = submission(c, d)  # no running batch holds c or d, and no earlier waiter does
    behind = submission(b, a)  # a is held; b is not, but an earlier waiter wants it
    committer.queue = [waiting[0], unrelated, waiting[1], behind]
    assert committer._take() == [unrelated]
    assert committer.queue == [*waiting, behind]
    assert committer._take() == []  # still held

    committer._release(running)
    committer._release([unrelated])
    assert committer.busy == {}
    assert committer._take() == [*waiting, behind]
    assert committer.queue == []
    committer._release([*waiting, behind])

    # A newcomer on an account an earlier request waits for queues behind it, even when no
    # running batch holds that account: per account, first come, first served.
    committer.queue = [first]
    assert committer._take() == [first]  # holds a and hot
    waiter = submission(hot, b)
    newcomer = submission(b, c)
    committer.queue = [waiter, newcomer]
    assert committer._take() == []
    assert committer.queue == [waiter, newcomer]
    committer._release([first])
    assert committer._take() == [waiter, newcomer]

    # The batch size bound still applies to requests that are free to go.
    committer._release([waiter, newcomer])
    many = [submission(uuid.uuid4(), uuid.uuid4()) for _ in range(5)]
    committer.queue = list(many)
    assert committer._take() == many[:3]
    assert committer.queue == many[3:]


async def test_a_request_that_must_wait_does_not_rescan_the_queue() -> None:
    """Under a hot account every arrival must wait for the running batch: it joins the queue
    and claims its accounts without a scan of the queue (the end of the batch scans once)."""
    committer = GroupCommitter(cast(Any, None))
    hot, a, b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ctx = WriteContext(actor=Actor.cli())
    running = Submission(
        command=to_command(TransferCreate(debit_account_id=a, credit_account_id=hot, amount=1)),
        ctx=ctx,
        claim=None,
    )
    committer.queue = [running]
    assert committer._take() == [running]

    command = to_command(TransferCreate(debit_account_id=b, credit_account_id=hot, amount=1))
    waiter = asyncio.create_task(committer.submit(command, ctx, None))
    await asyncio.sleep(0)
    try:
        assert not committer.scheduled
        assert [s.command for s in committer.queue] == [command]
        assert committer.claimed == {b, hot}
    finally:
        waiter.cancel()


async def _funded_pairs(client: Any, pairs: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    result = []
    for _ in range(pairs):
        a, b = await create_account(client), await create_account(client)
        assert (await transfer(client, source["id"], a["id"], 1_000)).status_code == 201
        result.append((uuid.UUID(a["id"]), uuid.UUID(b["id"])))
    return result


async def _running(committer: GroupCommitter) -> None:
    """Returns once a batch has started (it then waits on the row lock the test holds)."""
    for _ in range(3_000):
        if committer.inflight:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no batch started within 30 s")


CLI = WriteContext(actor=Actor.cli())


def _command(pair: tuple[uuid.UUID, uuid.UUID]) -> Any:
    return to_command(TransferCreate(debit_account_id=pair[0], credit_account_id=pair[1], amount=1))


@contextlib.asynccontextmanager
async def _first_batch_held(
    settings: Settings, db_url: str, pair: tuple[uuid.UUID, uuid.UUID], stagger_seconds: float
) -> AsyncIterator[tuple[GroupCommitter, asyncio.Task[Any], psycopg.AsyncConnection[Any]]]:
    """A committer whose first batch (one transfer on `pair`) has started and waits on a row lock
    another connection holds: (the committer, the first request's task, that connection, whose
    rollback lets the batch go on)."""
    engine = create_engine(settings, pool_size=4)
    committer = GroupCommitter(
        create_sessionmaker(engine), inflight_max=4, stagger_seconds=stagger_seconds
    )
    blocker = await psycopg.AsyncConnection.connect(db_url)
    try:
        await blocker.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (pair[0],))
        first = asyncio.create_task(committer.submit(_command(pair), CLI, None))
        await _running(committer)
        yield committer, first, blocker
    finally:
        await blocker.close()
        await engine.dispose()


async def test_arrivals_while_a_young_batch_runs_leave_together_in_the_next_one(
    client: Any, settings: Settings, db_url: str
) -> None:
    """The stagger: while the running batch is younger than `stagger_seconds`, unrelated
    requests that arrive wait for it (a free slot notwithstanding) and then leave as one batch,
    instead of one small batch each beside it. The running batch is held on a row lock taken
    from another connection, so it really is still running when they arrive."""
    pairs = await _funded_pairs(client, 4)
    count_before, sum_before = _batch_stats()
    async with _first_batch_held(settings, db_url, pairs[0], 60) as (committer, first, blocker):
        later = [
            asyncio.create_task(committer.submit(_command(pair), CLI, None)) for pair in pairs[1:]
        ]
        await asyncio.sleep(0.5)  # slots are free, the accounts are free: only the stagger holds
        assert committer.inflight == 1
        assert len(committer.queue) == 3
        assert not any(task.done() for task in [first, *later])
        await blocker.rollback()  # the first batch goes on and ends; the three leave together
        results = await asyncio.wait_for(asyncio.gather(first, *later), timeout=30)
        count_after, sum_after = _batch_stats()
    assert [r.status for r in results if r is not None] == [201, 201, 201, 201]
    # Two batches: the first one alone, then the three together.
    assert (count_after - count_before, sum_after - sum_before) == (2, 4)
    assert await violations(settings) == []


async def test_a_batch_stuck_past_the_stagger_does_not_hold_up_the_others(
    client: Any, settings: Settings, db_url: str
) -> None:
    """Liveness: once the running batch is older than the stagger (here it waits on a row lock
    held elsewhere), the requests queued behind it start in a batch of their own and are
    answered while it still waits."""
    pairs = await _funded_pairs(client, 3)
    async with _first_batch_held(settings, db_url, pairs[0], 0.2) as (committer, stuck, blocker):
        others = [committer.submit(_command(pair), CLI, None) for pair in pairs[1:]]
        results = await asyncio.wait_for(asyncio.gather(*others), timeout=30)
        assert not stuck.done()  # still waiting on the lock, and the others were answered
        await blocker.rollback()
        stuck_result = await asyncio.wait_for(stuck, timeout=30)
    assert [r.status for r in results if r is not None] == [201, 201]
    assert stuck_result is not None and stuck_result.status == 201
    assert await violations(settings) == []
