"""What the insider tests share: the service's database role writing forged rows, the alarm's
three signs (verify, metric, log line), and checkpoints held to roots computed independently
from the records the API answers (RFC 9162, tests/merkle_rfc9162.py: no service code)."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import httpx
import psycopg
import pytest

from observability import metrics
from tests import merkle_rfc9162 as rfc
from tests.audit_merkle_helpers import audit_items, independent_leaf_hash


def forge_node(db: psycopg.Connection[Any], level: int, idx: int, label: str) -> bytes:
    """Insert a node as anyone with the service's role can: a plain INSERT."""
    forged = hashlib.sha256(f"forged {label}".encode()).digest()
    db.execute(
        "INSERT INTO audit_tree_nodes (level, idx, hash) VALUES (%s, %s, %s)",
        (level, idx, forged),
    )
    return forged


def change_node(db: psycopg.Connection[Any], level: int, idx: int) -> None:
    """Overwrite a stored node as the tables' owner can (it may switch its own triggers off):
    the service's role runs the migrations, so it owns them."""
    db.execute("ALTER TABLE audit_tree_nodes DISABLE TRIGGER audit_tree_nodes_append_only")
    try:
        db.execute(
            "UPDATE audit_tree_nodes SET hash = sha256(hash) WHERE level = %s AND idx = %s",
            (level, idx),
        )
    finally:
        db.execute("ALTER TABLE audit_tree_nodes ENABLE TRIGGER audit_tree_nodes_append_only")


def head_seq(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT coalesce(max(seq), 0) FROM audit_seals").fetchone()
    return int(row[0]) if row else 0


def record_count(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM audit_records").fetchone()
    return int(row[0]) if row else 0


def checkpoint_rows(db: psycopg.Connection[Any]) -> list[tuple[int, str]]:
    rows = db.execute("SELECT tree_size, root_hash FROM audit_checkpoints ORDER BY tree_size")
    return [(int(size), str(root)) for size, root in rows.fetchall()]


async def independent_roots(client: httpx.AsyncClient) -> list[bytes]:
    """Leaf hashes of every record in seal order, from what `GET /v1/audit` answers."""
    return [independent_leaf_hash(item) for item in await audit_items(client)]


async def assert_only_records_signed(
    client: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> list[tuple[int, str]]:
    """Every checkpoint the database holds has the root the records give at its size (a forged
    leaf or node under any of them would change it), and no size beyond the records."""
    leaves = await independent_roots(client)
    rows = checkpoint_rows(db)
    for size, root in rows:
        assert size <= len(leaves), f"a checkpoint of {size} leaves, {len(leaves)} records"
        assert root == rfc.mth(leaves[:size]).hex(), f"checkpoint {size} signed a forged root"
    return rows


async def verify_http(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/v1/audit/verify")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def disagreements(problem: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "ledger_audit_tree_disagreements_total", {"problem": problem}
    )
    return value or 0.0


def halted() -> float:
    return metrics.REGISTRY.get_sample_value("ledger_audit_signing_halted") or 0.0


def alarm_lines(caplog: pytest.LogCaptureFixture, problem: str) -> list[dict[str, Any]]:
    found = []
    for record in caplog.records:
        if record.levelno < logging.ERROR or not isinstance(record.msg, dict):
            continue
        line = record.msg
        if line.get("event") == "audit.tree_disagreement" and line.get("problem") == problem:
            found.append(json.loads(json.dumps(line, default=str)))
    return found
