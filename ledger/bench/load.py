"""The load: C clients, each with one request in flight, posting random transfers until the end.

Every outcome is tallied: acknowledged (201) transfers move an in-memory model of each account's
balance, insufficient_funds refusals are counted apart (the ledger doing its job, not failing),
everything else is an error; an error whose effect is unknown (5xx, timeout, broken connection)
is also counted as ambiguous, since the model cannot say whether it committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sys
import time
import uuid
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from ledger.bench.http import JSON_HEADERS
from ledger.bench.options import BenchOptions
from ledger.bench.setup import TRANSFER_AMOUNT_MAX, BenchLedger
from ledger.core import limits

PROGRESS_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Draw:
    """One planned transfer, by account index."""

    debit: int
    credit: int
    amount: int


@dataclass(frozen=True, slots=True)
class Acked:
    transfer_id: str
    draw: Draw


@dataclass
class Tally:
    """What the clients saw. asyncio runs one client at a time, so plain counters are safe."""

    ledger: BenchLedger
    rng: random.Random
    sample_max: int
    latencies_s: array[float] = field(default_factory=lambda: array("d"))
    requests: int = 0
    acked: int = 0
    rejected: int = 0
    errors: int = 0
    ambiguous: int = 0
    error_codes: Counter[str] = field(default_factory=Counter)
    deltas: list[int] = field(default_factory=list)
    sample: list[Acked] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.deltas = [0] * len(self.ledger.account_ids)

    def ack(self, transfer_id: str, draw: Draw) -> None:
        """A 201: the model moves, and the id may be picked for the stored-check (reservoir
        sampling keeps a uniform sample of all acks in bounded memory)."""
        self.acked += 1
        self.deltas[draw.debit] -= draw.amount  # every bench account is credit-normal
        self.deltas[draw.credit] += draw.amount
        if len(self.sample) < self.sample_max:
            self.sample.append(Acked(transfer_id, draw))
            return
        slot = self.rng.randrange(self.acked)
        if slot < self.sample_max:
            self.sample[slot] = Acked(transfer_id, draw)

    def fail(self, code: str, count: int, *, ambiguous: bool) -> None:
        self.errors += count
        self.error_codes[code] += count
        if ambiguous:
            self.ambiguous += count

    def outcome(self, status: int, body: Any, draw: Draw) -> None:
        """One transfer's answer, alone or as an item of a batch."""
        problem_code = body.get("code") if isinstance(body, dict) else None
        if status == 201 and isinstance(body, dict) and isinstance(body.get("id"), str):
            self.ack(body["id"], draw)
        elif status == 422 and problem_code == "insufficient_funds":
            self.rejected += 1
        else:
            self.fail(str(problem_code or status), 1, ambiguous=status >= 500)

    def percentile_ms(self, fraction: float) -> float | None:
        """Nearest-rank percentile of the per-request latencies."""
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        rank = max(1, math.ceil(fraction * len(ordered)))
        return round(ordered[rank - 1] * 1000, 2)


class Plan:
    """Which accounts a transfer touches. Uniform: two distinct random customers. Hot: a random
    customer pays the one merchant account, so every transfer locks that row."""

    def __init__(self, ledger: BenchLedger) -> None:
        self.ledger = ledger

    def draw(self, rng: random.Random) -> Draw:
        customers = self.ledger.customers
        debit = rng.randrange(customers)
        if self.ledger.hot_index is not None:
            credit = self.ledger.hot_index
        else:
            credit = rng.randrange(customers - 1)
            credit += 1 if credit >= debit else 0
        return Draw(debit, credit, rng.randint(1, TRANSFER_AMOUNT_MAX))

    def body(self, draw: Draw) -> dict[str, Any]:
        ids = self.ledger.account_ids
        return {
            "debit_account_id": ids[draw.debit],
            "credit_account_id": ids[draw.credit],
            "amount": draw.amount,
            "currency": self.ledger.currency,
        }


def open_load_session(options: BenchOptions) -> aiohttp.ClientSession:
    """The load's HTTP client: one keep-alive connection per client.

    aiohttp rather than the httpx client of setup and checks: the load generator shares the
    machine with the service, and per request it spent a third of what httpx did (measured on
    the uniform run), which left that much more CPU to the service being measured."""
    return aiohttp.ClientSession(
        base_url=options.url,
        headers={"authorization": f"Bearer {options.key}"},
        connector=aiohttp.TCPConnector(limit=options.clients, use_dns_cache=True),
        timeout=aiohttp.ClientTimeout(total=limits.BENCH_REQUEST_TIMEOUT_SECONDS),
        trust_env=False,  # loopback benchmarks must not be routed through a proxy from the env
        skip_auto_headers=("User-Agent",),
    )


async def run_load(ledger: BenchLedger, options: BenchOptions) -> tuple[Tally, float]:
    """Run the clients for the duration; returns the tally and the seconds it really took
    (requests in flight at the deadline are waited for and counted)."""
    seed = options.seed if options.seed is not None else 0
    tally = Tally(ledger=ledger, rng=random.Random(seed), sample_max=options.check_sample)
    plan = Plan(ledger)
    started = time.monotonic()
    deadline = started + options.duration_s
    stop = asyncio.Event()
    reporter = asyncio.create_task(_progress(tally, started, stop)) if options.progress else None
    try:
        async with open_load_session(options) as http:
            await asyncio.gather(
                *(
                    _client(http, plan, tally, options, random.Random(f"{seed}:{index}"), deadline)
                    for index in range(options.clients)
                )
            )
    finally:
        stop.set()
        if reporter is not None:
            await reporter
    return tally, time.monotonic() - started


async def _client(
    http: aiohttp.ClientSession,
    plan: Plan,
    tally: Tally,
    options: BenchOptions,
    rng: random.Random,
    deadline: float,
) -> None:
    path = "/v1/transfers/batch" if options.batch else "/v1/transfers"
    while time.monotonic() < deadline:
        draws = [plan.draw(rng) for _ in range(options.batch or 1)]
        if options.batch:
            payload: Any = {"atomic": False, "transfers": [plan.body(d) for d in draws]}
        else:
            payload = plan.body(draws[0])
        headers = dict(JSON_HEADERS)
        if options.idempotency:
            headers["idempotency-key"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        started = time.perf_counter()
        try:
            async with http.post(
                path, data=msgspec.json.encode(payload), headers=headers
            ) as response:
                status, content = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.latencies_s.append(time.perf_counter() - started)
            tally.requests += 1
            tally.fail(type(exc).__name__, len(draws), ambiguous=True)
            continue
        tally.latencies_s.append(time.perf_counter() - started)
        tally.requests += 1
        _record(tally, status, _decode(content), draws, batched=bool(options.batch))


def _decode(content: bytes) -> Any:
    try:
        return msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None


def _record(tally: Tally, status: int, body: Any, draws: list[Draw], *, batched: bool) -> None:
    if not batched:
        tally.outcome(status, body, draws[0])
        return
    items = body.get("results") if isinstance(body, dict) else None
    if status != 200 or not isinstance(items, list) or len(items) != len(draws):
        code = body.get("code") if isinstance(body, dict) else None
        tally.fail(str(code or status), len(draws), ambiguous=status >= 500 or status == 200)
        return
    for item, draw in zip(items, draws, strict=True):
        if not isinstance(item, dict):
            tally.fail("malformed_item", 1, ambiguous=True)
            continue
        item_status = item.get("status")
        tally.outcome(item_status if isinstance(item_status, int) else 0, _item_body(item), draw)


def _item_body(item: dict[str, Any]) -> Any:
    return item.get("transfer") if item.get("transfer") is not None else item.get("error")


async def _progress(tally: Tally, started: float, stop: asyncio.Event) -> None:
    """Once a second on stderr (a TTY): elapsed, the last second's rate, errors, refusals."""
    last_acked, last_at = 0, started
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PROGRESS_INTERVAL_SECONDS)
        now = time.monotonic()
        rate = (tally.acked - last_acked) / max(now - last_at, 1e-9)
        last_acked, last_at = tally.acked, now
        sys.stderr.write(
            f"\rbench {now - started:6.1f}s  {rate:9.1f} transfers/s  "
            f"errors {tally.errors}  rejected {tally.rejected}   "
        )
        sys.stderr.flush()
    sys.stderr.write("\n")
