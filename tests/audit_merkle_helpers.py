"""What the verifiable-audit tests share: a trail made through the API, sealed with signed
checkpoints, and the independent checks of a checkpoint (signature, key id)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.audit.keys import Keyring
from ledger.audit.sealer import AuditSealer
from ledger.audit.signing import Signer, load_signer, public_pem
from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.settings import Settings
from ledger.worker.checkpoints import deliver_step, file_sender, file_target
from tests.helpers import AUDIT_KEY_ENV, create_account, transfer


def session_signer() -> Signer:
    return load_signer(os.environ[AUDIT_KEY_ENV])


def session_keys(signer: Signer | None = None) -> Keyring:
    """The keyring a worker with the session's key (and no other) builds."""
    signer = signer or session_signer()
    return Keyring(keys={signer.key_id: signer.public}, signer=signer)


def write_public_key(tmp_path: Path, signer: Signer | None = None) -> Path:
    path = tmp_path / "public.pem"
    path.write_text(public_pem((signer or session_signer()).public))
    return path


async def seal_and_checkpoint(settings: Settings, signer: Signer | None = None) -> int:
    """Sealer passes (the real sealer, checkpoint interval 0) until one seals nothing: every
    record sealed, its leaves stored, one checkpoint of the tree at the end of the first pass
    that grew it. Returns how many records were sealed."""
    engine = create_engine(settings, pool_size=1)
    sealer = AuditSealer(engine, signer=signer or session_signer(), checkpoint_interval_seconds=0)
    total = 0
    try:
        while done := await sealer.step():
            total += done
        return total
    finally:
        await sealer.close()
        await engine.dispose()


async def deliver_to_file(settings: Settings, path: Path, keys: Keyring | None = None) -> int:
    """The worker's file delivery, run in this process until nothing is left; returns how many
    lines the file has."""
    engine = create_engine(settings, pool_size=1)
    keys = keys or session_keys()
    try:
        sessionmaker = create_sessionmaker(engine)
        target, send = file_target(path, keys), file_sender(path, keys)
        while await deliver_step(sessionmaker, target, send, keys):
            pass
    finally:
        await engine.dispose()
    return line_count(path)


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def batch_of_transfers(
    client: httpx.AsyncClient, source: str, target: str, count: int
) -> None:
    items = [
        {"debit_account_id": source, "credit_account_id": target, "amount": 1 + i % 7}
        for i in range(count)
    ]
    response = await client.post("/v1/transfers/batch", json={"atomic": False, "transfers": items})
    assert response.status_code == 200, response.text
    assert all(r["status"] == 201 for r in response.json()["results"])


async def funded_accounts(client: httpx.AsyncClient) -> tuple[str, str]:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    target = await create_account(client)
    assert (await transfer(client, source["id"], target["id"], 5)).status_code == 201
    return source["id"], target["id"]


async def audit_items(client: httpx.AsyncClient) -> list[bytes]:
    """Every record's GET /v1/audit item, oldest first, as the raw JSON text answered."""
    items: list[bytes] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/audit", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(json.dumps(item).encode() for item in body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def independent_leaf_hash(item: bytes) -> bytes:
    """RFC 8785 by the library on the parsed item, then RFC 9162's leaf hash: no service code."""
    return hashlib.sha256(b"\x00" + rfc8785.dumps(json.loads(item))).digest()


def checkpoint_signature_checks(checkpoint: dict[str, Any], public_pem_text: str) -> bool:
    public = serialization.load_pem_public_key(public_pem_text.encode())
    assert isinstance(public, Ed25519PublicKey)
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if checkpoint["key_id"] != hashlib.sha256(der).hexdigest():
        return False
    signed = {k: v for k, v in checkpoint.items() if k != "signature"}
    try:
        public.verify(base64.b64decode(checkpoint["signature"]), rfc8785.dumps(signed))
    except Exception:
        return False
    return True
