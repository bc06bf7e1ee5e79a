"""Timing of the reports as the ledger grows: `python -m ledger.bench.reporting`.

Seeds a database with N funded accounts straight in SQL (an account, the transfer that funded it
and both entries, all consistent: `ledger verify` holds), then times, through the same service
functions the API calls, the trial balance (now and as of an instant) with its JSON and CSV
encodings, and the balance of one category holding K of those accounts (now and as of an
instant). Each figure is the median of `--repeat` runs, in milliseconds. Without
`--database-url` it starts an embedded PostgreSQL of its own in a temporary directory.

This is a measurement, not a test: it asserts nothing about speed (docs/performance.md keeps the
figures and the machine they were taken on).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from accounts.categories import service as categories
from accounts.categories.schemas import CategoryCreate
from accounts.reports import service as reports
from accounts.reports.controllers import trial_balance_csv
from ledger.core import migrate
from ledger.core.context import Actor, WriteContext
from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction
from ledger.core.settings import Settings
from ledger.embedded import EmbeddedPostgres
from ledger.posting.invariants import find_violations

CURRENCY = "USD"
# Entries are stamped one millisecond apart from here, so an instant names a point in the seed.
BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

_SEED = """
CREATE TEMP TABLE seed ON COMMIT DROP AS
SELECT n, gen_random_uuid() AS account_id, gen_random_uuid() AS transfer_id,
       %(base)s::timestamptz + n * interval '1 millisecond' AS at
  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS n;
INSERT INTO accounts (id, code, currency, normal_balance, min_balance, status, metadata,
                      metadata_text, version, posted_debits, posted_credits, pending_debits,
                      pending_credits, created_at, updated_at)
SELECT account_id, 'rb:' || n, %(currency)s, 'credit', 0, 'active', '{}', '{}', 2, 0, n, 0, 0,
       at - interval '1 microsecond', at
  FROM seed;
INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, state,
                       posted_amount, reversed_amount, metadata, metadata_text, created_at,
                       updated_at, created_pending)
SELECT transfer_id, %(source)s, account_id, n, %(currency)s, 'posted', n, 0, '{}', '{}', at, at,
       false
  FROM seed;
INSERT INTO entries (account_id, transfer_id, direction, amount, balance_after, sequence,
                     posted_at)
SELECT %(source)s, transfer_id, 'debit', n, n * (n + 1) / 2, n + 1, at FROM seed
UNION ALL
SELECT account_id, transfer_id, 'credit', n, n, 2, at FROM seed;
UPDATE accounts SET posted_debits = %(hi)s::bigint * (%(hi)s + 1) / 2, version = %(hi)s::bigint + 1,
                    updated_at = %(base)s::timestamptz + %(hi)s * interval '1 millisecond'
 WHERE id = %(source)s;
"""


def create_source(url: str) -> uuid.UUID:
    source = uuid.uuid4()
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO accounts (id, code, currency, normal_balance, min_balance, status,"
            " metadata, metadata_text, version, posted_debits, posted_credits, pending_debits,"
            " pending_credits, created_at, updated_at) VALUES (%s, 'rb:source', %s, 'debit',"
            " NULL, 'active', '{}', '{}', 1, 0, 0, 0, 0, %s, %s)",
            (source, CURRENCY, BASE, BASE),
        )
    return source


def seed_accounts(url: str, source: uuid.UUID, lo: int, hi: int) -> None:
    """Accounts lo..hi (credit-normal, account n funded with n from the source)."""
    with psycopg.connect(url) as conn:
        values = {"lo": lo, "hi": hi, "base": BASE, "currency": CURRENCY, "source": source}
        for statement in _SEED.split(";"):
            if statement.strip():  # one transaction: the temporary table lives until commit
                conn.execute(statement.encode(), values)
        conn.execute("ANALYZE accounts")
        conn.execute("ANALYZE entries")


def instant(n: int) -> dt.datetime:
    """The instant right after account n was funded."""
    return BASE + dt.timedelta(milliseconds=n)


async def median_ms(work: Callable[[], Awaitable[Any]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


Run = Callable[[Callable[[Any], Awaitable[Any]]], Awaitable[Any]]


async def measure(args: argparse.Namespace, url: str) -> list[dict[str, Any]]:
    migrate.upgrade(url)
    source = create_source(url)
    engine = create_engine(Settings(database_url=url), pool_size=2)
    sessions = create_sessionmaker(engine)
    results: list[dict[str, Any]] = []

    def run(work: Callable[[Any], Awaitable[Any]]) -> Awaitable[Any]:
        return run_in_transaction(sessions, work)

    try:
        seeded = 0
        for size in args.trial_sizes:
            seed_accounts(url, source, seeded + 1, size)
            seeded = size
            results.append(await trial_balance_row(run, size, args.repeat))
            print(json.dumps(results[-1]), flush=True)
        ctx = WriteContext(actor=Actor.cli())
        body = CategoryCreate(code="rb:category", currency=CURRENCY, normal_balance="credit")
        category = (await run(lambda s: categories.create_category(s, body, ctx))).category
        members = 0
        for size in args.category_sizes:
            _add_members(url, category.id, members + 1, size)
            members = size
            row = await category_row(run, category.id, size, args.repeat)
            results.append({**row, "ledger_accounts": seeded + 1})
            print(json.dumps(results[-1]), flush=True)
        # The seed is a ledger like any other: every rule `ledger verify` checks holds.
        violations = await run(find_violations)
        results.append({"report": "verify", "violations": len(violations)})
        print(json.dumps(results[-1]), flush=True)
    finally:
        await engine.dispose()
    return results


async def trial_balance_row(run: Run, size: int, repeat: int) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    past = instant(size // 2)
    report = await run(lambda s: reports.trial_balance(s, CURRENCY, None, now))

    async def current() -> Any:
        return await run(lambda s: reports.trial_balance(s, CURRENCY, None, now))

    async def as_of() -> Any:
        return await run(lambda s: reports.trial_balance(s, CURRENCY, past, now))

    return {
        "report": "trial_balance",
        "accounts": size + 1,
        "now_ms": await median_ms(current, repeat),
        "as_of_ms": await median_ms(as_of, repeat),
        "json_encode_ms": await _encode_ms(lambda: msgspec.json.encode(report), repeat),
        "csv_encode_ms": await _encode_ms(lambda: trial_balance_csv(report), repeat),
        "balanced": report.total_debit == report.total_credit,
    }


async def category_row(run: Run, category_id: uuid.UUID, size: int, repeat: int) -> dict[str, Any]:
    past = instant(size // 2)

    async def current() -> Any:
        return await run(lambda s: categories.balance(s, category_id, None))

    async def as_of() -> Any:
        return await run(lambda s: categories.balance(s, category_id, past))

    return {
        "report": "category_balance",
        "members": size,
        "now_ms": await median_ms(current, repeat),
        "as_of_ms": await median_ms(as_of, repeat),
    }


async def _encode_ms(work: Callable[[], Any], repeat: int) -> float:
    async def once() -> None:
        work()

    return await median_ms(once, repeat)


def _add_members(url: str, category_id: uuid.UUID, lo: int, hi: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO category_accounts (category_id, account_id, created_at)"
            " SELECT %s, id, now() FROM accounts WHERE code = ANY(%s)",
            (category_id, [f"rb:{n}" for n in range(lo, hi + 1)]),
        )
        conn.execute("ANALYZE category_accounts")


def _sizes(text: str) -> list[int]:
    return sorted(int(part) for part in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=None, help="an empty database (default: own)")
    parser.add_argument("--trial-sizes", type=_sizes, default=_sizes("10000,25000,50000,100000"))
    parser.add_argument("--category-sizes", type=_sizes, default=_sizes("1000,2500,5000,10000"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.category_sizes[-1] > args.trial_sizes[-1]:
        parser.error("a category cannot hold more accounts than the ledger has")
    if args.database_url:
        asyncio.run(measure(args, args.database_url))
        return 0
    with tempfile.TemporaryDirectory(prefix="ledger-reporting-") as scratch:
        server = EmbeddedPostgres(Path(scratch), fast_unsafe=True).start()
        try:
            with psycopg.connect(server.url(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE reporting")
            asyncio.run(measure(args, server.url("reporting")))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
