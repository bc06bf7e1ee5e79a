"""Checkpoints and proofs for reviewers: the latest signed checkpoint, inclusion and consistency
proofs (RFC 9162 2.1.3 and 2.1.4), and the chain's state for the console.

Every answer here reads O(log n) stored subtree hashes (ledger/audit/merkle.py), never the
trail itself."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit import merkle
from ledger.audit import repository as repo
from ledger.audit import tree_store as store
from ledger.audit.signing import Checkpoint, load_signer, signature_holds
from ledger.core import limits
from ledger.core.errors import (
    AuditCheckpointNotFound,
    AuditRecordNotFound,
    AuditRecordNotSealed,
    AuditTreeSizeUnavailable,
    ConfigurationError,
    ValidationFailed,
)
from ledger.core.settings import Settings


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
    """For the console: the latest checkpoint; whether its signature checks with the configured
    key AND the database reproduces its root at its size (None: no checkpoint yet); how many
    records are sealed and how many wait for the sealer."""

    latest: Checkpoint | None
    latest_verified: bool | None
    sealed: int
    unsealed: int


def _unavailable(field: str, message: str) -> AuditTreeSizeUnavailable:
    return AuditTreeSizeUnavailable(
        f"{field}: {message}", errors=[{"field": field, "message": message}]
    )


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


async def latest(session: AsyncSession) -> Checkpoint:
    found = await store.latest_checkpoint(session)
    if found is None:
        raise AuditCheckpointNotFound("the worker has not signed a checkpoint yet")
    return found


async def list_checkpoints(
    session: AsyncSession, *, before_size: int | None, limit: int
) -> list[Checkpoint]:
    return await store.list_checkpoints(session, before_size=before_size, limit=limit)


async def root_at(session: AsyncSession, size: int) -> bytes | None:
    """The tree's root at `size` from stored hashes, or None when the tree is smaller (or a
    node it needs is missing)."""
    keys = merkle.perfect_nodes(0, size)
    nodes = await store.fetch_nodes(session, keys)
    if len(nodes) != len(keys):
        return None
    return merkle.fold([nodes[k] for k in keys])


async def _bounded_size(session: AsyncSession, tree_size: int | None, field: str) -> int:
    """The size asked for (default: the latest checkpoint's), within bounds. Whether the tree
    has that many leaves is known from the nodes fetched for the proof (`_require_size`)."""
    if tree_size is None:
        return (await latest(session)).tree_size
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
    session: AsyncSession, record_id: uuid.UUID, tree_size: int | None
) -> InclusionProof:
    """The audit path of a record's leaf in the tree of `tree_size` leaves (default: the latest
    checkpoint's)."""
    position = await store.leaf_position(session, record_id)
    if not position.exists:
        raise AuditRecordNotFound(f"no audit record {record_id}")
    if position.seal_seq is None:
        raise AuditRecordNotSealed(f"audit record {record_id} is not sealed yet")
    size = await _bounded_size(session, tree_size, "tree_size")
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


async def consistency_proof(session: AsyncSession, first: int, second: int) -> ConsistencyProof:
    """RFC 9162 2.1.4.1 PROOF(first, D[second]); an empty proof when first == second."""
    if not 1 <= first <= limits.AUDIT_PROOF_TREE_SIZE_MAX:
        raise _invalid("first", f"must be 1..{limits.AUDIT_PROOF_TREE_SIZE_MAX}")
    second = await _bounded_size(session, second, "second")
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


async def chain_state(session: AsyncSession, settings: Settings) -> ChainState:
    """The console's view of the chain. `latest_verified` uses stored hashes (O(log n) reads):
    a full recomputation from the records is `ledger audit verify --checkpoints`."""
    checkpoint = await store.latest_checkpoint(session)
    head = await repo.chain_head(session)
    sealed = head.seq if head is not None else 0
    unsealed = await repo.unsealed_count(session)
    verified: bool | None = None
    if checkpoint is not None:
        verified = await _holds(session, settings, checkpoint)
    return ChainState(checkpoint, verified, sealed, unsealed)


async def _holds(session: AsyncSession, settings: Settings, checkpoint: Checkpoint) -> bool:
    try:
        signer = load_signer(settings.audit_signing_key)
    except ConfigurationError:
        return False
    if not signature_holds(checkpoint, {signer.key_id: signer.public}):
        return False
    root = await root_at(session, checkpoint.tree_size)
    return root is not None and root.hex() == checkpoint.root_hash
