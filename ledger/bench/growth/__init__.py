"""`ledger bench --growth SIZES`: the same reads timed on a ledger of each size in turn.

A run: create the accounts and fund them (the existing bench's setup, with its "hot" account
as the busy one), make a category, sign in to the console, wait for the worker; then for each
size: fill through the batch API (`fill.py`), wait until the worker has published, sealed and
checkpointed everything, read what it cost (`storage.py`), time every read (`catalogue.py`,
`reads.py`) and `ledger verify` (`verify.py`). The report (`table.py`) gives each read's
ratio to its time at the first size and flags those beyond 2x.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx
import psycopg

from ledger.bench import run_async
from ledger.bench.growth import catalogue, storage
from ledger.bench.growth.fill import Filler, FillLog, count_transfers
from ledger.bench.growth.options import BUSY_PERCENT, GrowthOptions, parse_sizes
from ledger.bench.growth.reads import Read, time_read
from ledger.bench.growth.table import add_ratios, render
from ledger.bench.growth.verify import has_since_last, verify
from ledger.bench.http import open_client, post_setup
from ledger.bench.load import open_load_session
from ledger.bench.options import BenchOptions
from ledger.bench.setup import BenchLedger, prepare_ledger
from ledger.core.errors import BenchAborted, ConfigurationError

__all__ = ["GrowthOptions", "parse_sizes", "render", "run_growth"]

CATEGORY_MEMBERS_MAX = 100  # customers in the category, with the busy account


def run_growth(options: GrowthOptions) -> dict[str, Any]:
    options.check()
    return run_async(_measure(options))


def _bench_options(options: GrowthOptions) -> BenchOptions:
    """The existing bench's setup: N funded customers and one "hot" account, the busy one."""
    return BenchOptions(
        url=options.url,
        key=options.key,
        accounts=options.accounts,
        clients=options.clients,
        duration_s=1.0,
        hot=True,
        seed=options.seed,
        currency=options.currency,
    )


async def _category(http: httpx.AsyncClient, ledger: BenchLedger) -> tuple[str, int]:
    body = {
        "code": f"bench.{ledger.run_id}.category",
        "currency": ledger.currency,
        "normal_balance": "credit",
    }
    category = await post_setup(http, "/v1/categories", body, expect=201)
    category_id = str(category["id"])
    members = ledger.account_ids[: min(CATEGORY_MEMBERS_MAX, ledger.customers)]
    if ledger.hot_index is not None:
        members = [*members, ledger.account_ids[ledger.hot_index]]
    for account_id in members:
        response = await http.put(f"/v1/categories/{category_id}/accounts/{account_id}")
        if response.status_code != 201:
            raise BenchAborted(f"adding a category member answered {response.status_code}")
    return category_id, len(members)


async def _measure(options: GrowthOptions) -> dict[str, Any]:
    bench = _bench_options(options)
    async with (
        await psycopg.AsyncConnection.connect(options.database_url, autocommit=True) as conn,
        open_client(options.url, options.key, options.clients + 1) as http,
        open_load_session(bench) as session,
    ):
        held = await count_transfers(conn)
        if held + options.accounts >= options.sizes[0]:
            raise ConfigurationError(
                f"the ledger holds {held:,} transfers already: the first size must exceed that "
                "plus --accounts (a fresh database is best)"
            )
        started = await storage.db_clock(conn)
        # `ledger verify --help` is a process start: asked while the setup runs.
        offers_since_last = asyncio.create_task(has_since_last())
        ledger = await prepare_ledger(http, bench)
        category_id, members = await _category(http, ledger)
        cookies = await catalogue.console_cookies(http, options.key)
        await storage.drain(conn, started)
        incremental = await offers_since_last
        busy_id = ledger.account_ids[ledger.hot_index or 0]
        subject = catalogue.Subject(
            busy_id=busy_id,
            busy_code=f"bench.{ledger.run_id}.hot",
            category_id=category_id,
            members=members,
            accounts=options.accounts + 2,
            currency=options.currency,
        )
        log = FillLog()
        filler = Filler(ledger, options, session, log)
        steps = []
        first = await storage.footprint(conn)
        first_held = await count_transfers(conn)
        for size in options.sizes:
            step = await _step(options, conn, http, filler, subject, cookies, size, incremental)
            steps.append(step)
            _said(step)
        last = await storage.footprint(conn)
        filled = steps[-1]["transfers"] - first_held
        wal = await storage.wal_bytes(conn, first.wal_lsn, last.wal_lsn)
    flagged = add_ratios(steps)
    problems = [problem for step in steps for problem in step.pop("problems")]
    return {
        "mode": "growth",
        "sizes": list(options.sizes),
        "accounts": options.accounts,
        "busy_percent": BUSY_PERCENT,
        "batch": options.batch,
        "clients": options.clients,
        "repeat": options.repeat,
        "seed": options.seed,
        "verify_since_last_available": incremental,
        "steps": steps,
        "wal_bytes_per_transfer": round(wal / filled) if filled else 0,
        "disk_bytes_per_transfer": (
            round((last.database_bytes - first.database_bytes) / filled) if filled else 0
        ),
        "fill_refused": log.refused,
        "fill_errors": log.errors,
        "flagged": flagged,
        "problems": problems,
        "ok": not problems,
    }


def _said(step: dict[str, Any]) -> None:
    """Each size's figures on stderr as soon as they are known (`growth step: {...}`), so a long
    run can be followed and a run stopped part-way still leaves its smaller sizes."""
    sys.stderr.write(f"growth step: {json.dumps(step)}\n")
    sys.stderr.flush()


async def _step(
    options: GrowthOptions,
    conn: storage.Conn,
    http: httpx.AsyncClient,
    filler: Filler,
    subject: catalogue.Subject,
    cookies: str,
    size: int,
    incremental: bool,
) -> dict[str, Any]:
    """Fill to `size`, wait for the worker, then measure: bytes, lags, reads, verify."""
    problems: list[str] = []
    before = await storage.footprint(conn)
    held_before = await count_transfers(conn)
    window_start = await storage.db_clock(conn)
    clock = time.perf_counter()
    held = await filler.fill_to(conn, size)
    fill_s = time.perf_counter() - clock
    window_end = await storage.db_clock(conn)
    drain_s, backlog = await storage.drain(conn, window_start)
    after = await storage.footprint(conn)
    if held != size:
        problems.append(f"the ledger holds {held:,} transfers, not {size:,}")
    if backlog:
        problems.append(f"at {size:,}: the worker left {backlog} rows waiting")
    added = held - held_before
    bytes_ = await storage.per_transfer(conn, before, after, added)
    lags = await storage.lags(options.database_url, conn, window_start, window_end)
    mid = filler.log.instant_at(size // 2)
    transfer_id = filler.log.transfer_near(size // 2)
    if transfer_id is None:
        raise BenchAborted("the fill acknowledged no transfer")
    reads, deep = await catalogue.reads_for(
        http,
        subject,
        await catalogue.expected(conn, subject.busy_id, mid),
        mid,
        options.deep_page,
        await catalogue.proof_record(http, transfer_id),
        cookies,
    )
    timings = await _time_reads(reads, options.repeat, size, problems)
    verified = await verify(options.database_url, incremental)
    for key in ("verify_exit", "verify_since_last_exit"):
        if verified[key] not in (0, None):
            problems.append(
                f"ledger {key.removesuffix('_exit')} at {size:,} exited {verified[key]}"
            )
    return {
        "size": size,
        "transfers": held,
        "added": added,
        "fill_s": round(fill_s, 1),
        "transfers_per_s": round(added / fill_s, 1) if fill_s > 0 else None,
        "drain_s": round(drain_s, 1),
        "mid_instant": mid.isoformat(),
        "deep_page": deep,
        "reads": timings,
        **lags,
        **verified,
        "database_bytes": after.database_bytes,
        **bytes_,
        "problems": problems,
    }


async def _time_reads(
    reads: list[Read], repeat: int, size: int, problems: list[str]
) -> dict[str, dict[str, Any]]:
    timings: dict[str, dict[str, Any]] = {}
    for read in reads:
        timing = await time_read(read, repeat)
        entry: dict[str, Any] = {
            "p50_ms": timing.median_ms,
            "p99_ms": timing.p99_ms,
            "median_ms": timing.median_ms,
            "p90_ms": timing.p90_ms,
            "status": timing.status,
        }
        if timing.problem is not None:
            entry["problem"] = timing.problem
            problems.append(f"{read.name} at {size:,}: {timing.problem}")
        timings[read.name] = entry
    return timings
