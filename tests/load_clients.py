"""Clients that keep posting transfers through failures, the way the contract tells clients to:
each transfer has its own Idempotency-Key, and an ambiguous answer (503, a broken connection, a
timeout, 409 `idempotency_key_in_use` while the first try is still running) is retried with the
same key and body until a definite one comes back. So every transfer a client saw acknowledged
is known, and every one it did not see acknowledged was never made.

What they record is what the tests judge: any 5xx other than 503 (there must be none), a 503
without Retry-After, an answer that contradicts what was asked (a wrong answer), and when each
failure and each success happened, for the time without a primary as the clients saw it."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRY_PAUSE_SECONDS = 0.05
REQUEST_TIMEOUT_SECONDS = 30.0
AMOUNT_MAX = 9


@dataclass(frozen=True, slots=True)
class Acked:
    transfer_id: str
    debit: str
    credit: str
    amount: int


@dataclass
class Load:
    """What every client saw. `acked` by Idempotency-Key (also the transfer's metadata `ref`)."""

    acked: dict[str, Acked] = field(default_factory=dict)
    refused: int = 0  # 422 insufficient_funds: a definite answer, nothing moved
    statuses: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # each ambiguous answer, monotonic
    acked_at: list[float] = field(default_factory=list)  # each 201, monotonic (when it came)
    # Statuses that leave the outcome unknown: the service's 503; behind a balancer, also its
    # 502 for a request whose API process died under it.
    ambiguous: frozenset[int] = frozenset({503})

    def outage(self, after: float) -> tuple[float, float] | None:
        """(first failure, first success after it), both after `after`: the time the clients saw
        without a primary, from their first ambiguous answer to their next acknowledgement."""
        failures = [t for t in self.failed_at if t >= after]
        if not failures:
            return None
        first = min(failures)
        later = [t for t in self.acked_at if t > max(failures)]
        return first, (min(later) if later else float("nan"))


async def post_until_definite(
    http: httpx.AsyncClient, load: Load, path: str, body: dict[str, Any], key: str
) -> httpx.Response:
    while True:
        try:
            response = await http.post(
                path, json=body, headers={"Idempotency-Key": key}, timeout=REQUEST_TIMEOUT_SECONDS
            )
        except httpx.TransportError as exc:  # a balancer or server gone mid-request
            load.statuses[type(exc).__name__] += 1
            load.failed_at.append(time.monotonic())
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            continue
        load.statuses[str(response.status_code)] += 1
        if response.status_code in load.ambiguous:
            if response.status_code == 503 and "retry-after" not in response.headers:
                load.wrong.append(f"503 without Retry-After: {response.text[:200]}")
            load.failed_at.append(time.monotonic())
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            continue
        if response.status_code == 409 and "idempotency_key_in_use" in response.text:
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            continue
        if response.status_code >= 500:
            load.wrong.append(f"{response.status_code} on {path}: {response.text[:300]}")
        return response


async def transfer_client(
    http: httpx.AsyncClient, load: Load, accounts: list[str], stop: asyncio.Event, seed: int
) -> None:
    """Transfers between `accounts` (both ways), each with its own key, until `stop`."""
    rng = random.Random(seed)
    while not stop.is_set():
        debit, credit = rng.sample(accounts, 2)
        amount = rng.randint(1, AMOUNT_MAX)
        key = str(uuid.uuid4())
        body = {
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": amount,
            "metadata": {"ref": key},
        }
        response = await post_until_definite(http, load, "/v1/transfers", body, key)
        if response.status_code == 201:
            got = response.json()
            asked = (debit, credit, amount)
            if (got["debit_account_id"], got["credit_account_id"], got["amount"]) != asked:
                load.wrong.append(f"201 for {asked} answered {got}")
            load.acked[key] = Acked(got["id"], debit, credit, amount)
            load.acked_at.append(time.monotonic())
        elif response.status_code == 422 and "insufficient_funds" in response.text:
            load.refused += 1
        else:
            load.wrong.append(f"{response.status_code} for a transfer: {response.text[:300]}")


async def read_client(http: httpx.AsyncClient, load: Load, stop: asyncio.Event, seed: int) -> None:
    """Reads acknowledged transfers back: 200, or 503 while there is no primary; a 404 for a
    transfer a client saw acknowledged would be a wrong answer."""
    rng = random.Random(seed)
    while not stop.is_set():
        await asyncio.sleep(0.02)
        if not load.acked:
            continue
        key = rng.choice(list(load.acked))
        wanted = load.acked[key]
        try:
            response = await http.get(
                f"/v1/transfers/{wanted.transfer_id}", timeout=REQUEST_TIMEOUT_SECONDS
            )
        except httpx.TransportError as exc:
            load.statuses[f"read {type(exc).__name__}"] += 1
            continue
        load.statuses[f"read {response.status_code}"] += 1
        if response.status_code in load.ambiguous:
            if response.status_code == 503 and "retry-after" not in response.headers:
                load.wrong.append("a read's 503 without Retry-After")
            continue
        if response.status_code != 200 or response.json()["amount"] != wanted.amount:
            load.wrong.append(f"read of {wanted} answered {response.status_code} {response.text}")


async def fund(http: httpx.AsyncClient, load: Load, accounts: list[str], amount: int) -> str:
    """A source account (debit-normal, no floor) and a first transfer of `amount` to each."""
    source = await post_until_definite(
        http,
        load,
        "/v1/accounts",
        {
            "code": f"source:{uuid.uuid4().hex[:8]}",
            "currency": "USD",
            "normal_balance": "debit",
            "min_balance": None,
        },
        str(uuid.uuid4()),
    )
    source_id: str = source.json()["id"]
    for account in accounts:
        key = str(uuid.uuid4())
        body = {
            "debit_account_id": source_id,
            "credit_account_id": account,
            "amount": amount,
            "metadata": {"ref": key},
        }
        response = await post_until_definite(http, load, "/v1/transfers", body, key)
        load.acked[key] = Acked(response.json()["id"], source_id, account, amount)
    return source_id


async def open_accounts(http: httpx.AsyncClient, load: Load, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        body = {
            "code": f"customer:{uuid.uuid4().hex[:10]}",
            "currency": "USD",
            "normal_balance": "credit",
        }
        response = await post_until_definite(http, load, "/v1/accounts", body, str(uuid.uuid4()))
        ids.append(response.json()["id"])
    return ids
