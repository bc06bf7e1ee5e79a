"""Recompute the Merkle tree from the sealed records, and hold what the database stores to it.

One walk reads the sealed records in seal order, page by page, from a start it trusts (the empty
tree, or a right edge this process computed from the records itself), makes every leaf and every
complete subtree from them, and compares:

- each stored node with the one it made (`tree_node`: a node someone else wrote or changed);
- each checkpoint row met on the way, at its size: its signatures under the configured keys
  (`checkpoint_signature`), and, when they hold, its root with the one the records give
  (`checkpoint_root`: the log would fork if it signed on);
- at the end, the stored nodes that cover a leaf past the last sealed record
  (`tree_beyond_head`), and the genuine checkpoints larger than the chain (`checkpoint_root`).

The sealer walks in repair mode: it inserts missing nodes, replaces differing ones and removes
those past the head, and raises the alarm for each disagreement. `GET /v1/audit/verify` walks in
report mode, read-only, and names the first disagreement.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.audit import checkpoint_store as checkpoints
from ledger.audit import merkle
from ledger.audit import tree_store as store
from ledger.audit.keys import Keyring
from ledger.audit.leaf import row_leaf_hash
from ledger.audit.repository import Executor
from ledger.audit.signing import Checkpoint

TREE_NODE = "tree_node"
TREE_BEYOND_HEAD = "tree_beyond_head"
CHECKPOINT_SIGNATURE = "checkpoint_signature"
CHECKPOINT_ROOT = "checkpoint_root"
PROBLEMS = (TREE_NODE, TREE_BEYOND_HEAD, CHECKPOINT_SIGNATURE, CHECKPOINT_ROOT)


@dataclass(frozen=True, slots=True)
class Problem:
    code: str  # one of PROBLEMS
    detail: str
    checkpoint: Checkpoint | None = None


@dataclass(slots=True)
class WalkState:
    """What a walk knows, replaced whole after each page's transaction commits."""

    edge: merkle.CompactRange = field(default_factory=merkle.CompactRange)
    latest_genuine: Checkpoint | None = None  # the newest checkpoint that held on the way
    stalled: str | None = None  # why the records stop making leaves, once they do
    done: bool = False


@dataclass(slots=True)
class Page:
    state: WalkState
    leaves: int
    problems: list[Problem]


class TreeWalk:
    """One walk. `required_size`: stored nodes inside it must exist (a signed checkpoint's
    proofs need them), so a missing one there is a disagreement, not a tree catching up."""

    def __init__(
        self,
        keys: Keyring | None,
        *,
        start: merkle.CompactRange | None = None,
        required_size: int = 0,
        repair: bool,
    ) -> None:
        self.keys = keys
        self.repair = repair
        self.required_size = required_size
        self.state = WalkState(edge=copy.deepcopy(start) if start else merkle.CompactRange())

    @property
    def size(self) -> int:
        return self.state.edge.size

    async def page(self, ex: Executor, limit: int) -> Page:
        """Read up to `limit` leaves' records and hold the stored tree and the checkpoints up to
        the new size to them; the caller commits, then `accept`s the page."""
        state = WalkState(copy.deepcopy(self.state.edge), self.state.latest_genuine)
        rows = await store.sealed_records(ex, after_seq=state.edge.size, limit=limit)
        start = state.edge.size
        rows_at = await self._checkpoint_rows(ex, start, start + len(rows))
        made, problems = await asyncio.to_thread(self._append, state, rows, rows_at)
        problems.extend(await self._hold_nodes(ex, made))
        state.done = state.stalled is not None or len(rows) < limit
        return Page(state, state.edge.size - start, problems)

    def accept(self, page: Page) -> None:
        self.state = page.state

    async def finish(self, ex: Executor, scan_max: int) -> list[Problem]:
        """Once the walk reached the chain's end: nodes and genuine checkpoints past it."""
        state, problems = self.state, []
        if state.stalled is None:
            beyond = await store.nodes_beyond(ex, state.edge.size)
            if beyond:
                level, idx = beyond[0]
                problems.append(
                    Problem(
                        TREE_BEYOND_HEAD,
                        f"the stored tree has node (level {level}, index {idx}), which covers a "
                        f"leaf past the chain's {state.edge.size} sealed records",
                    )
                )
                if self.repair:
                    await store.delete_beyond(ex, state.edge.size)
        rows = await checkpoints.oldest_first(ex, after_size=state.edge.size, limit=scan_max)
        for row in rows:
            problem = self._signature_problem(row)
            if problem is None:
                problem = Problem(
                    CHECKPOINT_ROOT,
                    f"signed checkpoint of tree_size {row.tree_size} is larger than the "
                    f"{state.edge.size} leaves the records give",
                    row,
                )
            problems.append(problem)
        return problems

    async def _checkpoint_rows(self, ex: Executor, start: int, end: int) -> dict[int, Checkpoint]:
        if end <= start:
            return {}
        # One row per tree size (the primary key): at most end - start rows.
        rows = await checkpoints.oldest_first(
            ex, after_size=start if start else -1, up_to_size=end, limit=end - start + 1
        )
        return {row.tree_size: row for row in rows}

    def _append(
        self, state: WalkState, rows: Sequence[Any], rows_at: dict[int, Checkpoint]
    ) -> tuple[list[store.Node], list[Problem]]:
        """Runs in a worker thread (hashing is CPU work)."""
        edge, made, problems = state.edge, [], []
        if 0 in rows_at and edge.size == 0:
            problems.extend(self._hold_checkpoint(state, rows_at[0]))
        for row in rows:
            if row.seal_seq != edge.size + 1 or row.id is None:
                state.stalled = (
                    f"seal {edge.size + 1} is missing"
                    if row.seal_seq != edge.size + 1
                    else f"the record of seal {row.seal_seq} was deleted"
                )
                break
            made.extend(edge.append(row_leaf_hash(row)))
            found = rows_at.get(edge.size)
            if found is not None:
                problems.extend(self._hold_checkpoint(state, found))
        return made, problems

    def _signature_problem(self, row: Checkpoint) -> Problem | None:
        why = None if self.keys is None else self.keys.problem(row)
        if why is None:
            return None
        return Problem(
            CHECKPOINT_SIGNATURE, f"checkpoint row of tree_size {row.tree_size}: {why}", row
        )

    def _hold_checkpoint(self, state: WalkState, row: Checkpoint) -> list[Problem]:
        if self.keys is None:
            return []
        problem = self._signature_problem(row)
        if problem is not None:
            return [problem]
        if row.root_hash.lower() != state.edge.root().hex():
            return [
                Problem(
                    CHECKPOINT_ROOT,
                    f"signed checkpoint of tree_size {row.tree_size} has a root the records do "
                    "not give: it covers a leaf no sealed record has, or a record changed",
                    row,
                )
            ]
        state.latest_genuine = row
        return []

    async def _hold_nodes(self, ex: Executor, made: list[store.Node]) -> list[Problem]:
        if not made:
            return []
        count, digest = await store.stored_digest(ex, store.node_ranges(made))
        if count == len(made) and digest == store.nodes_digest(made):
            return []  # the page's stored nodes are exactly the ones the records give
        stored = await store.fetch_nodes(ex, [(n[0], n[1]) for n in made])
        missing = [n for n in made if (n[0], n[1]) not in stored]
        differing = [n for n in made if stored.get((n[0], n[1]), n[2]) != n[2]]
        if self.repair:
            await store.insert_nodes(ex, missing)
            await store.repair_nodes(ex, differing)
        lost = [n for n in missing if (n[1] + 1) << n[0] <= self.required_size]
        problems = []
        for found, what in ((differing, "differ from what the records give"), (lost, LOST)):
            if found:
                level, idx, _ = found[0]
                problems.append(
                    Problem(
                        TREE_NODE,
                        f"{len(found)} stored tree node(s) {what}, the first at "
                        f"(level {level}, index {idx})",
                    )
                )
        return problems


LOST = "are missing, although a signed checkpoint covers them"


async def verify_tree(
    ex: Executor, keys: Keyring | None, *, page_size: int, scan_max: int
) -> Problem | None:
    """Report mode, for `ledger audit verify` and `GET /v1/audit/verify` (inside their
    snapshot): the first disagreement between the stored tree or the checkpoint rows and what
    the records give, or None. Nodes under the newest genuine checkpoint must all be stored."""
    required = 0
    if keys is not None:
        for row in await checkpoints.newest_first(ex, before_size=None, limit=scan_max):
            if keys.problem(row) is None:
                required = row.tree_size
                break
    walk = TreeWalk(keys, required_size=required, repair=False)
    while not walk.state.done:
        page = await walk.page(ex, page_size)
        walk.accept(page)
        if page.problems:
            return page.problems[0]
    problems = await walk.finish(ex, scan_max)
    return problems[0] if problems else None
