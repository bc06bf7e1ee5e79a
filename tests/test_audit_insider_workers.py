"""The insider cases against real `ledger worker` processes (contract 9.1).

1. Forged tree nodes of each kind written while a worker runs: its checkpoints only ever cover
   the records (roots checked independently), its own /metrics and log report the alarm, and it
   signs again by itself once it rebuilt the tree from the records.
2. Checkpoint rows inserted with junk signatures, or signed by a key nobody configured: no file
   gets one, genuine checkpoints after them still reach every file, the API never lists one,
   and `GET /v1/audit/verify` names them. Two workers with two files: each file is whole.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from ledger.audit.signing import Checkpoint, Signer, checkpoint_from, generate_key, load_signer
from ledger.core.settings import Settings
from tests import merkle_rfc9162 as rfc
from tests.audit_insider_helpers import (
    assert_only_records_signed,
    change_node,
    checkpoint_rows,
    forge_node,
    head_seq,
    independent_roots,
    record_count,
    verify_http,
)
from tests.audit_merkle_helpers import batch_of_transfers, funded_accounts, session_keys
from tests.processes import ledger_env, stop
from tests.test_metrics_worker import _free_port

DEADLINE_SECONDS = 90.0  # a bound on waiting for real processes, never a timing assert


def _start_worker(db_url: str, file: Path, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    env = ledger_env(db_url, LEDGER_AUDIT_CHECKPOINT_FILE=str(file), **extra)
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )


def _file_sizes(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["tree_size"] for line in path.read_text().splitlines() if line]


async def _wait(what: str, check: Any, workers: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():
        for worker in workers:
            assert worker.poll() is None, f"a worker exited ({worker.returncode})"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.2)


def _in_all(files: list[Path], size: int) -> bool:
    return all(size in _file_sizes(f) for f in files)


def _scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


def _counted(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_worker_never_signs_forged_nodes_and_resumes_after_rebuilding(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    db_url = settings.database_url or ""
    file, log, port = tmp_path / "checkpoints.jsonl", tmp_path / "worker.log", _free_port()
    worker = _start_worker(db_url, file, log, LEDGER_METRICS_PORT=str(port))
    try:
        source, target = await funded_accounts(client)
        await batch_of_transfers(client, source, target, 9)
        records = record_count(sync_db)
        await _wait("a first checkpoint", lambda: records in _file_sizes(file), [worker])

        head = head_seq(sync_db)
        forge_node(sync_db, 0, head, "leaf past the head")
        forge_node(sync_db, 0, 2**41, "far index")
        change_node(sync_db, head.bit_length() - 1, 0)  # the edge's largest subtree
        await batch_of_transfers(client, source, target, 5)
        records = record_count(sync_db)
        await _wait("a checkpoint of every record", lambda: records in _file_sizes(file), [worker])

        metrics_text = _scrape(port)
        assert _counted(metrics_text, "ledger_audit_tree_disagreements_total") >= 1
        assert "ledger_audit_signing_halted 0.0" in metrics_text  # signing resumed
        alarms = [json.loads(x) for x in log.read_text().splitlines() if "disagreement" in x]
        assert {a["problem"] for a in alarms} & {"tree_node", "tree_beyond_head"}, alarms
        assert all(a["level"] == "error" for a in alarms)
        await assert_only_records_signed(client, sync_db)
        leaves_signed = {size for size, _ in checkpoint_rows(sync_db)}
        assert set(_file_sizes(file)) <= leaves_signed
        assert (await verify_http(client))["ok"] is True
    finally:
        stop(worker)


def _junk(row: dict[str, Any], size: int, how: str, other: Signer) -> dict[str, Any]:
    """A checkpoint row as the role can insert it: a genuine one's signature on another size,
    or a real signature by a key nobody configured."""
    if how == "copied signature":
        return {**row, "tree_size": size}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    made = other.sign(size, row["root_hash"], stamp, "ledger/audit")
    return {
        "tree_size": size,
        "root_hash": made.root_hash,
        "timestamp": made.timestamp,
        "key_id": made.key_id,
        "signature": made.signature,
        "origin": made.origin,
        "note_signature": made.note_signature,
    }


def _insert_row(db: psycopg.Connection[Any], row: dict[str, Any]) -> None:
    db.execute(
        "INSERT INTO audit_checkpoints (tree_size, root_hash, timestamp, key_id, signature, "
        "origin, note_signature) VALUES (%(tree_size)s, %(root_hash)s, %(timestamp)s, "
        "%(key_id)s, %(signature)s, %(origin)s, %(note_signature)s)",
        row,
    )


async def test_only_signed_checkpoints_reach_every_file_and_each_file_is_whole(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    db_url = settings.database_url or ""
    files = [tmp_path / "a" / "checkpoints.jsonl", tmp_path / "b" / "checkpoints.jsonl"]
    ports = [_free_port(), _free_port()]
    other_path = tmp_path / "other.pem"
    generate_key(other_path)
    other = load_signer(str(other_path))
    workers = [
        _start_worker(db_url, f, tmp_path / f"worker{i}.log", LEDGER_METRICS_PORT=str(p))
        for i, (f, p) in enumerate(zip(files, ports, strict=True))
    ]
    try:
        source, target = await funded_accounts(client)
        records = record_count(sync_db)
        await _wait(
            "a first checkpoint", lambda: all(records in _file_sizes(f) for f in files), workers
        )
        with sync_db.cursor(row_factory=dict_row) as cur:
            genuine = cur.execute(
                "SELECT * FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1"
            ).fetchone()
        assert genuine is not None
        # Junk where the sealer will sign next (the batch below makes 6 records), on the sizes
        # between, and far past the head: none may reach a file or stop the genuine ones.
        for size, how in [
            (records + 6, "copied signature"),
            (records + 2, "copied signature"),
            (records + 3, "other key"),
            (records + 10**9, "other key"),
        ]:
            _insert_row(sync_db, _junk(genuine, size, how, other))
        for count in (6, 3, 2):
            await batch_of_transfers(client, source, target, count)
            records = record_count(sync_db)
            await _wait(
                f"a checkpoint of {records} records in both files",
                lambda size=records: _in_all(files, size),
                workers,
            )

        signed = await _genuine_sizes(client, sync_db)
        for path in files:
            lines = [json.loads(x) for x in path.read_text().splitlines()]
            assert [c["tree_size"] for c in lines] == signed  # every one, oldest first
            assert all(session_keys().problem(checkpoint_from(c)) is None for c in lines)
            assert all(c["note"].startswith("ledger/audit\n") for c in lines)
        listed = (await client.get("/v1/audit/checkpoints", params={"limit": 1000})).json()
        assert sorted(c["tree_size"] for c in listed["data"]) == signed
        latest = (await client.get("/v1/audit/checkpoints/latest")).json()
        assert latest["tree_size"] == max(signed)
        report = await verify_http(client)
        assert report["ok"] is False and report["problem"] == "checkpoint_signature", report
        counted = sum(_counted(_scrape(p), "ledger_audit_checkpoints_refused_total") for p in ports)
        assert counted >= 1
    finally:
        for worker in workers:
            stop(worker)


async def _genuine_sizes(client: httpx.AsyncClient, db: psycopg.Connection[Any]) -> list[int]:
    """The sizes of the database's rows the session key signed (the others are the junk),
    oldest first, each with the root an independent computation over the records gives."""
    keys = session_keys()
    with db.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT tree_size, root_hash, timestamp, key_id, signature, origin, note_signature "
            "FROM audit_checkpoints ORDER BY tree_size"
        ).fetchall()
    genuine = [Checkpoint(**row) for row in rows]
    genuine = [c for c in genuine if keys.problem(c) is None]
    assert len(genuine) >= 4
    leaves = await independent_roots(client)
    for checkpoint in genuine:
        assert checkpoint.root_hash == rfc.mth(leaves[: checkpoint.tree_size]).hex()
    return [c.tree_size for c in genuine]
