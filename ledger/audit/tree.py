"""The sealer's side of the Merkle tree: leaves it computed itself, and signed checkpoints.

Nothing the sealer signs comes from `audit_tree_nodes`: anyone with the service's database role
can write that table. The sealer keeps the tree's right edge (`merkle.CompactRange`) in memory
and grows it only from sealed records it read itself:

- when the process starts, a walk (ledger/audit/tree_walk.py) recomputes every leaf from the
  records, in steps of AUDIT_TREE_BUILD_LEAVES_PER_STEP leaves (sealing goes on in between), and
  heals the stored tree as it goes; the first checkpoint is signed once it reached the chain's
  head. Each step it carries on from its edge to the head the same way (seals another sealer
  made while this one stood by);
- each batch of seals adds its leaves to the edge and stores every node they complete in the
  same transaction as the seals; a stored row already in a place it fills is a disagreement;
- after each pass, two cheap checks (the stored edge nodes are the edge's; no stored node covers
  a leaf past it), and a walk that re-checks the whole stored tree against the records,
  AUDIT_TREE_RECHECK_LEAVES_PER_STEP leaves every AUDIT_TREE_RECHECK_INTERVAL_SECONDS, round
  and round.

Any disagreement raises the alarm (an error log line, `ledger_audit_tree_disagreements`,
`ledger_audit_signing_halted`; `GET /v1/audit/verify` finds the same by itself), stops signing,
and starts a walk from the empty tree that heals the stored tree from the records; signing
resumes when it is done. A signed checkpoint whose root the records no longer give (or larger
than the chain) is a fork: nothing is signed, and the walk is tried again after a backoff.

Checkpoints: after a pass, when the tree has grown since the newest genuine checkpoint and that
one is AUDIT_CHECKPOINT_INTERVAL_SECONDS old, the sealer signs the edge's root and its note.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.audit import chain, merkle
from ledger.audit import checkpoint_store as checkpoints
from ledger.audit import tree_store as store
from ledger.audit.keys import Keyring
from ledger.audit.leaf import row_leaf_hash
from ledger.audit.refusals import ReportedOnce
from ledger.audit.signing import Checkpoint, Signer
from ledger.audit.tree_walk import CHECKPOINT_ROOT, CHECKPOINT_SIGNATURE, Problem, TreeWalk
from ledger.core import limits
from observability import metrics

log = structlog.get_logger("ledger.audit.tree")

FORK_BACKOFF_MAX_SECONDS = 3_600.0


class SealerTree:
    """The tree state of one sealer process. Its edge outlives connections and changes of lead:
    it is what the records gave, whoever wrote the stored rows meanwhile."""

    def __init__(
        self,
        signer: Signer | None,
        *,
        keys: Keyring | None = None,
        checkpoint_interval_seconds: float = limits.AUDIT_CHECKPOINT_INTERVAL_SECONDS,
    ) -> None:
        self.signer = signer
        if keys is None and signer is not None:
            keys = Keyring(keys={signer.key_id: signer.public}, signer=signer)
        self.keys = keys
        self.checkpoint_interval_seconds = checkpoint_interval_seconds
        self._edge: merkle.CompactRange | None = None  # from the records, by this process
        self._pending: merkle.CompactRange | None = None  # the edge once the seal tx commits
        self._walk: TreeWalk | None = None  # from the edge (or nothing) to the chain's head
        self._recheck: TreeWalk | None = None
        self._recheck_goal: tuple[int, bytes] = (0, merkle.EMPTY_ROOT)
        self._recheck_at = 0.0  # monotonic time of the next re-check page
        self._rebuild = False  # a disagreement was found inside a transaction: rebuild after it
        self._retry_at = 0.0
        self._backoff = limits.AUDIT_TREE_FORK_RETRY_SECONDS
        self._signed_size = 0  # the newest genuine checkpoint's size, as far as this one knows
        self._last_checkpoint_at = 0.0
        self._alarmed = ReportedOnce()  # refused checkpoint rows already reported
        # The worker is stopping: a walk ends its step at the next page (it resumes at start).
        self.stopping = False

    @property
    def size(self) -> int | None:
        return None if self._edge is None else self._edge.size

    @property
    def building(self) -> bool:
        """The edge is being recomputed from the records (not waiting out a fork's backoff)."""
        return self._edge is None and time.monotonic() >= self._retry_at

    def reset(self) -> None:
        """The connection was dropped: whatever its transaction staged is gone with it."""
        self._pending = None
        self._rebuild = False

    # -- walks --------------------------------------------------------------------------------

    async def advance(self, conn: AsyncConnection) -> int:
        """Carry the edge to the chain's head from the records (at start: from nothing), a
        bounded number of leaves, then one re-check page. Outside a transaction."""
        if self._edge is None and time.monotonic() < self._retry_at:
            return 0
        if self._walk is None:
            self._walk = TreeWalk(self.keys, start=self._edge, repair=True)
        walk, done = self._walk, 0
        while (
            not walk.state.done
            and done < limits.AUDIT_TREE_BUILD_LEAVES_PER_STEP
            and not self.stopping
        ):
            async with conn.begin():
                page = await walk.page(conn, limits.AUDIT_TREE_LEAVES_PER_TX_MAX)
            walk.accept(page)
            done += page.leaves
            self._report(page.problems, healed=True)
            if self._disagrees(page.problems) and self._edge is not None:
                return done + self._start_rebuild("the stored tree disagreed with the records")
        if walk.state.done:
            await self._conclude(conn, walk)
        elif done:
            log.info("audit.tree_walking", tree_size=walk.size)
        if self._edge is not None:
            await self._recheck_page(conn)
        return done

    async def _conclude(self, conn: AsyncConnection, walk: TreeWalk) -> None:
        async with conn.begin():
            problems = await walk.finish(conn, limits.AUDIT_CHECKPOINT_SCAN_MAX)
        self._report(problems, healed=True)
        self._walk = None
        if walk.state.stalled is not None:
            log.error(
                "audit.tree_stalled",
                tree_size=walk.size,
                detail=f"{walk.state.stalled}: the Merkle tree stops here until it is restored; "
                "run `ledger audit verify`",
            )
        if any(p.code == CHECKPOINT_ROOT for p in problems):
            self._fork(problems)
            return
        if self._edge is not None and self._disagrees(problems):
            self._start_rebuild("the stored tree disagreed with the records")
            return
        if self._edge is None:
            log.info("audit.tree_built", tree_size=walk.size)
        self._edge = walk.state.edge
        genuine = walk.state.latest_genuine
        if genuine is not None and genuine.tree_size > self._signed_size:
            self._signed_size = genuine.tree_size
        self._backoff = limits.AUDIT_TREE_FORK_RETRY_SECONDS
        metrics.AUDIT_SIGNING_HALTED.set(0)

    async def _recheck_page(self, conn: AsyncConnection) -> None:
        edge = self._edge
        if edge is None or time.monotonic() < self._recheck_at:
            return
        self._recheck_at = time.monotonic() + limits.AUDIT_TREE_RECHECK_INTERVAL_SECONDS
        if self._recheck is None:
            self._recheck = TreeWalk(self.keys, repair=True)
            self._recheck_goal = (edge.size, edge.root())
        walk, (goal, root) = self._recheck, self._recheck_goal
        if walk.size < goal:
            limit = min(limits.AUDIT_TREE_RECHECK_LEAVES_PER_STEP, goal - walk.size)
            async with conn.begin():
                page = await walk.page(conn, limit)
            walk.accept(page)
            self._report(page.problems, healed=True)
            if self._disagrees(page.problems):
                self._start_rebuild("the re-check found the stored tree disagreeing")
                return
        if walk.size >= goal or walk.state.stalled is not None:
            self._recheck = None
            if walk.size == goal and walk.state.edge.root() != root:
                self._fork(
                    [
                        Problem(
                            CHECKPOINT_ROOT,
                            "the records no longer give the root "
                            f"this sealer grew at tree_size {goal}",
                        )
                    ]
                )

    def _start_rebuild(self, why: str) -> int:
        log.error("audit.signing_halted", reason=why, detail="rebuilding the tree from records")
        metrics.AUDIT_SIGNING_HALTED.set(1)
        self._edge = self._pending = None
        self._walk = self._recheck = None
        return 0

    def _fork(self, problems: Sequence[Problem]) -> None:
        self._start_rebuild("; ".join(p.detail for p in problems if p.code == CHECKPOINT_ROOT))
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, FORK_BACKOFF_MAX_SECONDS)

    @staticmethod
    def _disagrees(problems: Sequence[Problem]) -> bool:
        return any(p.code != CHECKPOINT_SIGNATURE for p in problems)

    def _report(self, problems: Sequence[Problem], *, healed: bool) -> None:
        for problem in problems:
            if problem.checkpoint is not None and problem.code == CHECKPOINT_SIGNATURE:
                checkpoint = problem.checkpoint
                if not self._alarmed.first(checkpoint.tree_size, checkpoint.signature):
                    continue
            metrics.AUDIT_TREE_DISAGREEMENTS.labels(problem=problem.code).inc()
            log.error(
                "audit.tree_disagreement",
                problem=problem.code,
                detail=problem.detail,
                healed=healed and problem.code != CHECKPOINT_SIGNATURE,
            )

    # -- the seal transaction -------------------------------------------------------------------

    async def append(self, conn: AsyncConnection, head_seq: int, rows: Sequence[Any]) -> None:
        """Inside the seal transaction: the leaves of the records just sealed, in seal order.
        `head_seq` is the chain head before them; an edge elsewhere (being built, stalled,
        behind) adds nothing: the next walk reads those records."""
        edge = self._edge
        if edge is None or edge.size != head_seq or self._walk is not None:
            return
        pending = merkle.CompactRange(edge.size, list(edge.hashes))
        made: list[store.Node] = []
        for row in rows:
            made.extend(pending.append(row_leaf_hash(row)))
        taken = await store.insert_nodes(conn, made)
        if taken:
            level, idx, _ = taken[0]
            self._report(
                [
                    Problem(
                        "tree_node",
                        f"{len(taken)} stored tree node(s) were there before the "
                        f"sealer made them, the first at (level {level}, index {idx})",
                    )
                ],
                healed=True,
            )
            await store.repair_nodes(conn, taken)
            self._rebuild = True
        self._pending = pending

    def committed(self) -> None:
        """The seal transaction committed: its leaves are the edge's now."""
        pending, self._pending = self._pending, None
        if pending is not None and self._edge is not None:
            self._edge = pending
        if self._rebuild:
            self._rebuild = False
            self._start_rebuild("a stored node was there before the sealer made it")

    async def check_stored(self, conn: AsyncConnection) -> None:
        """After a pass: the stored edge nodes are the edge's, no node lies past it."""
        edge = self._edge
        if edge is None or self._walk is not None:
            return
        keys = merkle.perfect_nodes(0, edge.size)
        async with conn.begin():
            stored = await store.fetch_nodes(conn, keys)
            beyond = await store.nodes_beyond(conn, edge.size)
        wrong = [k for k, h in zip(keys, edge.hashes, strict=True) if stored.get(k) != h]
        problems = []
        if wrong:
            problems.append(
                Problem(
                    "tree_node",
                    f"stored node {wrong[0]} of the tree's right "
                    "edge is not the one the records give",
                )
            )
        if beyond:
            problems.append(
                Problem(
                    "tree_beyond_head",
                    f"stored node {beyond[0]} covers a leaf "
                    f"past the chain's {edge.size} sealed records",
                )
            )
        if problems:
            self._report(problems, healed=True)
            self._start_rebuild(problems[0].detail)

    # -- checkpoints ----------------------------------------------------------------------------

    async def maybe_checkpoint(self, conn: AsyncConnection) -> Checkpoint | None:
        """Sign and store a checkpoint of the edge's root when one is due. Outside a
        transaction; returns the checkpoint made, if any."""
        edge, signer, keys = self._edge, self.signer, self.keys
        if signer is None or keys is None or edge is None or self._walk is not None:
            return None
        if edge.size <= self._signed_size:
            return None
        if time.monotonic() < self._last_checkpoint_at + self.checkpoint_interval_seconds:
            return None
        stamp = chain.format_timestamp(dt.datetime.now(dt.UTC))
        checkpoint = signer.sign(edge.size, edge.root().hex(), stamp, keys.origin)
        async with conn.begin():
            if not await checkpoints.insert_checkpoint(conn, checkpoint):
                if not await self._clear_place(conn, checkpoint):
                    return None
                await checkpoints.insert_checkpoint(conn, checkpoint)
        self._signed_size = checkpoint.tree_size
        self._last_checkpoint_at = time.monotonic()
        log.info(
            "audit.checkpoint_signed",
            tree_size=checkpoint.tree_size,
            root_hash=checkpoint.root_hash,
            key_id=checkpoint.key_id,
        )
        return checkpoint

    async def _clear_place(self, conn: AsyncConnection, checkpoint: Checkpoint) -> bool:
        """A row holds the size about to be signed. Genuine with this root: it is ours (a commit
        whose answer was lost), nothing to add; genuine with another root: a fork; otherwise it
        goes to `audit_checkpoints_refused` and ours takes its place (True)."""
        keys = self.keys
        held = await checkpoints.checkpoint_at(conn, checkpoint.tree_size)
        if held is None or keys is None:
            return True
        why = keys.problem(held)
        if why is None:
            if held.root_hash.lower() == checkpoint.root_hash:
                self._signed_size = held.tree_size
            else:
                self._fork(
                    [
                        Problem(
                            CHECKPOINT_ROOT,
                            f"signed checkpoint of tree_size "
                            f"{held.tree_size} has another root than the records give",
                        )
                    ]
                )
            return False
        metrics.AUDIT_CHECKPOINTS_REFUSED.labels(where="sealer").inc()
        log.error(
            "audit.checkpoint_refused",
            tree_size=held.tree_size,
            key_id=held.key_id[:64],
            reason=why,
            detail="moved to audit_checkpoints_refused: the sealer signs in its place",
        )
        await checkpoints.refuse(conn, held, why)
        return True
