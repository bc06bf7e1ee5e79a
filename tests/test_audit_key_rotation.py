"""Key rotation is safe everywhere, and delivery takes only what the keys signed (contract 9.1).

Every check (the API's listing, the console's chain state, the worker's deliveries, `ledger
audit verify`) verifies a checkpoint with the key its `key_id` names among the configured ones:
the signing key's own and LEDGER_AUDIT_PUBLIC_KEYS. After a rotation the old key's checkpoints
still verify when its public key is configured, and only then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ledger.audit import checkpoints as service
from ledger.audit.keys import keyring
from ledger.audit.sealer import AuditSealer
from ledger.audit.signing import generate_key, load_signer, public_pem
from ledger.cli.main import ensure_admin_key
from ledger.core import limits
from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction
from ledger.core.settings import Settings
from ledger.worker.checkpoints import deliver_step, file_sender, file_target
from tests.audit_helpers import run_cli
from tests.audit_insider_helpers import checkpoint_rows, record_count
from tests.audit_merkle_helpers import (
    batch_of_transfers,
    deliver_to_file,
    funded_accounts,
    session_keys,
    session_signer,
)
from tests.helpers import app_client


async def _seal(settings: Settings) -> None:
    """The real sealer job with `settings`' signing key and public keys, until all is signed."""
    signer = load_signer(settings.audit_signing_key)
    engine = create_engine(settings, pool_size=1)
    sealer = AuditSealer(
        engine, signer=signer, keys=keyring(settings, signer), checkpoint_interval_seconds=0
    )
    try:
        while await sealer.step():
            pass
        await sealer.step()
    finally:
        await sealer.close()
        await engine.dispose()


async def _chain_state(settings: Settings) -> service.ChainState:
    engine = create_engine(settings, pool_size=1)
    try:
        return await run_in_transaction(
            create_sessionmaker(engine),
            lambda session: service.chain_state(session, keyring(settings)),
        )
    finally:
        await engine.dispose()


async def test_old_checkpoints_verify_with_the_key_their_key_id_names(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    old_pem = tmp_path / "old.pem"
    old_pem.write_text(public_pem(session_signer().public))
    new_key = tmp_path / "new-key.pem"
    generate_key(new_key)
    rotated = settings.with_(audit_signing_key=str(new_key), audit_public_keys=(str(old_pem),))
    forgot = settings.with_(audit_signing_key=str(new_key))

    source, target = await funded_accounts(client)
    await _seal(settings)  # the old key signs
    state = await _chain_state(rotated)
    assert state.latest is not None and state.latest.key_id == session_signer().key_id
    assert state.latest_verified is True  # by the old key, which its key_id names
    assert (await _chain_state(forgot)).latest_verified is False

    await batch_of_transfers(client, source, target, 4)
    await _seal(rotated)  # the new key signs on, after the old key's checkpoints
    await ensure_admin_key(rotated)
    async with app_client(rotated) as api:
        listed = (await api.get("/v1/audit/checkpoints")).json()["data"]
        assert {c["key_id"] for c in listed} == {
            session_signer().key_id,
            load_signer(str(new_key)).key_id,
        }
        assert (await api.get("/v1/audit/verify")).json()["ok"] is True
    async with app_client(forgot) as api:
        listed = (await api.get("/v1/audit/checkpoints")).json()["data"]
        assert {c["key_id"] for c in listed} == {load_signer(str(new_key)).key_id}
        report = (await api.get("/v1/audit/verify")).json()
        assert report["problem"] == "checkpoint_signature", report

    file = tmp_path / "checkpoints.jsonl"
    await deliver_to_file(settings, file, keyring(rotated))
    sizes = [json.loads(line)["tree_size"] for line in file.read_text().splitlines()]
    assert sizes == [size for size, _ in checkpoint_rows_of(settings)]
    new_pub = tmp_path / "new.pem"
    new_pub.write_text(public_pem(load_signer(str(new_key)).public))
    db_url = settings.database_url or ""
    both = run_cli(
        db_url, "audit", "verify", "--checkpoints", str(file),
        "--public-key", str(old_pem), "--public-key", str(new_pub),
    )  # fmt: skip
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout)["checkpoints_checked"] == len(sizes)


def checkpoint_rows_of(settings: Settings) -> list[tuple[int, str]]:
    with psycopg.connect(settings.database_url or "") as db:
        return checkpoint_rows(db)


async def test_genuine_checkpoints_flow_past_a_flood_of_refused_rows(
    client: httpx.AsyncClient,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More refused rows between two genuine checkpoints than one step reads: the delivery
    passes over them step by step, and the next genuine checkpoint still reaches the file."""
    monkeypatch.setattr(limits, "AUDIT_CHECKPOINT_DELIVERY_BATCH_MAX", 4)
    monkeypatch.setattr(limits, "AUDIT_CHECKPOINT_SCAN_MAX", 8)
    source, target = await funded_accounts(client)
    await _seal(settings)
    file = tmp_path / "checkpoints.jsonl"
    assert await deliver_to_file(settings, file) == 1
    first = record_count(sync_db)
    await batch_of_transfers(client, source, target, 30)
    sync_db.execute(
        "INSERT INTO audit_checkpoints (tree_size, root_hash, timestamp, key_id, signature) "
        "SELECT s, root_hash, timestamp, key_id, signature FROM audit_checkpoints, "
        "generate_series(%s::bigint, %s::bigint) AS s WHERE tree_size = %s",
        (first + 1, first + 25, first),
    )
    await _seal(settings)  # signs at the head, past the flood
    keys = session_keys()
    to_file, send = file_target(file, keys), file_sender(file, keys)
    engine = create_engine(settings, pool_size=1)
    try:
        for _ in range(10):  # the loop of `ledger worker`: one target, a step at a time
            await deliver_step(create_sessionmaker(engine), to_file, send, keys)
    finally:
        await engine.dispose()
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert [c["tree_size"] for c in lines] == [first, record_count(sync_db)]

    # A file that an older version fed a junk line last: the junk is passed over, and the next
    # genuine checkpoint is appended after it.
    with file.open("a") as out:
        out.write(json.dumps({**lines[-1], "tree_size": 10**12, "signature": "AAAA"}) + "\n")
    await batch_of_transfers(client, source, target, 2)
    await _seal(settings)
    await deliver_to_file(settings, file)
    sizes = [json.loads(line)["tree_size"] for line in file.read_text().splitlines()]
    assert sizes[-1] == record_count(sync_db) and sizes[-2] == 10**12
