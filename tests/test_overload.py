"""Contract 8.2 under load: a request that only waits for other requests' locks is not refused
while it waits less than 30 s, and work shed under overload (group commit's queue full, its
deadline passed, its client gone) is answered 503 with Retry-After before it starts, and never
runs after its answer.

Every wait here is real: a side connection holds account rows with `SELECT ... FOR UPDATE`, and
the requests really queue behind it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, cast

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY

from ledger.cli.main import ensure_admin_key
from ledger.core import limits
from ledger.core.context import Actor, WriteContext
from ledger.core.errors import ServiceUnavailable
from ledger.core.settings import Settings
from tests.helpers import app_client, balances, create_account, live_server, transfer, violations
from transfers.group_commit import GroupCommitter, Submission
from transfers.schemas import TransferCreate
from transfers.service import to_command

DEADLINE_SECONDS = 30.0  # for waiting on real requests and backends; never an assertion
HOLD_SECONDS = 7.0  # longer than the 5 s lock timeout the service used to refuse waits after
FLOOD_QUEUE_MAX = 4
FLOOD_REQUESTS = 30


def shed(reason: str) -> float:
    value = REGISTRY.get_sample_value("ledger_requests_shed_total", {"reason": reason})
    return value or 0.0


def queued() -> float:
    return REGISTRY.get_sample_value("ledger_group_commit_queued") or 0.0


def lock_waiters(db: psycopg.Connection[Any]) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return int(row[0]) if row else 0


async def until(condition: Any, what: str) -> None:
    """Poll `condition()` until true, or fail after a generous deadline."""
    give_up = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


def problem(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("code", "")


async def funded_accounts(client: httpx.AsyncClient, count: int, each: int) -> list[str]:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    ids = [(await create_account(client))["id"] for _ in range(count)]
    funding = [
        {"debit_account_id": source["id"], "credit_account_id": i, "amount": each} for i in ids
    ]
    response = await client.post("/v1/transfers/batch", json={"atomic": True, "transfers": funding})
    assert response.status_code == 200, response.text
    return ids


def ring(ids: list[str], count: int) -> list[dict[str, Any]]:
    """`count` transfers of 1 around the accounts: every account is debited and credited."""
    return [
        {
            "debit_account_id": ids[i % len(ids)],
            "credit_account_id": ids[(i + 1) % len(ids)],
            "amount": 1,
        }
        for i in range(count)
    ]


@pytest.mark.parametrize("group_commit", [True, False])
async def test_big_batches_waiting_longer_than_the_old_lock_timeout_are_not_refused(
    client: httpx.AsyncClient,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    group_commit: bool,
) -> None:
    """Atomic and non-atomic 1,000-transfer batches over the same accounts, and a same-key
    retry of one of them, all wait behind a transaction holding every account for 7 s. With
    group commit the later ones wait for their turn in the process; without, all of them wait
    on the rows in PostgreSQL."""
    ids = await funded_accounts(client, 10, 1_000_000)
    batches = [
        ({"atomic": True, "transfers": ring(ids, 1_000)}, {}),
        ({"atomic": False, "transfers": ring(ids[::-1], 1_000)}, {}),
        ({"atomic": False, "transfers": ring(ids, 1_000)}, {"Idempotency-Key": "slow-batch"}),
        ({"atomic": False, "transfers": ring(ids, 1_000)}, {"Idempotency-Key": "slow-batch"}),
    ]
    async with app_client(settings.with_(group_commit=group_commit)) as batcher:
        with psycopg.connect(settings.database_url or "") as holder:
            holder.execute("SELECT 1 FROM accounts WHERE id = ANY(%s::uuid[]) FOR UPDATE", (ids,))
            tasks = [
                asyncio.create_task(batcher.post("/v1/transfers/batch", json=body, headers=headers))
                for body, headers in batches
            ]
            if group_commit:
                # The first may still be building its 1,000 transfers when the others queue:
                # wait for it to reach the rows too, then only it may be waiting there.
                await until(
                    lambda: queued() == len(batches) - 1 and lock_waiters(sync_db) >= 1,
                    "the first to wait on the rows and the others to queue",
                )
                assert lock_waiters(sync_db) == 1  # only the first waits in PostgreSQL
            else:
                # three wait on the account rows, the same-key retry on its key row
                await until(lambda: lock_waiters(sync_db) == len(batches), "every batch to wait")
            await asyncio.sleep(HOLD_SECONDS)
            holder.rollback()
        responses = await asyncio.gather(*tasks)
    for response in responses:
        assert response.status_code == 200, response.text[:300]
        statuses = {item["status"] for item in response.json()["results"]}
        assert statuses == {201}, statuses
    keyed = responses[2:]
    assert keyed[0].content == keyed[1].content  # one ran, the other replayed it
    assert {r.headers.get("idempotent-replayed") for r in keyed} == {"true", None}
    transfers = sync_db.execute("SELECT count(*) FROM transfers").fetchone()
    assert transfers == (10 + 3_000,)
    assert await violations(settings) == []


async def test_a_flood_beyond_the_queue_bound_is_shed_before_it_starts(
    settings: Settings, sync_db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "GROUP_COMMIT_QUEUE_MAX", FLOOD_QUEUE_MAX, raising=False)
    full_before = shed("queue_full")
    await ensure_admin_key(settings)
    async with app_client(settings) as client:
        [hot, other] = await funded_accounts(client, 2, 1_000)
        with psycopg.connect(settings.database_url or "") as holder:
            holder.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (hot,))
            # the first starts its batch and waits on the row; the flood queues behind it
            first = asyncio.create_task(transfer(client, hot, other, 1))
            await until(lambda: lock_waiters(sync_db) >= 1, "the first batch to wait")
            flood_ids = [str(uuid.uuid4()) for _ in range(FLOOD_REQUESTS)]
            flood = [
                asyncio.create_task(
                    client.post(
                        "/v1/transfers",
                        json={
                            "id": transfer_id,
                            "debit_account_id": hot,
                            "credit_account_id": other,
                            "amount": 1,
                        },
                        headers={"X-Request-ID": f"flood-{n}"},
                    )
                )
                for n, transfer_id in enumerate(flood_ids)
            ]
            await until(
                lambda: sum(t.done() for t in flood) >= FLOOD_REQUESTS - FLOOD_QUEUE_MAX,
                "the overflow to be answered",
            )
            # answered while the account is still held: none of them started
            assert not first.done()
            holder.rollback()
        responses = await asyncio.gather(first, *flood)
        assert responses[0].status_code == 201, responses[0].text
        refused = [
            (i, r) for i, r in zip(flood_ids, responses[1:], strict=True) if r.status_code != 201
        ]
        accepted = [
            i for i, r in zip(flood_ids, responses[1:], strict=True) if r.status_code == 201
        ]
        assert len(refused) == FLOOD_REQUESTS - FLOOD_QUEUE_MAX
        assert len(accepted) == FLOOD_QUEUE_MAX
        for _, response in refused:
            assert problem(response) == (503, "service_unavailable"), response.text
            assert int(response.headers["retry-after"]) >= 1
        assert shed("queue_full") - full_before == len(refused)
        assert (await balances(client, other))["posted"] == 1_000 + 1 + FLOOD_QUEUE_MAX
    refused_ids = [uuid.UUID(i) for i, _ in refused]
    refused_requests = [f"flood-{flood_ids.index(i)}" for i, _ in refused]
    left = sync_db.execute(
        "SELECT (SELECT count(*) FROM transfers WHERE id = ANY(%s)),"
        " (SELECT count(*) FROM audit_records WHERE request_id = ANY(%s)"
        "     OR object_id = ANY(%s)),"
        " (SELECT count(*) FROM outbox_events WHERE subject = ANY(%s))",
        (
            refused_ids,
            refused_requests,
            [str(i) for i in refused_ids],
            [str(i) for i in refused_ids],
        ),
    ).fetchone()
    assert left == (0, 0, 0)
    stored = sync_db.execute(
        "SELECT count(*) FROM transfers WHERE id = ANY(%s)", ([uuid.UUID(i) for i in accepted],)
    ).fetchone()
    assert stored == (len(accepted),)
    assert await violations(settings) == []


async def batch_of_one(
    client: httpx.AsyncClient, debit: str, credit: str, amount: int, **extra: Any
) -> httpx.Response:
    item = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount, **extra}
    return await client.post("/v1/transfers/batch", json={"atomic": True, "transfers": [item]})


@pytest.mark.parametrize("kind", ["single", "batch"])
async def test_a_request_queued_past_its_deadline_is_answered_503_and_never_runs(
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """Single transfers and batch requests alike: queued behind a transaction that waits on a
    held account, the later one is shed when its deadline passes, and never runs after."""
    send = transfer if kind == "single" else batch_of_one
    monkeypatch.setattr(limits, "GROUP_COMMIT_QUEUE_WAIT_MAX_SECONDS", 1.0, raising=False)
    late_before = shed("deadline")
    late_id = str(uuid.uuid4())
    await ensure_admin_key(settings)
    async with app_client(settings) as client:
        [hot, other] = await funded_accounts(client, 2, 1_000)
        with psycopg.connect(settings.database_url or "") as holder:
            holder.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (hot,))
            first = asyncio.create_task(send(client, hot, other, 1))
            await until(lambda: lock_waiters(sync_db) >= 1, "the first batch to wait")
            late = asyncio.create_task(send(client, hot, other, 7, id=late_id))
            await until(late.done, "the queued request to be answered")
            # its deadline passed while it was queued: answered before the account was free
            assert not first.done()
            assert problem(late.result()) == (503, "service_unavailable"), late.result().text
            assert "retry-after" in late.result().headers
            holder.rollback()
        assert (await first).status_code in (200, 201)
        # a later request on the same account runs after anything queued before it
        assert (await send(client, hot, other, 2)).status_code in (200, 201)
        assert (await balances(client, other))["posted"] == 1_000 + 1 + 2
    assert shed("deadline") - late_before == 1
    row = sync_db.execute(
        "SELECT count(*) FROM transfers WHERE id = %s OR amount = 7", (late_id,)
    ).fetchone()
    assert row == (0,)


async def test_a_client_that_gives_up_while_queued_leaves_nothing_behind(
    settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    """Over a real socket: the client's timeout closes its connection while its transfer waits
    in the queue; the transfer is dropped from the queue and never runs."""
    gone_before = shed("cancelled")
    gone_id = str(uuid.uuid4())
    async with live_server(settings) as url:
        headers = {"Authorization": f"Bearer {settings.admin_key}"}
        async with (
            httpx.AsyncClient(base_url=url, headers=headers, timeout=DEADLINE_SECONDS) as patient,
            httpx.AsyncClient(base_url=url, headers=headers, timeout=1.0) as impatient,
        ):
            [hot, other] = await funded_accounts(patient, 2, 1_000)
            with psycopg.connect(settings.database_url or "") as holder:
                holder.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (hot,))
                first = asyncio.create_task(transfer(patient, hot, other, 1))
                await until(lambda: lock_waiters(sync_db) >= 1, "the first batch to wait")
                with pytest.raises(httpx.TimeoutException):
                    await transfer(impatient, hot, other, 7, id=gone_id)
                await until(lambda: shed("cancelled") > gone_before, "the server to see it go")
                holder.rollback()
            assert (await first).status_code == 201
            assert (await transfer(patient, hot, other, 2)).status_code == 201
            assert (await balances(patient, other))["posted"] == 1_000 + 1 + 2
    row = sync_db.execute(
        "SELECT count(*) FROM transfers WHERE id = %s OR amount = 7", (gone_id,)
    ).fetchone()
    assert row == (0,)
    assert await violations(settings) == []


def _submission(debit: uuid.UUID, credit: uuid.UUID, **extra: Any) -> Submission:
    command = to_command(TransferCreate(debit_account_id=debit, credit_account_id=credit, amount=1))
    return Submission(command=command, ctx=WriteContext(actor=Actor.cli()), claim=None, **extra)


async def test_a_cancelled_request_leaves_the_queue_and_frees_its_accounts() -> None:
    """The scheduling rule when a queued request's task is cancelled: it leaves the queue, and
    the accounts it claimed no longer hold back a newcomer once the running batch is done."""
    committer = GroupCommitter(cast(Any, None))
    hot, a, b, c = (uuid.uuid4() for _ in range(4))
    running = _submission(a, hot)
    committer.queue = [running]
    assert committer._take() == [running]
    command = to_command(TransferCreate(debit_account_id=b, credit_account_id=hot, amount=1))
    cancelled_before = shed("cancelled")
    waiter = asyncio.create_task(committer.submit(command, WriteContext(actor=Actor.cli()), None))
    await asyncio.sleep(0)
    assert committer.claimed == {b, hot}
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert committer.queue == []
    assert committer.claimed == set()  # b is free: a newcomer on it need not wait
    assert not committer._must_wait(_submission(b, c))
    assert shed("cancelled") - cancelled_before == 1
    committer._release([running])


async def test_a_scan_never_starts_a_request_past_its_deadline() -> None:
    committer = GroupCommitter(cast(Any, None))
    late = _submission(uuid.uuid4(), uuid.uuid4(), deadline=time.monotonic() - 1)
    on_time = _submission(uuid.uuid4(), uuid.uuid4())
    committer.queue = [late, on_time]
    assert committer._take() == [on_time]
    assert committer.queue == []
    assert not late.started and isinstance(late.future.exception(), ServiceUnavailable)
