"""Races on one pending transfer with real concurrency: confirm vs cancel vs expiry."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.testing import AsyncTestClient

from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.settings import Settings
from ledger.worker.jobs import expire_step
from tests.helpers import balances, funded_pair, transfer, violations

ROUNDS = 25


async def test_confirm_races_cancel(client: AsyncTestClient[Any], settings: Settings) -> None:
    _, a, b = await funded_pair(client, 1_000_000)
    held = []
    for _ in range(ROUNDS):
        response = await transfer(client, a["id"], b["id"], 100, pending=True)
        assert response.status_code == 201
        held.append(response.json()["id"])
    results = await asyncio.gather(
        *(
            call
            for transfer_id in held
            for call in (
                client.post(f"/v1/transfers/{transfer_id}/post"),
                client.post(f"/v1/transfers/{transfer_id}/void"),
            )
        )
    )
    posted = 0
    for index in range(ROUNDS):
        post, void = results[2 * index], results[2 * index + 1]
        statuses = sorted([post.status_code, void.status_code])
        assert statuses == [200, 409], (post.text, void.text)
        loser = post if post.status_code == 409 else void
        assert loser.json()["code"] == "transfer_not_pending"
        final = (await client.get(f"/v1/transfers/{held[index]}")).json()["state"]
        assert final == ("posted" if post.status_code == 200 else "voided")
        posted += post.status_code == 200
    a_bal = await balances(client, a["id"])
    assert a_bal["pending_debits"] == 0
    assert a_bal["posted"] == 1_000_000 - 100 * posted
    assert (await balances(client, b["id"]))["posted"] == 100 * posted
    assert await violations(settings) == []


async def test_cancel_races_expiry(client: AsyncTestClient[Any], settings: Settings) -> None:
    _, a, b = await funded_pair(client, 1_000_000)
    held = []
    for _ in range(ROUNDS):
        response = await transfer(client, a["id"], b["id"], 100, pending=True, timeout_seconds=1)
        held.append(response.json()["id"])
    await asyncio.sleep(1.1)
    engine = create_engine(settings, pool_size=4)
    try:
        voids = asyncio.gather(*(client.post(f"/v1/transfers/{t}/void") for t in held))
        expiry = expire_step(create_sessionmaker(engine))
        void_results, expired = await asyncio.gather(voids, expiry)
    finally:
        await engine.dispose()
    voided = 0
    for transfer_id, response in zip(held, void_results, strict=True):
        state = (await client.get(f"/v1/transfers/{transfer_id}")).json()["state"]
        if response.status_code == 200:
            assert state == "voided"
            voided += 1
        else:
            assert response.status_code == 409 and state == "expired", response.text
    assert voided + expired == ROUNDS
    assert (await balances(client, a["id"]))["available"] == 1_000_000
    assert await violations(settings) == []


async def test_many_confirms_and_cancels_settle_once(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    """Five confirms and five cancels at once on one hold: one effect, every loser a 409."""
    _, a, b = await funded_pair(client, 10_000)
    held = (await transfer(client, a["id"], b["id"], 700, pending=True)).json()["id"]
    calls = [client.post(f"/v1/transfers/{held}/post") for _ in range(5)]
    calls += [client.post(f"/v1/transfers/{held}/void") for _ in range(5)]
    results = await asyncio.gather(*calls)
    state = (await client.get(f"/v1/transfers/{held}")).json()["state"]
    winners = [r for r in results if r.status_code == 200]
    assert all(r.json()["state"] == state for r in winners)
    assert all(r.status_code in (200, 409) for r in results)
    kind = "post" if state == "posted" else "void"
    assert all(r.status_code == 200 for r in (results[:5] if kind == "post" else results[5:]))
    assert all(r.status_code == 409 for r in (results[5:] if kind == "post" else results[:5]))
    moved = 700 if state == "posted" else 0
    assert (await balances(client, b["id"]))["posted"] == moved
    assert (await balances(client, a["id"]))["available"] == 10_000 - moved
    assert await violations(settings) == []
