"""`ledger bench --webhooks N`: N loopback receivers, each an endpoint subscribed to every event,
and how far behind the worker's webhook delivery ran (contract 9.2).

Between the setup and the load the bench starts N HTTP servers on 127.0.0.1 (aiohttp, in the
bench's process: their CPU is the client's) and registers each as an endpoint (`POST
/v1/webhooks`, an admin key; the service must run with LEDGER_WEBHOOK_ALLOW_HTTP and
LEDGER_WEBHOOK_ALLOW_PRIVATE, as for any loopback receiver). A receiver answers 204 at once and
records when each event arrived. After the load it waits until every receiver has every event
of the load window (counted in the database when the bench has its URL; else until nothing
arrives for LAG_STALL_SECONDS, at most LAG_DRAIN_SECONDS), then reports `webhook_lag_p99_ms`:
the 99th percentile, over every receiver, of arrival time minus the event's `time` (taken when
the API built it, a few ms before commit), `webhook_deliveries` (requests received for window
events, duplicates included) and `webhook_backlog` (window events some receiver still lacked).
The endpoints are deleted at the end. Signatures are not checked here (the tests check them).
With `--worker-pid`, `webhook_worker_cpu_ms` is the worker's CPU from the start of the load to
the end of that wait (relay and sealer included: compare with a run without webhooks; the
delivery child, `ledger webhook-delivery`, is counted as every descendant is).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import time
from typing import Any

import httpx
import msgspec
import psycopg
from aiohttp import web

from ledger.bench import cpu
from ledger.bench.http import post_setup
from ledger.bench.lag import LAG_DRAIN_SECONDS, LAG_POLL_SECONDS, LAG_STALL_SECONDS
from ledger.embedded import LOOPBACK


class _Head(msgspec.Struct):
    id: str
    time: dt.datetime


class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[tuple[str, dt.datetime, float]] = []  # (event id, time, arrived)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.time()
        try:
            head = msgspec.json.decode(body, type=_Head)
        except msgspec.DecodeError:
            return web.Response(status=400)
        self.arrivals.append((head.id, head.time, arrived))
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{LOOPBACK}:{port}/hook"
        return self.url

    def in_window(self, start: dt.datetime, end: dt.datetime) -> list[tuple[str, float]]:
        return [
            (event_id, arrived - at.timestamp())
            for event_id, at, arrived in self.arrivals
            if start <= at <= end
        ]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class BenchWebhooks:
    def __init__(self, count: int, worker_pids: tuple[int, ...] = ()) -> None:
        self.receivers = [Receiver() for _ in range(count)]
        self.endpoint_ids: list[str] = []
        self._roots = {"worker": worker_pids}
        self._before: cpu.CpuSnapshot | None = None

    def load_starts(self) -> None:
        self._before = cpu.snapshot(self._roots)

    async def start(self, http: httpx.AsyncClient) -> None:
        for receiver in self.receivers:
            url = await receiver.start()
            created = await post_setup(
                http, "/v1/webhooks", {"url": url, "description": "ledger bench"}, 201
            )
            self.endpoint_ids.append(str(created["id"]))

    async def report(
        self, start: dt.datetime, end: dt.datetime, database_url: str | None
    ) -> dict[str, Any]:
        expected = await _window_events(database_url, start, end)
        await self._drain(start, end, expected)
        worker_ms = None
        if self._before is not None and self._roots["worker"]:
            spent = cpu.cpu_seconds(self._before, cpu.snapshot(self._roots))
            worker_ms = round(spent.get("worker", 0.0) * 1000, 1)
        lags: list[float] = []
        seen: list[int] = []
        deliveries = 0
        for receiver in self.receivers:
            window = receiver.in_window(start, end)
            deliveries += len(window)
            seen.append(len({event_id for event_id, _ in window}))
            lags.extend(lag for _, lag in window)
        lags.sort()
        p99 = lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)] if lags else None
        return {
            "webhooks": len(self.receivers),
            "webhook_lag_p99_ms": None if p99 is None else round(p99 * 1000, 1),
            "webhook_deliveries": deliveries,
            "webhook_backlog": None if expected is None else max(expected - min(seen), 0),
            "webhook_worker_cpu_ms": worker_ms,
        }

    async def _drain(self, start: dt.datetime, end: dt.datetime, expected: int | None) -> None:
        deadline = time.monotonic() + LAG_DRAIN_SECONDS
        last = -1
        moved_at = time.monotonic()
        while time.monotonic() < deadline:
            counts = [len({e for e, _ in r.in_window(start, end)}) for r in self.receivers]
            if expected is not None and min(counts) >= expected:
                return
            if sum(counts) != last:
                last, moved_at = sum(counts), time.monotonic()
            elif time.monotonic() - moved_at >= LAG_STALL_SECONDS:
                return
            await asyncio.sleep(LAG_POLL_SECONDS)

    async def close(self, http: httpx.AsyncClient) -> None:
        for endpoint_id in self.endpoint_ids:
            # The service went away: nothing more is sent to a closed receiver anyway.
            with contextlib.suppress(httpx.HTTPError):
                await http.delete(f"/v1/webhooks/{endpoint_id}")
        for receiver in self.receivers:
            await receiver.close()


async def _window_events(
    database_url: str | None, start: dt.datetime, end: dt.datetime
) -> int | None:
    if not database_url:
        return None
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM outbox_events WHERE created_at >= %s AND created_at <= %s",
            (start, end),
        )
        row = await cursor.fetchone()
    return int(row[0]) if row is not None and isinstance(row[0], int) else None
