"""`GET /v1/reports/trial-balance`: every account of a currency on its normal side, totals equal,
now and as of a past instant, in JSON and CSV; bad parameters are 422s."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import httpx

from tests.helpers import create_account, funded_pair, transfer
from tests.test_api_accounts import assert_problem


async def report(client: httpx.AsyncClient, **query: Any) -> dict[str, Any]:
    response = await client.get("/v1/reports/trial-balance", params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_sides_and_totals_now_and_as_of_a_past_instant(client: httpx.AsyncClient) -> None:
    source, a, b = await funded_pair(client, 1000)
    await create_account(client, currency="EUR")  # another currency: not in the USD report
    response = await transfer(client, a["id"], b["id"], 300)
    middle = response.json()["created_at"]
    assert (await transfer(client, a["id"], b["id"], 200)).status_code == 201
    # a debit-normal account driven below zero stays on its side, negative
    negative = await create_account(client, normal_balance="debit", min_balance=None)
    assert (await transfer(client, negative["id"], b["id"], 1)).status_code == 201
    back = await transfer(client, b["id"], negative["id"], 5)
    assert back.status_code == 201, back.text

    now = await report(client, currency="USD")
    lines = {line["account_id"]: line for line in now["accounts"]}
    assert set(lines) == {source["id"], a["id"], b["id"], negative["id"]}
    assert lines[source["id"]] | {"account_id": None} == {
        "account_id": None,
        "code": source["code"],
        "normal_balance": "debit",
        "debit": 1000,
        "credit": 0,
    }
    assert (lines[a["id"]]["credit"], lines[b["id"]]["credit"]) == (500, 496)
    assert (lines[negative["id"]]["debit"], lines[negative["id"]]["credit"]) == (-4, 0)
    assert now["total_debit"] == now["total_credit"] == 996
    assert [line["code"] for line in now["accounts"]] == sorted(lines[i]["code"] for i in lines)

    past = await report(client, currency="USD", as_of=middle)
    past_lines = {line["account_id"]: line for line in past["accounts"]}
    assert set(past_lines) == {source["id"], a["id"], b["id"]}  # `negative` did not exist yet
    assert (past_lines[a["id"]]["credit"], past_lines[b["id"]]["credit"]) == (700, 300)
    assert past["total_debit"] == past["total_credit"] == 1000
    assert dt.datetime.fromisoformat(past["as_of"]) == dt.datetime.fromisoformat(middle)

    before_all = await report(client, currency="USD", as_of="2000-01-01T00:00:00Z")
    assert before_all["accounts"] == [] and before_all["total_debit"] == 0


async def test_csv_holds_the_same_lines_and_a_total_line(client: httpx.AsyncClient) -> None:
    await funded_pair(client, 700)
    as_json = await report(client, currency="USD")
    response = await client.get(
        "/v1/reports/trial-balance", params={"currency": "USD", "format": "csv"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["account_id", "code", "normal_balance", "debit", "credit"]
    expected = [
        [
            line["account_id"],
            line["code"],
            line["normal_balance"],
            str(line["debit"]),
            str(line["credit"]),
        ]
        for line in as_json["accounts"]
    ]
    assert rows[1:-1] == expected
    assert rows[-1] == ["", "", "total", "700", "700"]


async def test_bad_parameters_are_422(client: httpx.AsyncClient) -> None:
    path = "/v1/reports/trial-balance"
    assert_problem(await client.get(path), 422, "validation_error")
    assert_problem(await client.get(path, params={"currency": "usd"}), 422, "validation_error")
    assert_problem(await client.get(path, params={"currency": "USD\n"}), 422, "validation_error")
    bad_format = await client.get(path, params={"currency": "USD", "format": "xml"})
    assert_problem(bad_format, 422, "validation_error")
    naive = await client.get(path, params={"currency": "USD", "as_of": "2026-01-01T00:00:00"})
    assert_problem(naive, 422, "validation_error")
