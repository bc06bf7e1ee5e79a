"""Signed checkpoints catch what the hash chain alone cannot: a superuser who cuts off the tail of
the trail with everything in the database that vouches for it, or who rewrites a record and
redoes every later seal and the stored tree. `ledger audit verify` alone still passes; with the
checkpoint file and the public key it fails and names the first checkpoint that no longer holds.
`ledger audit verify-proof` checks one record offline."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from ledger.audit import chain
from ledger.audit import checkpoints as service
from ledger.audit.keys import keyring
from ledger.audit.sealer import sealer_engine
from ledger.audit.signing import generate_key, key_id_of, load_signer
from ledger.audit.tree import SealerTree
from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction
from ledger.core.settings import Settings
from tests.audit_helpers import CLI_TIMEOUT_SECONDS, LEDGER, cli_env, run_cli
from tests.audit_merkle_helpers import (
    audit_items,
    batch_of_transfers,
    deliver_to_file,
    funded_accounts,
    seal_and_checkpoint,
    write_public_key,
)
from tests.helpers import AUDIT_KEY_ENV


async def _trail_with_checkpoints(client: httpx.AsyncClient, settings: Settings) -> list[int]:
    """Records sealed in three stages, one checkpoint each; returns the checkpoint sizes."""
    source, target = await funded_accounts(client)
    await seal_and_checkpoint(settings)
    await batch_of_transfers(client, source, target, 20)
    await seal_and_checkpoint(settings)
    await batch_of_transfers(client, source, target, 10)
    await seal_and_checkpoint(settings)
    listed = (await client.get("/v1/audit/checkpoints")).json()["data"]
    return sorted(c["tree_size"] for c in listed)


@pytest.fixture
def superuser(sync_db: psycopg.Connection[Any]) -> Any:
    """The test database user is a superuser: triggers off, the way an intruder would."""
    sync_db.execute("SET session_replication_role = replica")
    yield sync_db
    sync_db.execute("SET session_replication_role = origin")


def _verify(db_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(db_url, "audit", "verify", *extra)


async def test_a_cut_off_tail_passes_the_chain_but_not_the_checkpoints(
    client: httpx.AsyncClient, settings: Settings, superuser: Any, tmp_path: Path
) -> None:
    sizes = await _trail_with_checkpoints(client, settings)
    file = tmp_path / "checkpoints.jsonl"
    assert await deliver_to_file(settings, file) == len(sizes) == 3
    pem = str(write_public_key(tmp_path))
    db_url = settings.database_url or ""
    before = _verify(db_url, "--checkpoints", str(file), "--public-key", pem)
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["checkpoints_checked"] == 3

    # Everything that vouches for the newest records goes: records, seals, their leaves and
    # every subtree hash over them, and the checkpoints the database kept.
    keep = sizes[1]
    superuser.execute(
        "DELETE FROM audit_records WHERE id IN (SELECT record_id FROM audit_seals WHERE seq > %s)",
        (keep,),
    )
    superuser.execute("DELETE FROM audit_seals WHERE seq > %s", (keep,))
    superuser.execute(
        "DELETE FROM audit_tree_nodes WHERE (idx + 1) * (1::bigint << level) > %s", (keep,)
    )
    superuser.execute("DELETE FROM audit_checkpoints WHERE tree_size > %s", (keep,))

    alone = _verify(db_url)
    assert alone.returncode == 0, alone.stderr  # the chain alone cannot tell
    assert json.loads(alone.stdout)["checked"] == keep
    caught = _verify(db_url, "--checkpoints", str(file), "--public-key", pem)
    assert caught.returncode == 1, caught.stdout
    report = json.loads(caught.stdout)
    assert report["ok"] is False
    assert report["first_invalid_checkpoint"] == sizes[2]
    assert report["checkpoints_checked"] == 2
    assert f"tree_size {sizes[2]}" in caught.stderr


def _rewrite_record(conn: psycopg.Connection[Any], record_id: str) -> None:
    """Change one record's answer and redo every later seal so the chain verifies again."""
    conn.execute(
        "UPDATE audit_records SET data = jsonb_set(data, '{result,amount}', '999'), "
        "data_text = jsonb_set(coalesce(data, data_text::jsonb), '{result,amount}', '999')::json"
        " WHERE id = %s",
        (record_id,),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT s.seq, s.sealed_at, s.horizon_xid, s.next_xid, r.*,"
            " coalesce(r.data, r.data_text::jsonb) AS data_hashed FROM audit_seals s "
            "JOIN audit_records r ON r.id = s.record_id ORDER BY s.seq"
        )
        rows = cur.fetchall()
    prev = chain.GENESIS_HASH
    for row in rows:
        facts = chain.PassFacts(row["horizon_xid"], row["next_xid"])
        record = {name: chain._plain(row[name]) for name in chain.RECORD_COLUMNS}
        record["data"] = row["data_hashed"]  # what the chain hashes (one copy since 0027)
        digest = chain.seal_hash(row["seq"], prev, row["sealed_at"], record, facts)
        conn.execute(
            "UPDATE audit_seals SET prev_hash = %s, hash = %s WHERE seq = %s",
            (prev, digest, row["seq"]),
        )
        prev = digest


async def _rebuild_stored_tree(settings: Settings, conn: psycopg.Connection[Any]) -> None:
    """The intruder redoes the stored tree from the records, with the service's own code."""
    conn.execute("DELETE FROM audit_tree_nodes")
    conn.execute("DELETE FROM audit_checkpoints")
    engine = sealer_engine(create_engine(settings).url)
    try:
        async with engine.connect() as sealer_conn:
            tree = SealerTree(None)
            while tree.size is None:
                await tree.advance(sealer_conn)
    finally:
        await engine.dispose()


async def test_a_consistent_rewrite_is_caught_by_the_checkpoints(
    client: httpx.AsyncClient, settings: Settings, superuser: Any, tmp_path: Path
) -> None:
    sizes = await _trail_with_checkpoints(client, settings)
    file = tmp_path / "checkpoints.jsonl"
    await deliver_to_file(settings, file)
    pem = str(write_public_key(tmp_path))
    items = await audit_items(client)
    victim = json.loads(items[sizes[0] + 3])  # a transfer of the second stage
    assert victim["action"] == "transfer.create"
    (tmp_path / "genuine.json").write_bytes(items[sizes[0] + 3])
    genuine_proof = await client.get(f"/v1/audit/records/{victim['id']}/proof")
    (tmp_path / "proof.json").write_text(genuine_proof.text)
    latest = (await client.get("/v1/audit/checkpoints/latest")).text
    (tmp_path / "checkpoint.json").write_text(latest)

    _rewrite_record(superuser, victim["id"])
    await _rebuild_stored_tree(settings, superuser)

    db_url = settings.database_url or ""
    alone = _verify(db_url)
    assert alone.returncode == 0, alone.stdout  # the rewrite is consistent
    caught = _verify(db_url, "--checkpoints", str(file), "--public-key", pem)
    assert caught.returncode == 1, caught.stdout
    report = json.loads(caught.stdout)
    assert report["first_invalid_checkpoint"] == sizes[1]  # the first that covers the record
    assert "no longer hash to its root" in report["checkpoint_reason"]

    # Offline: the genuine record is in the signed tree; the rewritten one is not, even with
    # a proof the rebuilt database serves for it.
    args = ["--checkpoint", str(tmp_path / "checkpoint.json"), "--public-key", pem]
    genuine = _verify_proof(tmp_path / "genuine.json", tmp_path / "proof.json", args)
    assert genuine.returncode == 0, genuine.stderr
    tampered_item = next(i for i in await audit_items(client) if victim["id"] in i.decode())
    assert json.loads(tampered_item)["data"]["result"]["amount"] == 999
    (tmp_path / "tampered.json").write_bytes(tampered_item)
    rebuilt_proof = await client.get(
        f"/v1/audit/records/{victim['id']}/proof", params={"tree_size": sizes[2]}
    )
    (tmp_path / "rebuilt-proof.json").write_text(rebuilt_proof.text)
    for record, proof in (
        ("tampered.json", "proof.json"),
        ("tampered.json", "rebuilt-proof.json"),
    ):
        refused = _verify_proof(tmp_path / record, tmp_path / proof, args)
        assert refused.returncode == 1, (record, proof, refused.stderr)
    other_key = tmp_path / "other.pem"
    generate_key(other_key)
    wrong_key = ["--checkpoint", str(tmp_path / "checkpoint.json"), "--public-key", str(other_key)]
    refused = _verify_proof(tmp_path / "genuine.json", tmp_path / "proof.json", wrong_key)
    assert refused.returncode == 1
    assert "signature" in refused.stderr


def _verify_proof(record: Path, proof: Path, rest: list[str]) -> subprocess.CompletedProcess[str]:
    """`ledger audit verify-proof` with no database at all in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [LEDGER, "audit", "verify-proof", "--record", str(record), "--proof", str(proof), *rest],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


async def test_chain_state_for_the_console(
    client: httpx.AsyncClient, settings: Settings, superuser: Any, tmp_path: Path
) -> None:
    keyed = settings.with_(audit_signing_key=os.environ[AUDIT_KEY_ENV])
    engine = create_engine(settings, pool_size=1)
    sessionmaker = create_sessionmaker(engine)

    async def state(s: Settings = keyed) -> service.ChainState:
        return await run_in_transaction(
            sessionmaker, lambda session: service.chain_state(session, keyring(s))
        )

    try:
        empty = await state()
        assert (empty.latest, empty.latest_verified) == (None, None)
        source, target = await funded_accounts(client)
        await seal_and_checkpoint(settings)
        await batch_of_transfers(client, source, target, 3)
        now = await state()
        assert now.latest is not None and now.latest_verified is True
        assert (now.sealed, now.unsealed) == (now.latest.tree_size, 3)
        other = tmp_path / "other.pem"
        generate_key(other)
        assert (await state(keyed.with_(audit_signing_key=str(other)))).latest_verified is False
        superuser.execute("UPDATE audit_tree_nodes SET hash = sha256(hash)")
        assert (await state()).latest_verified is False
    finally:
        await engine.dispose()


def test_keygen_writes_a_private_key_and_prints_its_public_key(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "signing.pem"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    made = subprocess.run(
        [LEDGER, "audit", "keygen", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    signer = load_signer(str(out))
    assert f"key_id {key_id_of(signer.public)}" in made.stderr
    again = subprocess.run(
        [LEDGER, "audit", "keygen", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )
    assert again.returncode == 2
    assert load_signer(str(out)).key_id == signer.key_id  # never overwritten


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize("key", ["unset", "not-a-key"])
def test_serve_and_worker_refuse_to_start_without_a_signing_key(
    db_url: str, tmp_path: Path, command: str, key: str
) -> None:
    env = cli_env(db_url)
    env.pop(AUDIT_KEY_ENV, None)
    if key == "not-a-key":
        bad = tmp_path / "bad.pem"
        bad.write_text("not a key")
        env[AUDIT_KEY_ENV] = str(bad)
    done = subprocess.run(
        [LEDGER, command, "--port", "1"] if command == "serve" else [LEDGER, command],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 2
    assert "LEDGER_AUDIT_SIGNING_KEY" in done.stderr
