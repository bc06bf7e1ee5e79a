"""Checkpoints as C2SP signed notes (contract 9.1), checked by a verifier written from the
specifications (tests/c2sp_note.py), itself checked against the specification's own example.

`GET /v1/audit/checkpoints/latest` with `Accept: text/plain` answers the note; every JSON
checkpoint carries the same note as `"note"`, inside what its own signature covers. The origin
line is LEDGER_AUDIT_LOG_NAME, and a note of one log never verifies as another's.
"""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest

from ledger.audit.keys import keyring
from ledger.audit.sealer import AuditSealer
from ledger.audit.signing import public_pem
from ledger.cli.main import ensure_admin_key
from ledger.core.db import create_engine
from ledger.core.errors import ConfigurationError
from ledger.core.settings import Settings, load_settings
from tests import merkle_rfc9162 as rfc
from tests.audit_merkle_helpers import (
    audit_items,
    batch_of_transfers,
    checkpoint_signature_checks,
    funded_accounts,
    independent_leaf_hash,
    session_signer,
)
from tests.c2sp_note import NoteRejected, Verifier, open_note, parse_checkpoint
from tests.helpers import app_client

SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
ORIGIN = "example.com/ledger-test"


def _vkey(name: str) -> Verifier:
    """The session key's verifier key under `name`, made from the spec's rules."""
    from cryptography.hazmat.primitives import serialization

    public = session_signer().public.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key_id = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]
    material = base64.b64encode(b"\x01" + public).decode()
    return Verifier.parse(f"{name}+{key_id.hex()}+{material}")


def test_the_test_verifier_follows_the_specification_example() -> None:
    verifier = Verifier.parse(SPEC_VKEY)
    assert open_note(SPEC_NOTE.encode(), [verifier]) == "This is an example message.\n"
    with pytest.raises(NoteRejected):
        open_note(SPEC_NOTE.replace("example message", "exemplary note").encode(), [verifier])
    other = SPEC_NOTE.replace("\u2014 example.com/foo", "\u2014 example.com/bar")
    with pytest.raises(NoteRejected):  # the same key under another name is an unknown key
        open_note(other.encode(), [verifier])


async def _signed_trail(client: httpx.AsyncClient, settings: Settings) -> None:
    """Records, sealed and signed by the real sealer job with the log's configured origin."""
    source, target = await funded_accounts(client)
    await batch_of_transfers(client, source, target, 6)
    engine = create_engine(settings, pool_size=1)
    keys = keyring(settings, session_signer())
    sealer = AuditSealer(engine, signer=session_signer(), keys=keys, checkpoint_interval_seconds=0)
    try:
        while await sealer.step():
            pass
        await sealer.step()
    finally:
        await sealer.close()
        await engine.dispose()


async def test_the_latest_checkpoint_is_a_c2sp_note_of_the_configured_log(
    settings: Settings,
) -> None:
    named = settings.with_(audit_log_name=ORIGIN)
    await ensure_admin_key(named)
    async with app_client(named) as client:
        await _signed_trail(client, named)
        latest = (await client.get("/v1/audit/checkpoints/latest")).json()
        text = await client.get("/v1/audit/checkpoints/latest", headers={"Accept": "text/plain"})
        assert text.status_code == 200
        assert text.headers["content-type"].startswith("text/plain")
        assert text.text == latest["note"]

        head = parse_checkpoint(open_note(text.content, [_vkey(ORIGIN)]))
        assert head.origin == ORIGIN
        assert head.tree_size == latest["tree_size"]
        leaves = [independent_leaf_hash(item) for item in await audit_items(client)]
        assert head.root_hash == rfc.mth(leaves[: head.tree_size])
        assert text.text.splitlines()[-1].startswith(f"\u2014 {ORIGIN} ")

        # A note of this log is no note of another, under the same key: for a verifier of
        # `ledger/audit` the signature is an unknown key's; renamed, it no longer verifies.
        with pytest.raises(NoteRejected):
            open_note(text.content, [_vkey("ledger/audit")])
        renamed = text.text.replace(ORIGIN, "ledger/audit")
        with pytest.raises(NoteRejected):
            open_note(renamed.encode(), [_vkey("ledger/audit")])

        # The JSON checkpoint's own signature covers every other member, the note included.
        public = public_pem(session_signer().public)
        assert checkpoint_signature_checks(latest, public)
        assert not checkpoint_signature_checks({**latest, "note": renamed}, public)
        listed = (await client.get("/v1/audit/checkpoints")).json()["data"]
        assert all(open_note(c["note"].encode(), [_vkey(ORIGIN)]) for c in listed)
        assert (
            (await client.get("/v1/audit/checkpoints/latest"))
            .headers["content-type"]
            .startswith("application/json")
        )


def test_the_log_name_is_checked_when_settings_are_read() -> None:
    assert load_settings({}).audit_log_name == "ledger/audit"
    assert load_settings({"LEDGER_AUDIT_LOG_NAME": ORIGIN}).audit_log_name == ORIGIN
    for bad in ("has space", "a+b", "tab\there", "x" * 256):
        with pytest.raises(ConfigurationError):
            load_settings({"LEDGER_AUDIT_LOG_NAME": bad})
