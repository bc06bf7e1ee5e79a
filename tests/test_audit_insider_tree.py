"""The signed tree never outruns the records, whatever the service's own database role writes
into the stored tree (contract 9.1).

Each test runs the real sealer job (`AuditSealer.step`, as `ledger worker` runs it) against the
real PostgreSQL, writes forged nodes the way the role can (a plain INSERT; an UPDATE by the
tables' owner, who may switch its own triggers off), and shows the three things the contract
asks: nothing forged is ever signed (every checkpoint's root is the one an independent RFC 9162
computation over the records the API answers gives), the alarm is up (`GET /v1/audit/verify`
names the problem before the sealer heals it; the sealer logs it at error and counts it), and
signing resumes by itself once the tree is rebuilt from the records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from ledger.audit import repository as repo
from ledger.audit.sealer import AuditSealer
from ledger.core import limits
from ledger.core.db import create_engine
from ledger.core.settings import Settings
from tests.audit_insider_helpers import (
    alarm_lines,
    assert_only_records_signed,
    change_node,
    checkpoint_rows,
    disagreements,
    forge_node,
    halted,
    head_seq,
    record_count,
    verify_http,
)
from tests.audit_merkle_helpers import batch_of_transfers, funded_accounts, session_signer

STEPS_MAX = 50  # sealer passes a test allows for a heal (each is bounded work)


@pytest.fixture
async def sealer(settings: Settings) -> AsyncIterator[AuditSealer]:
    """One sealer for the whole test, as one worker process keeps it: its edge outlives
    passes, reconnects and forgeries."""
    engine = create_engine(settings, pool_size=1)
    job = AuditSealer(engine, signer=session_signer(), checkpoint_interval_seconds=0)
    try:
        yield job
    finally:
        await job.close()
        await engine.dispose()


async def _passes(sealer: AuditSealer, count: int = 3) -> None:
    for _ in range(count):
        await sealer.step()


async def _until_signing(
    sealer: AuditSealer, sync_db: psycopg.Connection[Any], records: int
) -> None:
    """Passes until every one of `records` records is sealed and a checkpoint of all of them
    is signed (signing resumed)."""
    for _ in range(STEPS_MAX):
        await sealer.step()
        if any(size == records for size, _ in checkpoint_rows(sync_db)):
            return
    raise AssertionError(f"no checkpoint of {records} leaves was signed")


async def _trail(client: httpx.AsyncClient, count: int) -> tuple[str, str]:
    source, target = await funded_accounts(client)
    await batch_of_transfers(client, source, target, count)
    return source, target


async def test_a_leaf_past_the_head_is_never_signed_and_is_healed(
    client: httpx.AsyncClient,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    sealer: AuditSealer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, target = await _trail(client, 5)
    await _passes(sealer)
    head = head_seq(sync_db)
    assert (await verify_http(client))["ok"] is True
    before = disagreements("tree_beyond_head")

    # The next record's leaf, forged before the record exists: today it would be loaded after a
    # reconnect as the sealer's own, or make the sealer's insert fail for good.
    forge_node(sync_db, 0, head, "next leaf")
    forge_node(sync_db, 1, head // 2, "next pair")
    report = await verify_http(client)
    assert report["ok"] is False and report["problem"] == "tree_beyond_head", report

    await sealer.close()  # a reconnect: the sealer must not load what it finds stored
    await batch_of_transfers(client, source, target, 3)
    await _until_signing(sealer, sync_db, record_count(sync_db))

    assert disagreements("tree_beyond_head") > before or disagreements("tree_node") > 0
    assert alarm_lines(caplog, "tree_beyond_head") or alarm_lines(caplog, "tree_node")
    await assert_only_records_signed(client, sync_db)
    assert (await verify_http(client))["ok"] is True  # healed from the records
    assert halted() == 0


async def test_a_planted_inner_node_stops_signing_until_the_tree_is_rebuilt(
    client: httpx.AsyncClient,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    sealer: AuditSealer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, target = await _trail(client, 3)
    await _passes(sealer)
    head = head_seq(sync_db)
    # The node over leaves 0..15 that the next records complete, planted ahead of them: the
    # pass finds it past the head before it seals (or, planted during the pass, in the place
    # its seal transaction fills).
    level = 4
    assert head < 1 << level
    forge_node(sync_db, level, 0, "planted subtree")
    before = disagreements("tree_node") + disagreements("tree_beyond_head")

    await batch_of_transfers(client, source, target, (1 << level) - head + 2)
    await sealer.step()
    assert disagreements("tree_node") + disagreements("tree_beyond_head") > before
    assert halted() == 1  # signing stopped
    assert alarm_lines(caplog, "tree_beyond_head") or alarm_lines(caplog, "tree_node")
    assert max(size for size, _ in checkpoint_rows(sync_db)) == head  # nothing signed since
    await _until_signing(sealer, sync_db, record_count(sync_db))
    assert halted() == 0
    await assert_only_records_signed(client, sync_db)
    assert (await verify_http(client))["ok"] is True


async def test_a_changed_edge_node_and_a_far_index_are_caught_at_the_next_pass(
    client: httpx.AsyncClient,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    sealer: AuditSealer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, target = await _trail(client, 9)
    await _passes(sealer)
    head = head_seq(sync_db)
    top = head.bit_length() - 1  # the largest complete subtree of the edge: (top, 0)

    change_node(sync_db, top, 0)
    forge_node(sync_db, 0, 2**40, "far leaf")
    forge_node(sync_db, 7, 2**50, "far subtree")
    report = await verify_http(client)
    assert report["ok"] is False and report["problem"] == "tree_node", report

    nodes, beyond = disagreements("tree_node"), disagreements("tree_beyond_head")
    await batch_of_transfers(client, source, target, 2)
    await sealer.step()
    assert disagreements("tree_node") > nodes or disagreements("tree_beyond_head") > beyond
    await _until_signing(sealer, sync_db, record_count(sync_db))

    far = sync_db.execute("SELECT count(*) FROM audit_tree_nodes WHERE idx >= 2^30").fetchone()
    assert far == (0,)
    await assert_only_records_signed(client, sync_db)
    assert (await verify_http(client))["ok"] is True


async def test_a_deep_changed_node_is_found_by_the_recheck_and_healed(
    client: httpx.AsyncClient,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    sealer: AuditSealer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "AUDIT_TREE_RECHECK_INTERVAL_SECONDS", 0.0)
    await _trail(client, 12)
    await _passes(sealer)
    # Leaves 0..1 of a tree of 16: off the right edge, so only a walk over the records sees it.
    change_node(sync_db, 1, 0)
    report = await verify_http(client)
    assert report["ok"] is False and report["problem"] == "tree_node", report
    assert "(level 1, index 0)" in report["reason"]

    before = disagreements("tree_node")
    for _ in range(STEPS_MAX):  # the re-check reads AUDIT_TREE_RECHECK_LEAVES_PER_STEP a time
        await sealer.step()
        if disagreements("tree_node") > before and (await verify_http(client))["ok"]:
            break
    else:
        raise AssertionError("the re-check never found or healed the changed node")
    assert alarm_lines(caplog, "tree_node")
    await assert_only_records_signed(client, sync_db)


async def test_rebuilding_at_start_reads_the_records_in_bounded_steps(
    client: httpx.AsyncClient,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new sealer (a restarted worker) recomputes the whole tree from the records before it
    signs, a bounded number of leaves per pass, sealing in between; it signs nothing before."""
    source, target = await _trail(client, 40)
    first = AuditSealer(create_engine(settings, pool_size=1), signer=session_signer())
    try:
        await _passes(first, 2)
    finally:
        await first.close()
    signed = checkpoint_rows(sync_db)
    forge_node(sync_db, 0, head_seq(sync_db), "after restart")
    monkeypatch.setattr(limits, "AUDIT_TREE_BUILD_LEAVES_PER_STEP", 8)
    monkeypatch.setattr(limits, "AUDIT_TREE_LEAVES_PER_TX_MAX", 8)
    engine = create_engine(settings, pool_size=1)
    second = AuditSealer(engine, signer=session_signer(), checkpoint_interval_seconds=0)
    try:
        await batch_of_transfers(client, source, target, 4)
        steps = 0
        while second.tree.size is None:
            assert checkpoint_rows(sync_db) == signed  # nothing signed while it rebuilds
            await second.step()
            steps += 1
            assert steps < STEPS_MAX
        assert steps >= 5  # 49 leaves, 8 a step
        await _until_signing(second, sync_db, record_count(sync_db))
    finally:
        await second.close()
        await engine.dispose()
    await assert_only_records_signed(client, sync_db)


async def test_a_node_planted_while_the_seal_transaction_runs_is_caught_in_it(
    client: httpx.AsyncClient,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    sealer: AuditSealer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The role plants the next leaf after the pass looked past the head and before its seal
    transaction stores that leaf: the insert finds the place taken by a row that differs."""
    source, target = await _trail(client, 2)
    await _passes(sealer)
    head = head_seq(sync_db)
    real_insert = repo.insert_seals

    async def planting_insert(ex: Any, links: Any) -> None:
        if links:
            forge_node(sync_db, 0, links[0].seq - 1, "planted mid-pass")
        await real_insert(ex, links)

    monkeypatch.setattr(repo, "insert_seals", planting_insert)
    before = disagreements("tree_node")
    await batch_of_transfers(client, source, target, 1)
    await sealer.step()
    monkeypatch.setattr(repo, "insert_seals", real_insert)
    assert disagreements("tree_node") > before
    assert any(
        "before the sealer made them" in line["detail"] for line in alarm_lines(caplog, "tree_node")
    )
    assert max(size for size, _ in checkpoint_rows(sync_db)) == head  # nothing signed over it
    await _until_signing(sealer, sync_db, record_count(sync_db))
    await assert_only_records_signed(client, sync_db)
    assert (await verify_http(client))["ok"] is True


async def test_a_junk_row_where_the_sealer_signs_next_is_moved_aside(
    client: httpx.AsyncClient,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    sealer: AuditSealer,
) -> None:
    source, target = await _trail(client, 2)
    await _passes(sealer)
    records = record_count(sync_db)
    sync_db.execute(
        "INSERT INTO audit_checkpoints (tree_size, root_hash, timestamp, key_id, signature) "
        "SELECT tree_size + 3, root_hash, timestamp, key_id, signature FROM audit_checkpoints "
        "ORDER BY tree_size DESC LIMIT 1"
    )
    await batch_of_transfers(client, source, target, 3)
    await _until_signing(sealer, sync_db, records + 3)
    refused = sync_db.execute("SELECT tree_size, reason FROM audit_checkpoints_refused").fetchall()
    assert [size for size, _ in refused] == [records + 3]
    await assert_only_records_signed(client, sync_db)
