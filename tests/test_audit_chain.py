"""Immutability and tamper evidence: the service cannot change the trail, and what a superuser
changes behind its back (edit, delete, insert) is caught by `ledger audit verify` and the API."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from sqlalchemy.exc import DBAPIError

from ledger.core.db import create_engine, sqlstate
from ledger.core.settings import Settings
from tests.audit_helpers import records, run_cli, seal_all
from tests.helpers import funded_pair, transfer

APPEND_ONLY = "append-only"


async def _some_history(client: AsyncTestClient[Any], transfers: int = 4) -> None:
    _, a, b = await funded_pair(client, 1_000)
    for _ in range(transfers):
        response = await transfer(client, a["id"], b["id"], 10)
        assert response.status_code == 201, response.text


async def _verify(client: AsyncTestClient[Any]) -> dict[str, Any]:
    response = await client.get("/v1/audit/verify")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def superuser(sync_db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """The test database user is a superuser: switch the triggers off the way an intruder would."""
    sync_db.execute("SET session_replication_role = replica")
    yield sync_db
    sync_db.execute("SET session_replication_role = origin")


async def test_the_service_cannot_change_the_trail_or_the_entries(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    await _some_history(client, transfers=1)
    assert await seal_all(settings) > 0
    engine = create_engine(settings, pool_size=1)
    statements = [
        "UPDATE audit_records SET action = 'nothing.happened'",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records",
        "UPDATE audit_seals SET hash = repeat('0', 64)",
        "DELETE FROM audit_seals",
        "UPDATE entries SET amount = amount + 1",
        "DELETE FROM entries",
    ]
    try:
        for statement in statements:
            with pytest.raises(DBAPIError) as refused:
                async with engine.begin() as conn:
                    await conn.execute(sa.text(statement))
            assert sqlstate(refused.value) == "42501", statement
            assert APPEND_ONLY in str(refused.value), statement
    finally:
        await engine.dispose()
    report = await _verify(client)
    assert report["ok"] is True
    assert report["checked"] > 0


async def test_an_untouched_chain_verifies_over_http_and_cli(
    client: AsyncTestClient[Any], settings: Settings, db_url: str
) -> None:
    await _some_history(client)
    sealed = await seal_all(settings)
    report = await _verify(client)
    assert report == {
        "ok": True,
        "checked": sealed,
        "unsealed": 0,
        "head_seq": sealed,
        "head_hash": report["head_hash"],
    }
    assert len(report["head_hash"]) == 64
    cli = run_cli(db_url, "audit", "verify")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout.strip().splitlines()[-1]) == report

    # New records wait for the next pass without being an error.
    await _some_history(client, transfers=1)
    waiting = await _verify(client)
    assert waiting["ok"] is True
    assert waiting["unsealed"] > 0


def _middle_record(db: psycopg.Connection[Any]) -> dict[str, Any]:
    found = records(db)
    assert len(found) >= 5
    return found[len(found) // 2]


async def test_an_edited_record_is_named(
    client: AsyncTestClient[Any],
    settings: Settings,
    db_url: str,
    superuser: psycopg.Connection[Any],
) -> None:
    await _some_history(client)
    await seal_all(settings)
    victim = _middle_record(superuser)
    # Its one copy (0027): the text the trail answers, which the chain hashes parsed.
    edited = superuser.execute(
        "UPDATE audit_records SET data_text = jsonb_set(data_text::jsonb, '{result,amount}', '1')"
        "::json WHERE id = %s AND data IS NULL",
        (victim["id"],),
    )
    assert edited.rowcount == 1
    report = await _verify(client)
    assert report["ok"] is False
    assert report["first_invalid_id"] == str(victim["id"])
    assert "changed" in report["reason"]
    cli = run_cli(db_url, "audit", "verify")
    assert cli.returncode == 1
    assert json.loads(cli.stdout)["first_invalid_id"] == str(victim["id"])
    assert str(victim["id"]) in cli.stderr


async def test_an_edited_answer_text_is_named(
    client: AsyncTestClient[Any], settings: Settings, superuser: psycopg.Connection[Any]
) -> None:
    """A record written from 0009 until 0027 keeps its data twice, and the chain hashes the
    jsonb: an edit of `data_text` (what GET /v1/audit answers, exactly as written) alone must
    still be caught, by comparing it with the sealed jsonb."""
    await _some_history(client)
    await seal_all(settings)
    assert (await _verify(client))["ok"] is True
    victim = _middle_record(superuser)
    # The record as such a release wrote it: the same value in both columns (the chain hashes
    # the same jsonb, so it still verifies).
    superuser.execute(
        "UPDATE audit_records SET data = data_text::jsonb WHERE id = %s", (victim["id"],)
    )
    assert (await _verify(client))["ok"] is True
    superuser.execute(
        "UPDATE audit_records SET data_text = jsonb_set(data, '{result,amount}', '1')::json "
        "WHERE id = %s",
        (victim["id"],),
    )
    report = await _verify(client)
    assert report["ok"] is False
    assert report["first_invalid_id"] == str(victim["id"])
    assert "changed" in report["reason"]


async def test_a_deleted_record_is_named(
    client: AsyncTestClient[Any], settings: Settings, superuser: psycopg.Connection[Any]
) -> None:
    await _some_history(client)
    await seal_all(settings)
    victim = _middle_record(superuser)
    superuser.execute("DELETE FROM audit_records WHERE id = %s", (victim["id"],))
    report = await _verify(client)
    assert report["ok"] is False
    assert report["first_invalid_id"] == str(victim["id"])
    assert "deleted" in report["reason"]


async def test_a_deleted_record_and_seal_break_the_sequence(
    client: AsyncTestClient[Any], settings: Settings, superuser: psycopg.Connection[Any]
) -> None:
    await _some_history(client)
    await seal_all(settings)
    victim = _middle_record(superuser)
    seal = superuser.execute(
        "SELECT seq FROM audit_seals WHERE record_id = %s", (victim["id"],)
    ).fetchone()
    assert seal is not None
    superuser.execute("DELETE FROM audit_seals WHERE record_id = %s", (victim["id"],))
    superuser.execute("DELETE FROM audit_records WHERE id = %s", (victim["id"],))
    following = superuser.execute(
        "SELECT record_id FROM audit_seals WHERE seq = %s", (seal[0] + 1,)
    ).fetchone()
    assert following is not None
    report = await _verify(client)
    assert report["ok"] is False
    assert report["first_invalid_id"] == str(following[0])
    assert f"seal {seal[0]} is missing" in report["reason"]


async def test_an_edited_seal_is_caught(
    client: AsyncTestClient[Any], settings: Settings, superuser: psycopg.Connection[Any]
) -> None:
    await _some_history(client)
    await seal_all(settings)
    victim = _middle_record(superuser)
    superuser.execute(
        "UPDATE audit_seals SET sealed_at = sealed_at + interval '1 second' WHERE record_id = %s",
        (victim["id"],),
    )
    report = await _verify(client)
    assert report["ok"] is False
    assert report["first_invalid_id"] == str(victim["id"])


def _forge(db: psycopg.Connection[Any], *, seq: int | None, hours_ago: int) -> uuid.UUID:
    """A record that looks like the others, written `hours_ago` in the past."""
    forged = uuid.uuid4()
    db.execute(
        "INSERT INTO audit_records (id, seq, at, actor_id, actor_name, action, object_type, "
        "object_id, request_id, trace_id, client_addr, data, data_text) "
        "SELECT %s, coalesce(%s, nextval(pg_get_serial_sequence('audit_records', 'seq'))), "
        "       now() - make_interval(hours => %s), actor_id, actor_name, 'transfer.create', "
        "       'transfer', %s, request_id, trace_id, client_addr, data, data_text "
        "  FROM audit_records ORDER BY seq LIMIT 1",
        (forged, seq, hours_ago, str(uuid.uuid4())),
    )
    return forged


async def test_a_forged_insertion_is_named_before_and_after_sealing(
    client: AsyncTestClient[Any], settings: Settings, superuser: psycopg.Connection[Any]
) -> None:
    await _some_history(client)
    await seal_all(settings)
    victim = _middle_record(superuser)
    # Squeeze a record between sealed ones: an unused seq just below the victim's.
    row = superuser.execute(
        "SELECT max(seq) FROM audit_records WHERE seq < %s", (victim["seq"],)
    ).fetchone()
    assert row is not None
    superuser.execute("ALTER TABLE audit_records DROP CONSTRAINT uq_audit_records_seq")
    forged = _forge(superuser, seq=row[0], hours_ago=2)

    report = await _verify(client)
    assert report["ok"] is False
    assert report["unsealed"] == 1
    assert report["first_invalid_id"] == str(forged)
    assert "unsealed" in report["reason"]

    # An unsuspecting sealer seals it later (and says so): still named, as sealed late.
    late_before = REGISTRY.get_sample_value("ledger_audit_sealed_late_total") or 0
    assert await seal_all(settings) == 1
    assert REGISTRY.get_sample_value("ledger_audit_sealed_late_total") == late_before + 1
    report = await _verify(client)
    assert report["ok"] is False
    assert report["unsealed"] == 0
    assert report["first_invalid_id"] == str(forged)
    assert "sealed after" in report["reason"]


async def test_a_forged_tail_record_is_named(
    client: AsyncTestClient[Any], settings: Settings, superuser: psycopg.Connection[Any]
) -> None:
    await _some_history(client)
    await seal_all(settings)
    forged = _forge(superuser, seq=None, hours_ago=24)
    report = await _verify(client)
    assert report["ok"] is False
    assert report["first_invalid_id"] == str(forged)


async def test_a_record_that_commits_late_is_sealed_not_skipped(
    client: AsyncTestClient[Any], settings: Settings, db_url: str, sync_db: psycopg.Connection[Any]
) -> None:
    """The late-commit problem: a record takes its seq, later records commit and get sealed, and
    only then does the first commit. The sealer must still seal it, exactly once."""
    await _some_history(client, transfers=1)
    with psycopg.connect(db_url) as slow:
        slow.execute(
            "INSERT INTO audit_records (id, at, actor_name, action, object_type, object_id, data) "
            "VALUES (%s, now(), 'slow', 'account.update', 'account', 'late', '{}')",
            (uuid.uuid4(),),
        )
        slow_seq = slow.execute("SELECT max(seq) FROM audit_records").fetchone()
        await _some_history(client, transfers=2)
        assert await seal_all(settings) > 0
        sealed_beyond = sync_db.execute(
            "SELECT count(*) FROM audit_records r JOIN audit_seals s ON s.record_id = r.id "
            "WHERE r.seq > %s",
            (slow_seq[0] if slow_seq else 0,),
        ).fetchone()
        assert sealed_beyond is not None
        assert sealed_beyond[0] > 0
        slow.commit()
    assert await seal_all(settings) == 1
    counts = sync_db.execute(
        "SELECT (SELECT count(*) FROM audit_records), (SELECT count(*) FROM audit_seals), "
        "(SELECT count(DISTINCT record_id) FROM audit_seals), (SELECT max(seq) FROM audit_seals)"
    ).fetchone()
    assert counts is not None
    records_n, seals_n, distinct_n, head = counts
    assert records_n == seals_n == distinct_n == head
    report = await _verify(client)
    assert report["ok"] is True
    assert report["unsealed"] == 0
