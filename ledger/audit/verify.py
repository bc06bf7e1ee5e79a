"""`ledger audit verify` and `GET /v1/audit/verify`: recompute the chain, name the first bad record.

Rules, in the order they are checked (docs/audit.md says why):
1. Seals run 1, 2, 3, ... with no gap (a deleted seal breaks this).
2. Each seal's `prev_hash` is the previous seal's `hash` (64 zeros for seal 1).
3. Each seal's record exists (a deleted record breaks this; its id is still in the seal).
4. Each seal's `hash` is SHA-256 over the canonical record, the seal's seq, time and prev_hash
   (an edited record or seal breaks this).
5. No record was sealed late: if an earlier sealer pass ran more than the grace period after a
   record was written, that record could not have been waiting to commit all along; it was put
   in behind the service's back (a forged insertion, later sealed by an unsuspecting sealer).
6. No record is left unsealed for longer than the grace period while the sealer was sealing
   records after it: same reasoning, for a forged insertion the sealer has not reached yet.
Records unsealed for less than that are counted in `unsealed` and are not an error: they are
waiting for the next pass (or for a stopped worker).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ledger.audit import chain
from ledger.audit import repository as repo
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


@dataclass(slots=True)
class _Walk:
    """The state carried from one seal to the next."""

    expected_seq: int = 1
    prev_hash: str = chain.GENESIS_HASH
    checked: int = 0
    pass_at: dt.datetime | None = None  # sealed_at of the pass the previous seal belongs to
    earlier_pass_at: dt.datetime | None = None  # latest sealed_at of any pass before that one


async def verify_chain(
    ex: repo.Executor,
    *,
    grace_seconds: float = limits.AUDIT_SEAL_GRACE_SECONDS,
    batch_size: int = limits.AUDIT_VERIFY_BATCH_SIZE,
) -> VerifyReport:
    """Check the whole trail in one read-only snapshot. Must be the first work of its transaction
    (it sets the isolation level)."""
    grace = dt.timedelta(seconds=grace_seconds)
    await repo.use_snapshot(ex)
    walk = _Walk()
    failure: tuple[uuid.UUID, str] | None = None
    while failure is None:
        rows = await repo.seals_with_records(ex, after_seq=walk.expected_seq - 1, limit=batch_size)
        for row in rows:
            failure = _check_seal(walk, row, grace)
            if failure is not None:
                break
        if len(rows) < batch_size:
            break
    unsealed = await repo.unsealed_count(ex)
    if failure is None and unsealed:
        failure = await _check_unsealed(ex, grace)
    report = VerifyReport(
        ok=failure is None,
        checked=walk.checked,
        unsealed=unsealed,
        head_seq=walk.expected_seq - 1,
        head_hash=walk.prev_hash,
    )
    if failure is not None:
        report.first_invalid_id, report.reason = failure
    return report


def _check_seal(walk: _Walk, row: sa.Row[Any], grace: dt.timedelta) -> tuple[uuid.UUID, str] | None:
    seq, record_id = row.seal_seq, row.seal_record_id
    if seq != walk.expected_seq:
        return record_id, f"seal {walk.expected_seq} is missing (next seal is {seq})"
    if row.seal_prev_hash != walk.prev_hash:
        return record_id, f"seal {seq} does not follow seal {seq - 1} (prev_hash differs)"
    if row.id is None:
        return record_id, f"record {record_id} of seal {seq} was deleted"
    record = chain.canonical_record(row)
    if chain.seal_hash(seq, walk.prev_hash, row.seal_sealed_at, record) != row.seal_hash:
        return record_id, f"record {record_id} or its seal {seq} was changed after sealing"
    if row.seal_sealed_at != walk.pass_at:
        if walk.pass_at is not None and (
            walk.earlier_pass_at is None or walk.pass_at > walk.earlier_pass_at
        ):
            walk.earlier_pass_at = walk.pass_at
        walk.pass_at = row.seal_sealed_at
    if walk.earlier_pass_at is not None and row.at + grace < walk.earlier_pass_at:
        return record_id, (
            f"record {record_id} (written {chain.format_timestamp(row.at)}) was sealed after a "
            f"sealer pass at {chain.format_timestamp(walk.earlier_pass_at)} had missed it: "
            "inserted behind the service's back"
        )
    walk.checked += 1
    walk.expected_seq = seq + 1
    walk.prev_hash = row.seal_hash
    return None


async def _check_unsealed(ex: repo.Executor, grace: dt.timedelta) -> tuple[uuid.UUID, str] | None:
    latest = await repo.latest_sealed_at(ex)
    if latest is None:
        return None  # nothing sealed yet: the sealer has not run, which is not tampering
    suspect = await repo.first_unsealed_before(ex, latest - grace)
    if suspect is None:
        return None
    return suspect, (
        f"record {suspect} is unsealed although the sealer sealed records until "
        f"{chain.format_timestamp(latest)}, long after it was written: inserted behind the "
        "service's back"
    )
