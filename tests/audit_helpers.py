"""Helpers the audit tests share: read records straight from PostgreSQL, seal, run the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ledger.audit.sealer import AuditSealer
from ledger.core.db import create_engine
from ledger.core.settings import Settings
from tests.processes import ledger_env

LEDGER = str(Path(sys.executable).with_name("ledger"))
CLI_TIMEOUT_SECONDS = 60


def records(conn: psycopg.Connection[Any], after_seq: int = 0) -> list[dict[str, Any]]:
    """Every column of the records after `after_seq`; `data` is the record's data whichever
    column keeps it (`data_text` alone since migration 0027)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT *, coalesce(data, data_text::jsonb) AS data_either FROM audit_records"
            " WHERE seq > %s ORDER BY seq",
            (after_seq,),
        )
        rows = cur.fetchall()
    for row in rows:
        row["data"] = row.pop("data_either")
    return rows


def last_seq(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM audit_records").fetchone()
    return int(row[0]) if row else 0


async def seal_all(settings: Settings) -> int:
    """Run sealer passes in this process until one seals nothing; returns how many it sealed."""
    engine = create_engine(settings, pool_size=1)
    sealer = AuditSealer(engine)
    total = 0
    try:
        while True:
            done = await sealer.step()
            total += done
            if not done:
                return total
    finally:
        await sealer.close()
        await engine.dispose()


def cli_env(db_url: str, **extra: str) -> dict[str, str]:
    return ledger_env(db_url, **extra)


def run_cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEDGER, *args],
        env=cli_env(db_url),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )
