"""`ledger audit verify --checkpoints FILE --public-key PEM`: does the database still reproduce
every signed checkpoint?

The hash chain lives in the database, so a superuser can rewrite it consistently or cut off its
tail, and the chain alone still verifies. Checkpoints kept outside (the file, the Kafka topic)
cannot be rewritten with it. For each checkpoint, in tree-size order, this checks

1. its signature (and its C2SP note's, when the line carries one), with the public key its
   `key_id` names (old keys stay valid for the checkpoints they signed: pass every public key
   that ever signed);
2. that the trail has at least `tree_size` sealed records (a cut tail fails here);
3. that the root recomputed *from the records* (each leaf from the record's item, as the API
   shows it, not from stored hashes) equals `root_hash` (an edited, inserted or removed record
   fails here, however consistently the chain and the stored tree were redone);
4. that the stored tree gives the same root, so the proofs the API serves hold too.

The first checkpoint that fails is named. The scan reads the trail once, in seal order, in one
read-only snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.audit import merkle
from ledger.audit import repository as repo
from ledger.audit import tree_store as store
from ledger.audit.keys import Keyring
from ledger.audit.leaf import row_leaf_hash
from ledger.audit.signing import Checkpoint
from ledger.core import limits


@dataclass(slots=True)
class CheckpointReport:
    ok: bool
    checked: int  # checkpoints that held, before the first that did not
    total: int
    first_invalid_tree_size: int | None = None
    reason: str | None = None


async def verify_checkpoints(
    ex: repo.Executor,
    checkpoints: Sequence[Checkpoint],
    keys: Keyring,
    *,
    batch_size: int = limits.AUDIT_VERIFY_BATCH_SIZE,
) -> CheckpointReport:
    """Must be the first work of its transaction (it sets the snapshot)."""
    await repo.use_snapshot(ex)
    ordered = sorted(checkpoints, key=lambda c: c.tree_size)
    report = CheckpointReport(ok=True, checked=0, total=len(ordered))
    edge = merkle.CompactRange()
    broken: str | None = None  # why the records stop making leaves, once they do
    after_seq = 0
    for checkpoint in ordered:
        failure = _signature_failure(checkpoint, keys)
        while failure is None and broken is None and edge.size < checkpoint.tree_size:
            # Never past the checkpoint: its root is the root at exactly its size.
            page = min(batch_size, checkpoint.tree_size - edge.size)
            rows = await store.sealed_records(ex, after_seq=after_seq, limit=page)
            broken = await asyncio.to_thread(_add_leaves, edge, rows)
            after_seq = edge.size
            if broken is None and len(rows) < page:
                broken = f"the trail has only {edge.size} sealed records"
        if failure is None and edge.size < checkpoint.tree_size:
            failure = f"{broken}: the database no longer holds what it signed"
        if failure is None and edge.root().hex() != checkpoint.root_hash.lower():
            failure = "the records no longer hash to its root: a record was changed, added or "
            failure += "removed after it was signed"
        if failure is None:
            stored = await _stored_root(ex, checkpoint.tree_size)
            if stored != checkpoint.root_hash.lower():
                failure = "the stored Merkle tree no longer gives its root"
        if failure is not None:
            report.ok = False
            report.first_invalid_tree_size = checkpoint.tree_size
            report.reason = f"checkpoint of tree_size {checkpoint.tree_size}: {failure}"
            return report
        report.checked += 1
    return report


def _signature_failure(checkpoint: Checkpoint, keys: Keyring) -> str | None:
    """Its signature (and its note's, when it carries one), with the key its `key_id` names."""
    if checkpoint.key_id not in keys.keys:
        return f"signed by key {checkpoint.key_id}, which is not among the public keys given"
    return keys.problem(checkpoint)


def _add_leaves(edge: merkle.CompactRange, rows: Sequence[Any]) -> str | None:
    """Append the rows' leaves, in seal order; why it stopped, when a row cannot be a leaf."""
    for row in rows:
        if row.seal_seq != edge.size + 1:
            return f"seal {edge.size + 1} is missing"
        if row.id is None:
            return f"the record of seal {row.seal_seq} was deleted"
        edge.append(row_leaf_hash(row))
    return None


async def _stored_root(ex: repo.Executor, size: int) -> str | None:
    keys = merkle.perfect_nodes(0, size)
    nodes = await store.fetch_nodes(ex, keys)
    if len(nodes) != len(keys):
        return None
    return merkle.fold([nodes[k] for k in keys]).hex()
