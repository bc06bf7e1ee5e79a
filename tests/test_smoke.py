from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from tests.helpers import balances, funded_pair, transfer


async def test_transfer_moves_money(client: AsyncTestClient[Any]) -> None:
    source, a, b = await funded_pair(client, 1000)
    response = await transfer(client, a["id"], b["id"], 300)
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "posted"
    assert (await balances(client, a["id"]))["posted"] == 700
    assert (await balances(client, b["id"]))["posted"] == 300
    assert (await balances(client, source["id"]))["posted"] == 1000
