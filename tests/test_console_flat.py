"""The console's reads that stay flat as the trail grows keep their answers: an account's audit
records (walk newest first, then one probe per transfer) page for page equal to the plainest
statement, across the switch from walk to probes; and the chain panel's count of records waiting
for the sealer, bounded by the sealer's horizon, with an insertion behind it left to verify."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.dialects import postgresql

from ledger.audit import checkpoints as service
from ledger.audit.keys import keyring
from ledger.audit.sealer import AuditSealer
from ledger.console import repository as console_repo
from ledger.core import limits
from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction
from ledger.core.settings import Settings
from tests.helpers import funded_pair, transfer

PLAIN = """
SELECT seq FROM audit_records
 WHERE object_id = %(account)s
    OR object_id IN (SELECT id::text FROM transfers
                      WHERE debit_account_id = %(account)s::uuid
                         OR credit_account_id = %(account)s::uuid)
 ORDER BY seq DESC
"""


def compiled(query: Any) -> str:
    return str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def paged(db: psycopg.Connection[Any], account: uuid.UUID, limit: int) -> list[int]:
    """Every seq the console's statement answers, page after page from its cursor."""
    found: list[int] = []
    before = None
    while True:
        query = console_repo.account_records_query(account, before_seq=before, limit=limit)
        seq_at = [c.name for c in query.selected_columns].index("seq")
        page = [row[seq_at] for row in db.execute(compiled(query)).fetchall()]
        found.extend(page)
        if len(page) < limit:
            return found
        before = page[-1]


def plainly(db: psycopg.Connection[Any], account: uuid.UUID) -> list[int]:
    return [row[0] for row in db.execute(PLAIN, {"account": str(account)}).fetchall()]


def add_transfers(
    db: psycopg.Connection[Any], pairs: list[tuple[uuid.UUID, uuid.UUID]], *, spelling: str = ""
) -> None:
    """Transfers straight into the tables, each with one `transfer.create` record (object id
    as `uuid::text` spells it, or upper-cased: a text that names no transfer), then one record
    of something else."""
    for debit, credit in pairs:
        tid = uuid.uuid4()
        db.execute(
            "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency,"
            " state, posted_amount, reversed_amount, metadata, metadata_text, created_at,"
            " updated_at, created_pending) VALUES (%s, %s, %s, 1, 'USD', 'posted', 1, 0, '{}',"
            " '{}', now(), now(), false)",
            (tid, debit, credit),
        )
        object_id = str(tid).upper() if spelling == "upper" else str(tid)
        for action, object_type, oid in (
            ("transfer.create", "transfer", object_id),
            ("api_key.create", "api_key", f"key-{tid.hex[:8]}"),
        ):
            db.execute(
                "INSERT INTO audit_records (id, at, actor_name, action, object_type, object_id,"
                " data) VALUES (gen_random_uuid(), now(), 'test', %s, %s, %s, '{}')",
                (action, object_type, oid),
            )


@pytest.mark.parametrize("limit", [3, 10, 51])
async def test_account_pages_equal_the_plain_answer_across_walk_and_probes(
    client: httpx.AsyncClient,
    sync_db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    limit: int,
) -> None:
    """A walk of 24 records (patched down from thousands): the busy account fills its pages in
    the dense newest region and needs the probes in the thin older one; a quiet account needs
    them from its first page. A reversal's `transfer.reverse` record (kept under the original
    transfer) and the account's own records are in, an upper-cased id and other objects out:
    every page together is exactly the plain statement's answer, in order."""
    monkeypatch.setattr(console_repo, "ACCOUNT_WALK_ROWS_MIN", 24)
    monkeypatch.setattr(console_repo, "ACCOUNT_WALK_ROWS_PER_ITEM", 2)
    source, busy, quiet = await funded_pair(client, 10_000)
    made = await transfer(client, busy["id"], quiet["id"], 10)
    assert made.status_code == 201, made.text
    reversed_ = await client.post(f"/v1/transfers/{made.json()['id']}/reverse", json={})
    assert reversed_.status_code == 201, reversed_.text
    a, b, q = uuid.UUID(busy["id"]), uuid.UUID(quiet["id"]), uuid.UUID(source["id"])
    others = [uuid.uuid4() for _ in range(3)]
    for other in others:
        sync_db.execute(
            "INSERT INTO accounts (id, code, currency, normal_balance, min_balance, status,"
            " metadata, metadata_text, version, posted_debits, posted_credits, pending_debits,"
            " pending_credits, created_at, updated_at) VALUES (%s, %s, 'USD', 'credit', NULL,"
            " 'active', '{}', '{}', 1, 0, 0, 0, 0, now(), now())",
            (other, f"flat:{other.hex[:8]}"),
        )
    # Older: thin for everyone; then one transfer of each account spelled upper-case; newest:
    # the busy account in every other transfer.
    add_transfers(sync_db, [(others[i % 3], others[(i + 1) % 3]) for i in range(120)])
    add_transfers(sync_db, [(a, b), (b, others[0])], spelling="upper")
    add_transfers(sync_db, [(a, others[0]) if i % 2 else (others[1], others[2]) for i in range(80)])
    add_transfers(sync_db, [(others[2], b)])
    sync_db.execute("ANALYZE audit_records")
    sync_db.execute("ANALYZE transfers")
    for account in (a, b, q, *others):
        expected = plainly(sync_db, account)
        assert expected, account
        assert paged(sync_db, account, limit) == expected, (account, limit)
    # The reversal's record is among the busy account's (kept under the original transfer).
    reverse = sync_db.execute(
        "SELECT seq FROM audit_records WHERE action = 'transfer.reverse'"
    ).fetchall()
    assert reverse and all(row[0] in plainly(sync_db, a) for row in reverse)


async def test_the_panel_counts_what_waits_and_verify_names_an_insertion_behind_it(
    client: httpx.AsyncClient,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The console's count is the records waiting since the chain head's horizon: new writes
    count, a record inserted behind the horizon (an old transaction id) does not, and
    `GET /v1/audit/verify` counts it exactly and names it. Past the bound of records examined,
    the panel says "at least"."""
    engine = create_engine(settings, pool_size=1)
    sessionmaker = create_sessionmaker(engine)
    sealer = AuditSealer(engine)

    async def state() -> service.ChainState:
        return await run_in_transaction(
            sessionmaker, lambda session: service.chain_state(session, keyring(settings))
        )

    try:
        _, a, b = await funded_pair(client, 1_000)
        assert await sealer.step() > 0
        assert (await transfer(client, a["id"], b["id"], 1)).status_code == 201
        assert await sealer.step() > 0  # stamped with the first pass's horizon, above 0
        horizon = sync_db.execute(
            "SELECT horizon_xid FROM audit_seals ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        assert horizon is not None and horizon[0] > 1
        sealed = await state()
        assert (sealed.unsealed, sealed.unsealed_exact) == (0, True)

        forged = uuid.uuid4()
        sync_db.execute(
            "INSERT INTO audit_records (id, xact_id, at, actor_name, action, object_type,"
            " object_id, data) VALUES (%s, 1, now(), 'insider', 'transfer.create', 'transfer',"
            " %s, '{}')",
            (forged, str(uuid.uuid4())),
        )
        for _ in range(3):
            assert (await transfer(client, a["id"], b["id"], 1)).status_code == 201
        now = await state()
        assert (now.unsealed, now.unsealed_exact) == (3, True)
        report = (await client.get("/v1/audit/verify")).json()
        assert report["unsealed"] == 4
        assert report["ok"] is False and report["first_invalid_id"] == str(forged)

        monkeypatch.setattr(limits, "AUDIT_CONSOLE_WAITING_EXAMINE_MAX", 2)
        bounded = await state()
        assert bounded.unsealed_exact is False and 2 <= bounded.unsealed <= 3
    finally:
        await sealer.close()
        await engine.dispose()
