"""What the bench observes around the load besides its own answers: CPU per component and lags.

`Observer.start()` runs just before the first request and `stop()` just after the last answer;
`report()` then waits for the worker to catch up with that window and returns the JSON fields:
`<component>_cpu_ms_per_transfer` for client, api, worker and db (those it could see), and
`event_lag_p99_ms` / `seal_lag_p99_ms` with their backlogs, and `wal_bytes_per_transfer`
(ledger/bench/wal.py), when it has a database URL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ledger.bench import cpu
from ledger.bench.lag import db_clock, measure_lags
from ledger.bench.options import BenchOptions
from ledger.bench.wal import drained_lsn, lsn_text

LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})


def _is_local(database_url: str) -> bool:
    host = str(conninfo_to_dict(database_url).get("host") or "")
    return host in LOCAL_HOSTS or host.startswith("/")


class Observer:
    def __init__(self, options: BenchOptions) -> None:
        self.options = options
        self.roots: dict[str, tuple[int, ...]] = {
            "api": options.api_pids,
            "worker": options.worker_pids,
            "db": options.db_pids,
        }
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._window: tuple[dt.datetime, dt.datetime | None] | None = None
        self._before: cpu.CpuSnapshot | None = None
        self._spent: dict[str, float] = {}
        self._wal_before: int | None = None

    async def start(self) -> None:
        url = self.options.database_url
        if url:
            lsn, drained = await drained_lsn(url)
            self._wal_before = lsn if drained else None
            self._conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            if not self.roots["db"] and _is_local(url):
                postmaster = cpu.postmaster_of(self._conn.info.backend_pid)
                self.roots["db"] = (postmaster,) if postmaster is not None else ()
            self._window = (await db_clock(self._conn), None)
        self._before = cpu.snapshot(self.roots)

    async def stop(self) -> None:
        if self._before is not None:
            self._spent = cpu.cpu_seconds(self._before, cpu.snapshot(self.roots))
        if self._conn is not None and self._window is not None:
            self._window = (self._window[0], await db_clock(self._conn))
            await self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def report(self, transfers: int) -> dict[str, Any]:
        fields: dict[str, Any] = dict(cpu.per_transfer_ms(self._spent, transfers))
        url = self.options.database_url
        if url and self._window is not None and self._window[1] is not None:
            fields.update(await measure_lags(url, self._window[0], self._window[1]))
        if url and self._wal_before is not None:
            lsn, drained = await drained_lsn(url)
            fields["wal_bytes_per_transfer"] = (
                round((lsn - self._wal_before) / transfers) if drained and transfers else None
            )
            fields["wal_drained"] = drained
            # For pg_waldump --start/--end: what the figure covers, record by record.
            fields["wal_lsn_range"] = [lsn_text(self._wal_before), lsn_text(lsn)]
        return fields
