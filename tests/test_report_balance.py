"""Reports balance (contract 9.1): a trial balance and a category balance, now or as of any
instant, include every account with an entry at or before that instant, whenever the account
was created. History imported into an account created after the instant (the migration path
of docs/money-movement.md) counts at its own instants.

A property over random ledgers, each in a currency of its own: accounts of both normal
balances, history imported at random past instants (several may share one), then transfers
posted now between accounts created meanwhile; asked at the import instants, just before and
after them, between the live transfers and now: total debit = total credit, every account's
figure equals its `balance?as_of`, an account is in the report exactly when it existed or had
an entry at that instant, and a category over all of them sums the same figures."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.cli.main import ensure_admin_key
from ledger.core.settings import Settings
from tests.helpers import app_client, create_account, transfer, violations

EPOCH = dt.datetime(2021, 3, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)
_currencies = itertools.count()


def stamp(instant: dt.datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


@st.composite
def ledgers(draw: st.DrawFn) -> dict[str, Any]:
    accounts = draw(st.lists(st.sampled_from(["debit", "credit"]), min_size=2, max_size=5))
    count = len(accounts)
    pair = st.tuples(st.integers(0, count - 1), st.integers(0, count - 1)).filter(
        lambda p: p[0] != p[1]
    )
    # Import instants: days after EPOCH, sorted (each import not older than the ones before it),
    # and some repeated (several imports at one instant).
    days = sorted(draw(st.lists(st.integers(0, 400), min_size=1, max_size=6)))
    imports = [(day, *draw(pair), draw(st.integers(1, 10_000))) for day in days]
    live = draw(st.lists(st.tuples(pair, st.integers(1, 10_000)), max_size=4))
    # Accounts first used in the live phase may be created then (after the earlier transfers).
    imported = {i for _, d, c, _ in imports for i in (d, c)}
    late = [i for i in range(count) if i not in imported and draw(st.booleans())]
    return {
        "currency": f"T{next(_currencies):08d}",  # a currency of its own: reports apart
        "accounts": accounts,
        "imports": imports,
        "live": live,
        "late": late,
        "category": draw(st.sampled_from(["debit", "credit"])),
    }


class Run:
    def __init__(self, http: httpx.AsyncClient, ledger: dict[str, Any]) -> None:
        self.http = http
        self.ledger = ledger
        self.ids: dict[int, str] = {}
        self.created: dict[int, dt.datetime] = {}
        self.instants: list[dt.datetime] = []

    async def account(self, index: int) -> str:
        if index not in self.ids:
            made = await create_account(
                self.http,
                normal_balance=self.ledger["accounts"][index],
                currency=self.ledger["currency"],
                min_balance=None,
            )
            self.ids[index] = made["id"]
            self.created[index] = dt.datetime.fromisoformat(made["created_at"])
        return self.ids[index]

    async def post(self, debit: int, credit: int, amount: int, **extra: Any) -> dt.datetime:
        response = await transfer(
            self.http, await self.account(debit), await self.account(credit), amount, **extra
        )
        assert response.status_code == 201, response.text
        return dt.datetime.fromisoformat(response.json()["created_at"])

    async def build(self) -> None:
        for index in range(len(self.ledger["accounts"])):
            if index not in self.ledger["late"]:
                await self.account(index)
        for day, debit, credit, amount in self.ledger["imports"]:
            instant = EPOCH + dt.timedelta(days=day, hours=12)
            await self.post(debit, credit, amount, imported_at=stamp(instant))
            self.instants += [instant - MICROSECOND, instant]
        for (debit, credit), amount in self.ledger["live"]:
            self.instants.append(await self.post(debit, credit, amount))
        for index in range(len(self.ledger["accounts"])):
            await self.account(index)  # a late account never used: created last, empty
        self.instants += list(self.created.values())
        self.instants += [EPOCH - dt.timedelta(days=1), min(self.created.values()) - MICROSECOND]

    async def check(self, instant: dt.datetime | None, category_id: str) -> None:
        params = {"currency": self.ledger["currency"]}
        if instant is not None:
            params["as_of"] = stamp(instant)
        response = await self.http.get("/v1/reports/trial-balance", params=params)
        assert response.status_code == 200, response.text
        report = response.json()
        where = (instant, report)
        assert report["total_debit"] == report["total_credit"], where
        lines = {line["account_id"]: line for line in report["accounts"]}
        figures = {}
        for index, account_id in self.ids.items():
            if instant is None:
                got = await self.http.get(f"/v1/accounts/{account_id}")
                posted, has_entry = got.json()["balances"]["posted"], True
            else:
                got = await self.http.get(
                    f"/v1/accounts/{account_id}/balance", params={"as_of": stamp(instant)}
                )
                posted, has_entry = got.json()["posted"], got.json()["sequence"] > 0
            figures[account_id] = posted
            existed = instant is None or self.created[index] <= instant
            assert (account_id in lines) == (existed or has_entry), (index, where)
            if account_id in lines:
                side = self.ledger["accounts"][index]
                assert lines[account_id][side] == posted, (index, where)
                other = "credit" if side == "debit" else "debit"
                assert lines[account_id][other] == 0, (index, where)
        assert set(lines) <= set(self.ids.values()), where
        rolled = await self.http.get(
            f"/v1/categories/{category_id}/balance",
            params={} if instant is None else {"as_of": stamp(instant)},
        )
        assert rolled.status_code == 200, rolled.text
        want = sum(
            figures[self.ids[i]] * (1 if side == self.ledger["category"] else -1)
            for i, side in enumerate(self.ledger["accounts"])
        )
        assert rolled.json()["balances"]["posted"] == want, (instant, rolled.json())


async def category_of(run: Run) -> str:
    """A root category holding the first account, with a child holding the rest."""
    ids: list[str] = []
    for code in ("root", "child"):
        body = {
            "code": f"{run.ledger['currency']}:{code}",
            "currency": run.ledger["currency"],
            "normal_balance": run.ledger["category"],
            **({"parent_id": ids[0]} if ids else {}),
        }
        made = await run.http.post("/v1/categories", json=body)
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    for index, account_id in sorted(run.ids.items()):
        target = ids[0] if index == 0 else ids[1]
        put = await run.http.put(f"/v1/categories/{target}/accounts/{account_id}")
        assert put.status_code == 201, put.text
    return ids[0]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    try:
        yield event_loop
    finally:
        event_loop.close()


def test_reports_balance_and_agree_with_balance_as_of_at_every_instant(
    settings: Settings, loop: asyncio.AbstractEventLoop
) -> None:
    loop.run_until_complete(ensure_admin_key(settings))
    stack = contextlib.AsyncExitStack()
    http = loop.run_until_complete(stack.enter_async_context(app_client(settings)))

    async def one(ledger: dict[str, Any]) -> None:
        run = Run(http, ledger)
        await run.build()
        category_id = await category_of(run)
        for instant in [None, *sorted(set(run.instants))]:
            await run.check(instant, category_id)

    @settings_for_ledgers
    @given(ledger=ledgers())
    def example(ledger: dict[str, Any]) -> None:
        loop.run_until_complete(one(ledger))

    try:
        example()
        assert loop.run_until_complete(violations(settings)) == []
    finally:
        loop.run_until_complete(stack.aclose())


settings_for_ledgers = settings(
    max_examples=8,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


async def test_history_imported_into_a_later_account_is_in_the_report_of_its_instant(
    client: httpx.AsyncClient,
) -> None:
    """The issue's case: 100 imported at an instant before the account existed."""
    currency = "HIST1"
    source = await create_account(
        client, normal_balance="debit", min_balance=None, currency=currency
    )
    later = await create_account(client, currency=currency)
    at = "2024-05-01T00:00:00Z"
    response = await transfer(client, source["id"], later["id"], 100, imported_at=at)
    assert response.status_code == 201, response.text
    report = await client.get(
        "/v1/reports/trial-balance", params={"currency": currency, "as_of": at}
    )
    body = report.json()
    assert (body["total_debit"], body["total_credit"]) == (100, 100), body
    assert {line["account_id"] for line in body["accounts"]} == {source["id"], later["id"]}
