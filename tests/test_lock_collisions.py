"""No chosen id shares a lock (contract 9.1): a request for id X never waits on a lock held for id
Y != X, whatever bits the two share.

For each way two ids can agree (a 32-bit word equal at the same or another position, a 64-bit
half equal, both halves crossed, halves that XOR alike), every operation keyed by a client id
is tried on an id Y while another request holds the lock of an id X built from Y that way, and
that request waits on an account row locked from another connection: a create with an id, a
post, a void (of a pending transfer and of an id never seen), a reversal, an exchange, an
account and a category created with an id, an account with that id joining a category (its
memberships' lock). Each Y request must answer while every X request
is still waiting: X requests can only end once the row is released (or after the database's
lock timeout, 30 s, when they fail), so a Y request that waited on an X lock would finish only
after its X had ended, and the test sees that order. No clock is read."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psycopg
import pytest

from ledger.core.settings import Settings
from tests.helpers import create_account, violations

WORD = 32
MASK32 = (1 << 32) - 1
MASK64 = (1 << 64) - 1
SETTLE_POLLS_MAX = 600  # polls of 0.05 s for a blocker to reach its row-lock wait
REQUEST_DEADLINE_SECONDS = 120  # far past the lock timeout: a hang fails, a wait is seen in order


def words(value: uuid.UUID) -> list[int]:
    """The id's four 32-bit words, most significant first."""
    return [(value.int >> (WORD * (3 - i))) & MASK32 for i in range(4)]


def from_words(parts: list[int]) -> uuid.UUID:
    number = 0
    for part in parts:
        number = (number << WORD) | part
    return uuid.UUID(int=number)


def colliding(y: uuid.UUID, variant: str) -> uuid.UUID:
    """An id other than `y` that agrees with it as `variant` says; the rest is random."""
    w = words(y)
    r = [secrets.randbits(WORD) for _ in range(4)]
    high, low = y.int >> 64, y.int & MASK64
    built = {
        "low32": [r[0], r[1], r[2], w[3]],
        "high32": [w[0], r[1], r[2], r[3]],
        "word1": [r[0], w[1], r[2], r[3]],
        "word2": [r[0], r[1], w[2], r[3]],
        "low32_as_high32": [w[3], r[1], r[2], r[3]],
        "words_reversed": [w[3], w[2], w[1], w[0]],
        "low64": [r[0], r[1], w[2], w[3]],
        "high64": [w[0], w[1], r[2], r[3]],
    }
    if variant in built:
        x = from_words(built[variant])
    elif variant == "halves_crossed":
        x = uuid.UUID(int=(low << 64) | high)
    elif variant == "halves_xor_alike":
        d = secrets.randbits(64) | 1
        x = uuid.UUID(int=((high ^ d) << 64) | (low ^ d))
    else:
        raise ValueError(variant)
    assert x != y
    return x


VARIANTS = [
    "low32",
    "high32",
    "word1",
    "word2",
    "low32_as_high32",
    "words_reversed",
    "low64",
    "high64",
    "halves_crossed",
    "halves_xor_alike",
]
PROBES = [
    "create",
    "post",
    "void",
    "void_unseen",
    "reverse",
    "exchange",
    "account",
    "category",
    "membership",
]
BLOCKERS = ["create", "post", "void", "reverse", "exchange"]
LOCKED = [f"L{index}" for index in range(len(PROBES))]  # one locked account per blocker
PARTNERS = [f"P{index}" for index in range(len(PROBES))]  # and one account it pays


class Ledger:
    """Accounts for blockers (through L, whose row is held locked) and for probes (apart)."""

    def __init__(self, client: httpx.AsyncClient, accounts: dict[str, dict[str, Any]]) -> None:
        self.client = client
        self.a = {name: account["id"] for name, account in accounts.items()}

    async def transfer(self, debit: str, credit: str, **extra: Any) -> httpx.Response:
        body = {"debit_account_id": self.a[debit], "credit_account_id": self.a[credit]}
        return await self.client.post("/v1/transfers", json={"amount": 1, **body, **extra})

    def exchange(self, side: str, exchange_id: uuid.UUID) -> Awaitable[httpx.Response]:
        """An exchange of 10 USD for 9 EUR: from a locked account `side` (a blocker), or from
        C (`side` "probe")."""
        prefix = "p" if side == "probe" else "b"
        body = {
            "id": str(exchange_id),
            "debit_account_id": self.a["C" if side == "probe" else side],
            "credit_account_id": self.a[f"{prefix}_eur"],
            "debit_amount": 10,
            "credit_amount": 9,
            "via": {"USD": self.a[f"{prefix}_usd_liq"], "EUR": self.a[f"{prefix}_eur_liq"]},
        }
        return self.client.post("/v1/transfers/exchange", json=body)


async def make_ledger(client: httpx.AsyncClient) -> Ledger:
    accounts = {"S": await create_account(client, normal_balance="debit", min_balance=None)}
    for name in (*LOCKED, *PARTNERS, "C", "D", "b_usd_liq", "p_usd_liq"):
        accounts[name] = await create_account(client)
    for name in ("b_eur", "p_eur"):
        accounts[name] = await create_account(client, currency="EUR")
    for name in ("b_eur_liq", "p_eur_liq"):
        accounts[name] = await create_account(client, currency="EUR", min_balance=None)
    ledger = Ledger(client, accounts)
    for name in (*LOCKED, "C"):
        assert (await ledger.transfer("S", name, amount=1_000_000)).status_code == 201
    return ledger


async def prepare_blocker(
    ledger: Ledger, kind: str, x: uuid.UUID, locked: str
) -> Callable[[], Any]:
    """What must exist before the row of account `locked` is locked, and the request that will
    wait on it. Each blocker has accounts of its own: group commit keeps a second create on an
    account that a running batch holds in its own queue, where it holds no lock."""
    partner = PARTNERS[LOCKED.index(locked)]
    if kind in ("post", "void"):
        made = await ledger.transfer(locked, partner, id=str(x), pending=True)
        assert made.status_code == 201, made.text
    elif kind == "reverse":
        made = await ledger.transfer(locked, partner, id=str(x))
        assert made.status_code == 201, made.text
    client = ledger.client
    return {
        "create": lambda: ledger.transfer(locked, partner, id=str(x)),
        "post": lambda: client.post(f"/v1/transfers/{x}/post"),
        "void": lambda: client.post(f"/v1/transfers/{x}/void"),
        "reverse": lambda: client.post(f"/v1/transfers/{x}/reverse"),
        "exchange": lambda: ledger.exchange(locked, x),
    }[kind]


async def prepare_probe(ledger: Ledger, kind: str, y: uuid.UUID) -> Callable[[], Any]:
    client = ledger.client
    code = f"probe:{y.hex[:12]}"
    if kind == "membership":  # an account with id y joins a category: y's membership lock
        body = {"id": str(y), "code": code, "currency": "USD", "normal_balance": "credit"}
        assert (await client.post("/v1/accounts", json=body)).status_code == 201
        group = {"code": f"group:{y.hex[:12]}", "currency": "USD", "normal_balance": "credit"}
        made = await client.post("/v1/categories", json=group)
        assert made.status_code == 201, made.text
        path = f"/v1/categories/{made.json()['id']}/accounts/{y}"
        return lambda: client.put(path)
    if kind in ("post", "void"):
        made = await ledger.transfer("C", "D", id=str(y), pending=True)
        assert made.status_code == 201, made.text
    elif kind == "reverse":
        made = await ledger.transfer("C", "D", id=str(y))
        assert made.status_code == 201, made.text
    return {
        "create": lambda: ledger.transfer("C", "D", id=str(y)),
        "post": lambda: client.post(f"/v1/transfers/{y}/post"),
        "void": lambda: client.post(f"/v1/transfers/{y}/void"),
        "void_unseen": lambda: client.post(f"/v1/transfers/{y}/void"),
        "reverse": lambda: client.post(f"/v1/transfers/{y}/reverse"),
        "exchange": lambda: ledger.exchange("probe", y),
        "account": lambda: client.post(
            "/v1/accounts",
            json={"id": str(y), "code": code, "currency": "USD", "normal_balance": "credit"},
        ),
        "category": lambda: client.post(
            "/v1/categories",
            json={"id": str(y), "code": code, "currency": "USD", "normal_balance": "credit"},
        ),
    }[kind]


def lock_waiters(db: psycopg.Connection[Any]) -> int:
    """Backends of this database waiting for a heavyweight lock (a row, a transaction)."""
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    assert row is not None
    return int(row[0])


async def start_waiting(
    db: psycopg.Connection[Any], request: Callable[[], Any]
) -> asyncio.Task[Any]:
    """Start one blocker and return once it waits on the locked row (one more lock waiter)."""
    before = lock_waiters(db)
    task = asyncio.ensure_future(asyncio.wait_for(request(), REQUEST_DEADLINE_SECONDS))
    for _ in range(SETTLE_POLLS_MAX):
        await asyncio.sleep(0.05)
        assert not task.done(), task.result()  # it cannot end while the row is held
        if lock_waiters(db) > before:
            return task
    activity = db.execute(
        "SELECT state, wait_event_type, wait_event, left(query, 120) FROM pg_stat_activity "
        "WHERE datname = current_database()"
    ).fetchall()
    raise AssertionError(f"a blocker never reached its row-lock wait ({before}): {activity}")


@pytest.mark.parametrize("variant", VARIANTS)
async def test_a_request_never_waits_on_a_lock_held_for_another_id(
    client: httpx.AsyncClient,
    db_url: str,
    sync_db: psycopg.Connection[Any],
    settings: Settings,
    variant: str,
) -> None:
    ledger = await make_ledger(client)
    offset = VARIANTS.index(variant)
    probes: dict[str, Callable[[], Any]] = {}
    blockers: list[tuple[str, Callable[[], Any]]] = []
    for index, probe_kind in enumerate(PROBES):
        y = uuid.uuid4()
        blocker_kind = BLOCKERS[(offset + index) % len(BLOCKERS)]
        blockers.append(
            (
                blocker_kind,
                await prepare_blocker(ledger, blocker_kind, colliding(y, variant), LOCKED[index]),
            )
        )
        probes[probe_kind] = await prepare_probe(ledger, probe_kind, y)

    holder = psycopg.connect(db_url)  # holds the rows, as a slow request elsewhere would
    try:
        locked = [ledger.a[name] for name in LOCKED]
        holder.execute("SELECT 1 FROM accounts WHERE id = ANY(%s) FOR UPDATE", [locked])
        waiting = [await start_waiting(sync_db, request) for _kind, request in blockers]
        answers = await asyncio.gather(*(request() for request in probes.values()))
        still = [kind for (kind, _), task in zip(blockers, waiting, strict=True) if not task.done()]
        assert still == [kind for kind, _ in blockers], "a blocker ended before the probes did"
    finally:
        holder.commit()
        holder.close()
    for kind, response in zip(probes, answers, strict=True):
        assert response.status_code in (200, 201), (kind, response.text)
    for (kind, _), task in zip(blockers, waiting, strict=True):
        response = await task
        assert response.status_code in (200, 201), (kind, response.text)
    assert await violations(settings) == []
