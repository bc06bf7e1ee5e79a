"""Filling the ledger to a size through `POST /v1/transfers/batch`, as a client would.

Of every 100 transfers, `BUSY_PERCENT` pay the one busy account from a random customer; the
others move 1..1000 between two distinct random customers. Every transfer carries metadata
`{"channel": "web"|"app", "order": "o<n>"}`, `web` on every other transfer, so that the filter
`metadata[channel]=web` matches half the ledger. Batches are not atomic: an item refused
(insufficient funds, rare by construction) is simply sent again in the next round, until the
database holds exactly the size asked for.

Posting instants are the real ones: imported history (`imported_at`) is an admin-only write
that must come in time order per account, which concurrent batches all touching the busy
account cannot keep. The fill records when it crossed each batch, so "a mid date" is the
instant the ledger held half of its current size.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import psycopg

from ledger.bench.growth.options import BUSY_PERCENT, GrowthOptions
from ledger.bench.http import JSON_HEADERS
from ledger.bench.setup import TRANSFER_AMOUNT_MAX, BenchLedger
from ledger.core.errors import BenchAborted

FILL_ROUNDS_MAX = 5  # rounds that send what is still missing before the bench gives up
WEB, APP = "web", "app"
TRANSFER_ID_EVERY = 100  # one acknowledged id kept per this many, to find one near a mark


@dataclass
class FillLog:
    """What the fill saw across all sizes: instants at which the ledger held a given number
    of transfers, and one transfer id near each half-way mark (its audit record gets proved)."""

    marks: list[tuple[int, dt.datetime]] = field(default_factory=list)
    drawn: int = 0
    acked: int = 0
    refused: int = 0
    errors: int = 0
    transfer_ids: list[tuple[int, str]] = field(default_factory=list)

    def instant_at(self, count: int) -> dt.datetime:
        """The first recorded instant at which the ledger held at least `count` transfers."""
        for held, at in self.marks:
            if held >= count:
                return at
        return self.marks[-1][1]

    def transfer_near(self, count: int) -> str | None:
        """A transfer acknowledged once the ledger held about `count` transfers."""
        for held, transfer_id in self.transfer_ids:
            if held >= count:
                return transfer_id
        return self.transfer_ids[-1][1] if self.transfer_ids else None


async def count_transfers(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
    cursor = await conn.execute("SELECT count(*) FROM transfers")
    row = await cursor.fetchone()
    return int(row[0]) if row is not None and isinstance(row[0], int) else 0


class Filler:
    def __init__(
        self,
        ledger: BenchLedger,
        options: GrowthOptions,
        session: aiohttp.ClientSession,
        log: FillLog,
    ) -> None:
        self.ledger = ledger
        self.options = options
        self.session = session
        self.log = log
        self.rng = random.Random(options.seed)
        self.held = 0  # transfers in the ledger as far as the fill knows

    async def fill_to(self, conn: psycopg.AsyncConnection[tuple[object, ...]], size: int) -> int:
        """Send batches until the database holds `size` transfers; returns what it holds."""
        self.held = await count_transfers(conn)
        self.log.marks.append((self.held, dt.datetime.now(dt.UTC)))
        for _ in range(FILL_ROUNDS_MAX):
            missing = size - self.held
            if missing <= 0:
                break
            await self._round(missing)
            self.held = await count_transfers(conn)
        return self.held

    async def _round(self, missing: int) -> None:
        sizes = [
            min(self.options.batch, missing - start)
            for start in range(0, missing, self.options.batch)
        ]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for count in sizes:
            queue.put_nowait(count)
        started = time.monotonic()

        async def client() -> None:
            while not queue.empty():
                await self._send(queue.get_nowait())
                if self.options.progress:
                    rate = self.log.acked / max(time.monotonic() - started, 1e-9)
                    sys.stderr.write(f"\rgrowth: {self.held:,} transfers ({rate:,.0f}/s)   ")
                    sys.stderr.flush()

        await asyncio.gather(*(client() for _ in range(self.options.clients)))
        if self.options.progress:
            sys.stderr.write("\n")

    def _item(self) -> dict[str, Any]:
        ledger, rng = self.ledger, self.rng
        number = self.log.drawn
        self.log.drawn += 1
        debit = rng.randrange(ledger.customers)
        if ledger.hot_index is not None and rng.randrange(100) < BUSY_PERCENT:
            credit = ledger.hot_index
        else:
            credit = rng.randrange(ledger.customers - 1)
            credit += 1 if credit >= debit else 0
        return {
            "debit_account_id": ledger.account_ids[debit],
            "credit_account_id": ledger.account_ids[credit],
            "amount": rng.randint(1, TRANSFER_AMOUNT_MAX),
            "currency": ledger.currency,
            "metadata": {"channel": WEB if number % 2 == 0 else APP, "order": f"o{number}"},
        }

    async def _send(self, count: int) -> None:
        body = {"atomic": False, "transfers": [self._item() for _ in range(count)]}
        try:
            async with self.session.post(
                "/v1/transfers/batch", data=msgspec.json.encode(body), headers=JSON_HEADERS
            ) as response:
                status, content = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError):
            self.log.errors += count  # the round's recount says what really committed
            return
        answer = msgspec.json.decode(content) if content else None
        items = answer.get("results") if isinstance(answer, dict) else None
        if status != 200 or not isinstance(items, list):
            if status in (401, 403):
                raise BenchAborted(
                    f"POST /v1/transfers/batch answered {status}: the key is refused"
                )
            self.log.errors += count
            return
        for item in items:
            self._tally(item)
        self.log.marks.append((self.held, dt.datetime.now(dt.UTC)))

    def _tally(self, item: Any) -> None:
        status = item.get("status") if isinstance(item, dict) else None
        if status == 201:
            self.log.acked += 1
            self.held += 1
            transfer = item.get("transfer") or {}
            if isinstance(transfer.get("id"), str) and self.held % TRANSFER_ID_EVERY == 0:
                self.log.transfer_ids.append((self.held, transfer["id"]))
        elif status == 422:
            self.log.refused += 1
        else:
            self.log.errors += 1
