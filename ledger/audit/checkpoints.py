"""Checkpoints and proofs for reviewers: the latest signed checkpoint, inclusion and consistency
proofs (RFC 9162 2.1.3 and 2.1.4), and the chain's state for the console.

Every answer here reads O(log n) stored subtree hashes (ledger/audit/merkle.py), never the
trail itself. A checkpoint row is answered only when its signatures hold under the configured
public keys (ledger/audit/keys.py): a row anyone else inserted is skipped, never shown."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit import checkpoint_store as checkpoints
from ledger.audit import merkle
from ledger.audit import repository as repo
from ledger.audit import tree_store as store
from ledger.audit.keys import Keyring
from ledger.audit.signing import Checkpoint
from ledger.core import limits
from ledger.core.errors import (
    AuditCheckpointNotFound,
    AuditRecordNotFound,
    AuditRecordNotSealed,
    AuditTreeSizeUnavailable,
    ValidationFailed,
)


@dataclass(frozen=True, slots=True)
class InclusionProof:
    leaf_index: int
    tree_size: int
    leaf_hash: str
    audit_path: list[str]


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    first: int
    second: int
    proof: list[str]


@dataclass(frozen=True, slots=True)
class ChainState:
    """For the console: the newest checkpoint row; whether its signatures hold (with the key its
    `key_id` names, among the configured ones) AND the stored tree reproduces its root at its
    size (None: no checkpoint yet); how many records are sealed and how many wait.

    `unsealed` counts the records waiting for the sealer: unsealed records written at or after
    the chain head's horizon, among the newest AUDIT_CONSOLE_WAITING_EXAMINE_MAX of them
    (`unsealed_exact` False: more were written since, and the count is a lower bound). A record
    left unsealed behind the horizon was written behind the service's back: verify names it."""

    latest: Checkpoint | None
    latest_verified: bool | None
    sealed: int
    unsealed: int
    unsealed_exact: bool = True


def _unavailable(field: str, message: str) -> AuditTreeSizeUnavailable:
    return AuditTreeSizeUnavailable(
        f"{field}: {message}", errors=[{"field": field, "message": message}]
    )


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


@dataclass(frozen=True, slots=True)
class CheckpointPage:
    """Genuine checkpoints, newest first, and the size to continue below (None: no more)."""

    items: list[Checkpoint]
    next_before: int | None


async def list_checkpoints(
    session: AsyncSession, keys: Keyring, *, before_size: int | None, limit: int
) -> CheckpointPage:
    """Up to `limit` genuine checkpoints below `before_size`, newest first. Rows that do not
    verify are skipped; past AUDIT_CHECKPOINT_SCAN_MAX rows read the page ends short, with a
    cursor past what was read, so a flood of inserted rows costs each request a bound."""
    found: list[Checkpoint] = []
    scanned, before = 0, before_size
    while len(found) < limit and scanned < limits.AUDIT_CHECKPOINT_SCAN_MAX:
        want = min(limit - len(found), limits.AUDIT_CHECKPOINT_SCAN_MAX - scanned)
        rows = await checkpoints.newest_first(session, before_size=before, limit=want)
        scanned += len(rows)
        found.extend(r for r in rows if keys.problem(r) is None)
        if len(rows) < want:
            return CheckpointPage(found, None)
        before = rows[-1].tree_size
    return CheckpointPage(found, before)


async def latest(session: AsyncSession, keys: Keyring) -> Checkpoint:
    """The newest genuine checkpoint; 404 before the first (or past a bound of rows that do not
    verify, which the sealer's alarm reports)."""
    page = await list_checkpoints(session, keys, before_size=None, limit=1)
    if not page.items:
        raise AuditCheckpointNotFound("the worker has not signed a checkpoint yet")
    return page.items[0]


async def root_at(session: AsyncSession, size: int) -> bytes | None:
    """The tree's root at `size` from stored hashes, or None when the tree is smaller (or a
    node it needs is missing)."""
    keys = merkle.perfect_nodes(0, size)
    nodes = await store.fetch_nodes(session, keys)
    if len(nodes) != len(keys):
        return None
    return merkle.fold([nodes[k] for k in keys])


async def _bounded_size(
    session: AsyncSession, keys: Keyring, tree_size: int | None, field: str
) -> int:
    """The size asked for (default: the latest checkpoint's), within bounds. Whether the tree
    has that many leaves is known from the nodes fetched for the proof (`_require_size`)."""
    if tree_size is None:
        return (await latest(session, keys)).tree_size
    if not 1 <= tree_size <= limits.AUDIT_PROOF_TREE_SIZE_MAX:
        raise _invalid(field, f"must be 1..{limits.AUDIT_PROOF_TREE_SIZE_MAX}")
    return tree_size


def _require_size(
    nodes: dict[merkle.NodeKey, bytes], keys: set[merkle.NodeKey], size: int, field: str
) -> None:
    """Every node a proof needs is stored once the tree has `size` leaves (leaf size - 1
    among them): a missing one means the tree is smaller."""
    if len(nodes) != len(keys):
        raise _unavailable(field, f"the tree has fewer than {size} leaves")


async def inclusion_proof(
    session: AsyncSession, keyring: Keyring, record_id: uuid.UUID, tree_size: int | None
) -> InclusionProof:
    """The audit path of a record's leaf in the tree of `tree_size` leaves (default: the latest
    checkpoint's)."""
    position = await store.leaf_position(session, record_id)
    if not position.exists:
        raise AuditRecordNotFound(f"no audit record {record_id}")
    if position.seal_seq is None:
        raise AuditRecordNotSealed(f"audit record {record_id} is not sealed yet")
    size = await _bounded_size(session, keyring, tree_size, "tree_size")
    index = position.seal_seq - 1
    if index >= size:
        raise AuditRecordNotSealed(
            f"audit record {record_id} is leaf {index}, not in the tree of size {size}"
        )
    ranges = merkle.inclusion_ranges(index, size)
    keys = {(0, index), (0, size - 1)} | merkle.range_nodes(ranges)
    nodes = await store.fetch_nodes(session, keys)
    if (0, index) not in nodes:  # sealed but its leaf not stored yet: the tree catches up
        raise AuditRecordNotSealed(f"audit record {record_id} is not in the tree yet")
    _require_size(nodes, keys, size, "tree_size")
    return InclusionProof(
        leaf_index=index,
        tree_size=size,
        leaf_hash=nodes[(0, index)].hex(),
        audit_path=[merkle.range_hash(a, b, nodes).hex() for a, b in ranges],
    )


async def consistency_proof(
    session: AsyncSession, keyring: Keyring, first: int, second: int
) -> ConsistencyProof:
    """RFC 9162 2.1.4.1 PROOF(first, D[second]); an empty proof when first == second."""
    if not 1 <= first <= limits.AUDIT_PROOF_TREE_SIZE_MAX:
        raise _invalid("first", f"must be 1..{limits.AUDIT_PROOF_TREE_SIZE_MAX}")
    second = await _bounded_size(session, keyring, second, "second")
    if first > second:
        raise _unavailable("first", "must not be larger than second")
    ranges = merkle.consistency_ranges(first, second)
    keys = {(0, second - 1)} | merkle.range_nodes(ranges)
    nodes = await store.fetch_nodes(session, keys)
    _require_size(nodes, keys, second, "second")
    return ConsistencyProof(
        first=first,
        second=second,
        proof=[merkle.range_hash(a, b, nodes).hex() for a, b in ranges],
    )


async def chain_state(session: AsyncSession, keys: Keyring) -> ChainState:
    """The console's view of the chain: the newest checkpoint row, verified with the key its
    `key_id` names among the configured ones (a row that does not verify shows as such: an
    alarm in plain sight), and the stored tree's root at its size (O(log n) reads): a full
    recomputation from the records is `GET /v1/audit/verify`."""
    rows = await checkpoints.newest_first(session, before_size=None, limit=1)
    checkpoint = rows[0] if rows else None
    head = await repo.chain_head(session)
    sealed = head.seq if head is not None else 0
    waiting = await repo.waiting_count(
        session,
        horizon_xid=await _waiting_horizon(session, head),
        examine_max=limits.AUDIT_CONSOLE_WAITING_EXAMINE_MAX,
    )
    verified: bool | None = None
    if checkpoint is not None:
        root = await root_at(session, checkpoint.tree_size)
        verified = (
            keys.problem(checkpoint) is None
            and root is not None
            and root.hex() == checkpoint.root_hash.lower()
        )
    return ChainState(checkpoint, verified, sealed, waiting.count, waiting.complete)


async def _waiting_horizon(session: AsyncSession, head: repo.ChainHead | None) -> int:
    """Where the sealer's next pass scans from at the latest: the chain head's horizon (see
    ledger/audit/sealer.py); 0 (every record) when the chain has none yet, or when it lies
    beyond this database's transaction ids (a chain restored from a dump: its sealer scans
    everything once too)."""
    if head is None or head.facts is None:
        return 0
    if head.facts.horizon_xid > (await repo.snapshot_bounds(session))[1]:
        return 0
    return head.facts.horizon_xid
