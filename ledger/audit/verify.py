"""`ledger audit verify` and `GET /v1/audit/verify`: recompute the chain, name the first bad record.

Rules, in the order they are checked (docs/audit.md says why):
1. Seals run 1, 2, 3, ... with no gap (a deleted seal breaks this).
2. Each seal's `prev_hash` is the previous seal's `hash` (64 zeros for seal 1).
3. Each seal's record exists (a deleted record breaks this; its id is still in the seal).
4. Each seal's `hash` is SHA-256 over the canonical record, the seal's seq, time, prev_hash and
   pass facts (an edited record or seal breaks this). Once seals carry pass facts (migration
   0007), every later seal must too.
5. No record's transaction began after a sealer pass that ran more than the grace period after
   the record's `at`. A genuine write's transaction has its id within moments of its `at` (it
   takes its id with its first write or row lock), so a record whose transaction did not exist
   yet long after its time was put in behind the service's back. How late a record was *sealed*
   says nothing: an outage, a backlog, a pass cut short or a transaction that waits all seal
   genuine records late, and none of them is an alarm.
6. After the chain, no unsealed record is one the sealer can never have missed: its transaction
   ended before a pass that scanned to the end (the chain head's `horizon_xid`), or it fails
   rule 5. Other unsealed records are only counted: they wait for the next pass.
7. Then the Merkle tree, recomputed from the records (ledger/audit/tree_walk.py): every stored
   node is the one the records give, none covers a leaf past the chain, every checkpoint row's
   signatures hold under the configured public keys, and each genuine one's root is the root
   the records give at its size. `problem` names the kind of the first disagreement.

The hashing is CPU work: each page is checked in a worker thread, so an API process keeps
answering other requests meanwhile (the database reads are awaited on the loop as usual).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ledger.audit import chain
from ledger.audit import repository as repo
from ledger.audit.keys import Keyring
from ledger.audit.tree_walk import verify_tree
from ledger.core import limits


@dataclass(slots=True)
class VerifyReport:
    ok: bool
    checked: int
    unsealed: int
    first_invalid_id: uuid.UUID | None = None
    reason: str | None = None
    head_seq: int = 0
    head_hash: str = chain.GENESIS_HASH
    problem: str | None = None  # "chain", or the tree's (tree_walk.PROBLEMS)


@dataclass(slots=True)
class _Walk:
    """The state carried from one seal to the next."""

    grace: dt.timedelta
    expected_seq: int = 1
    prev_hash: str = chain.GENESIS_HASH
    checked: int = 0
    head_facts: chain.PassFacts | None = None  # the last good seal's, once seals carry them


async def verify_chain(
    ex: repo.Executor,
    *,
    grace_seconds: float | None = None,
    batch_size: int | None = None,
    keys: Keyring | None = None,
) -> VerifyReport:
    """Check the whole trail in one read-only snapshot. Must be the first work of its transaction
    (it sets the isolation level). Defaults: limits.AUDIT_INSERTION_GRACE_SECONDS and
    limits.AUDIT_VERIFY_BATCH_SIZE, read when called. Without `keys`, checkpoint rows are not
    checked (nothing to check them with); the stored tree still is."""
    grace = dt.timedelta(
        seconds=limits.AUDIT_INSERTION_GRACE_SECONDS if grace_seconds is None else grace_seconds
    )
    page_size = limits.AUDIT_VERIFY_BATCH_SIZE if batch_size is None else batch_size
    await repo.use_snapshot(ex)
    walk = _Walk(grace=grace)
    failure: tuple[uuid.UUID, str] | None = None
    while failure is None:
        rows = await repo.seals_with_records(
            ex, after_seq=walk.expected_seq - 1, limit=page_size, grace=grace
        )
        failure = await asyncio.to_thread(_check_page, walk, rows)
        if len(rows) < page_size:
            break
    unsealed = await repo.unsealed_count(ex)
    if failure is None and unsealed:
        failure = await _check_unsealed(ex, walk)
    report = VerifyReport(
        ok=failure is None,
        checked=walk.checked,
        unsealed=unsealed,
        head_seq=walk.expected_seq - 1,
        head_hash=walk.prev_hash,
    )
    if failure is not None:
        report.first_invalid_id, report.reason = failure
        report.problem = "chain"
        return report
    tree = await verify_tree(
        ex, keys, page_size=page_size, scan_max=limits.AUDIT_CHECKPOINT_SCAN_MAX
    )
    if tree is not None:
        report.ok, report.reason, report.problem = False, tree.detail, tree.code
    return report


def _check_page(walk: _Walk, rows: Sequence[sa.Row[Any]]) -> tuple[uuid.UUID, str] | None:
    """Runs in a worker thread; the loop awaits it, so nothing else touches `walk` meanwhile."""
    for row in rows:
        failure = _check_seal(walk, row)
        if failure is not None:
            return failure
    return None


def _check_seal(walk: _Walk, row: sa.Row[Any]) -> tuple[uuid.UUID, str] | None:
    seq, record_id = row.seal_seq, row.seal_record_id
    if seq != walk.expected_seq:
        return record_id, f"seal {walk.expected_seq} is missing (next seal is {seq})"
    if row.seal_prev_hash != walk.prev_hash:
        return record_id, f"seal {seq} does not follow seal {seq - 1} (prev_hash differs)"
    if row.id is None:
        return record_id, f"record {record_id} of seal {seq} was deleted"
    facts = repo.seal_facts(row)
    record = chain.canonical_record(row)
    digest = chain.seal_hash(seq, walk.prev_hash, row.seal_sealed_at, record, facts)
    if digest != row.seal_hash or (facts is None and walk.head_facts is not None):
        return record_id, f"record {record_id} or its seal {seq} was changed after sealing"
    if row.data_text_matches is False:
        return record_id, f"record {record_id}'s data as answered was changed after sealing"
    if row.witnessed_at is not None and row.at + walk.grace < row.witnessed_at:
        return record_id, (
            f"record {record_id} (written {chain.format_timestamp(row.at)}) was sealed after a "
            f"sealer pass at {chain.format_timestamp(row.witnessed_at)} that ran before its "
            f"transaction {row.xact_id} began: inserted behind the service's back"
        )
    walk.checked += 1
    walk.expected_seq = seq + 1
    walk.prev_hash = row.seal_hash
    walk.head_facts = facts or walk.head_facts
    return None


async def _check_unsealed(ex: repo.Executor, walk: _Walk) -> tuple[uuid.UUID, str] | None:
    latest = await repo.latest_sealed_at(ex)
    if latest is None:
        return None  # nothing sealed yet: the sealer has not run, which is not tampering
    horizon = None if walk.head_facts is None else walk.head_facts.horizon_xid
    if horizon is not None and horizon > (await repo.snapshot_bounds(ex))[1]:
        # Ids of another cluster (the chain came by dump and restore): the horizon says nothing
        # about this database's transactions until its sealer has sealed one of them.
        horizon = None
    suspect = await repo.first_inserted_unsealed(
        ex, horizon_xid=horizon, latest_sealed_at=latest, grace=walk.grace
    )
    if suspect is None:
        return None
    if horizon is not None and suspect.xact_id < horizon:
        return suspect.id, (
            f"record {suspect.id} is unsealed although its transaction {suspect.xact_id} had "
            "ended before a sealer pass that sealed every record of that age: inserted behind "
            "the service's back"
        )
    witnessed = "" if suspect.witnessed_at is None else chain.format_timestamp(suspect.witnessed_at)
    return suspect.id, (
        f"record {suspect.id} (written {chain.format_timestamp(suspect.at)}) is unsealed, and "
        f"its transaction {suspect.xact_id} began after a sealer pass at {witnessed}: inserted "
        "behind the service's back"
    )
