"""A category balance read while transfers run concurrently is one snapshot: money moving
between two accounts of the category never shows up half moved, and the trial balance read
meanwhile always has equal totals."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from tests.helpers import create_account, live_server, transfer

TRANSFERS = 120
READS = 60
WRITERS = 6


async def test_category_balance_under_concurrent_transfers_is_one_instant(settings: Any) -> None:
    from ledger.cli.main import ensure_admin_key

    await ensure_admin_key(settings)
    async with (
        live_server(settings) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {settings.admin_key}"}, timeout=60
        ) as http,
    ):
        source = await create_account(http, normal_balance="debit", min_balance=None)
        members = [await create_account(http, min_balance=None) for _ in range(3)]
        for account in members:
            assert (await transfer(http, source["id"], account["id"], 1_000)).status_code == 201
        made = await http.post(
            "/v1/categories",
            json={"code": "snap:root", "currency": "USD", "normal_balance": "credit"},
        )
        category = made.json()
        for account in members:
            response = await http.put(f"/v1/categories/{category['id']}/accounts/{account['id']}")
            assert response.status_code == 201, response.text
        rng = random.Random(7)
        pairs = [rng.sample(members, 2) for _ in range(TRANSFERS)]
        moving = asyncio.Event()

        async def writer(index: int) -> None:
            for debit, credit in pairs[index::WRITERS]:
                moving.set()
                response = await transfer(http, debit["id"], credit["id"], rng.randint(1, 50))
                assert response.status_code == 201, response.text

        async def reader() -> list[dict[str, Any]]:
            await moving.wait()
            seen = []
            for _ in range(READS):
                response = await http.get(f"/v1/categories/{category['id']}/balance")
                assert response.status_code == 200, response.text
                seen.append(response.json()["balances"])
                report = await http.get("/v1/reports/trial-balance", params={"currency": "USD"})
                assert report.json()["total_debit"] == report.json()["total_credit"]
            return seen

        results = await asyncio.gather(*(writer(i) for i in range(WRITERS)), reader(), reader())
    readings = [b for seen in results[WRITERS:] for b in seen]
    assert len(readings) == 2 * READS
    # Money only moves inside the category: every snapshot holds all of it, never part.
    assert {b["posted"] for b in readings} == {3_000}
    assert {b["posted_credits"] - b["posted_debits"] for b in readings} == {3_000}
    # The reads really overlapped the writes: they saw the debits grow.
    assert len({b["posted_debits"] for b in readings}) > 1
