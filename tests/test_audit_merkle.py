"""The Merkle tree over sealed records and its proofs, checked against RFC 9162 step by step.

A trail of about 3,000 records is made through the API (transfer batches: one record per
transfer), sealed by the real sealer in stages so that several checkpoints of different sizes
exist. Then, with the independent implementation in tests/merkle_rfc9162.py:
- every checkpoint's root is MTH over the leaves computed from the API's own items (RFC 8785 by
  the library, no service code), and its signature checks with the public key;
- every record has an inclusion proof against every checkpoint that covers it, and it verifies;
- every pair of checkpoints has a consistency proof, and it verifies.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from ledger.audit import checkpoints as service
from ledger.audit.signing import public_pem
from ledger.core import limits
from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction
from ledger.core.settings import Settings
from tests import merkle_rfc9162 as rfc
from tests.audit_merkle_helpers import (
    audit_items,
    batch_of_transfers,
    checkpoint_signature_checks,
    funded_accounts,
    independent_leaf_hash,
    seal_and_checkpoint,
    session_keys,
    session_signer,
)
from tests.test_api_accounts import assert_problem

# Stages of the trail: transfers added, then sealed with a checkpoint. Sizes end up odd and
# even, powers of two and not, so every shape of path and proof occurs.
STAGES = (1000, 1, 1000, 997)


async def _proofs_for(settings: Settings, ids: list[uuid.UUID], size: int) -> list[Any]:
    """Inclusion proofs of `ids` at `size`, by the service, in one transaction."""
    engine = create_engine(settings, pool_size=1)
    try:

        async def work(session: Any) -> list[Any]:
            keys = session_keys()
            return [await service.inclusion_proof(session, keys, i, size) for i in ids]

        return await run_in_transaction(create_sessionmaker(engine), work)
    finally:
        await engine.dispose()


async def test_every_proof_of_a_few_thousand_records_verifies_by_rfc_9162(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    started = time.monotonic()
    source, target = await funded_accounts(client)
    await seal_and_checkpoint(settings)
    for count in STAGES:
        await batch_of_transfers(client, source, target, count)
        await seal_and_checkpoint(settings)
    made_s = time.monotonic() - started

    listed = (await client.get("/v1/audit/checkpoints", params={"limit": 1000})).json()["data"]
    sizes = [c["tree_size"] for c in listed]
    assert sizes == sorted(sizes, reverse=True)  # newest first
    assert len(sizes) == len(STAGES) + 1
    latest = (await client.get("/v1/audit/checkpoints/latest")).json()
    assert latest == listed[0]

    items = await audit_items(client)
    assert len(items) == sizes[0] >= 2_900  # every record sealed, one leaf each
    leaves = [independent_leaf_hash(item) for item in items]
    pem = public_pem(session_signer().public)
    roots = {}
    for checkpoint in listed:
        size = checkpoint["tree_size"]
        roots[size] = rfc.mth(leaves[:size])
        assert checkpoint["root_hash"] == roots[size].hex()
        assert checkpoint_signature_checks(checkpoint, pem)

    # Seal order is the API's order here (one writer at a time): leaf i is the i-th item.
    ids = [uuid.UUID(item_id) for item_id in _ids(items)]
    checked = 0
    for size in sizes:
        proofs = await _proofs_for(settings, ids[:size], size)
        for index, proof in enumerate(proofs):
            assert proof.leaf_index == index
            assert proof.leaf_hash == leaves[index].hex()
            path = [bytes.fromhex(h) for h in proof.audit_path]
            assert rfc.verify_inclusion(index, size, leaves[index], path, roots[size])
            checked += 1
        # The checker can fail: the last leaf's path does not prove the first leaf.
        if size > 1:
            path = [bytes.fromhex(h) for h in proofs[-1].audit_path]
            assert not rfc.verify_inclusion(size - 1, size, leaves[0], path, roots[size])
    assert checked == sum(sizes)

    for first in sorted(sizes):
        for second in sorted(sizes):
            if first > second:
                continue
            response = await client.get(
                "/v1/audit/consistency", params={"first": first, "second": second}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            proof = [bytes.fromhex(h) for h in body["proof"]]
            assert rfc.verify_consistency(first, second, roots[first], roots[second], proof)
            if first < second:  # a proof does not hold between other roots
                assert not rfc.verify_consistency(first, second, roots[second], roots[first], proof)
    # The time it took, for the report: the trail's making and sealing, then everything.
    print(f"trail of {sizes[0]} records made and sealed in {made_s:.1f} s")


def _ids(items: list[bytes]) -> list[str]:
    return [json.loads(item)["id"] for item in items]


async def test_proof_over_http_names_the_latest_checkpoint_by_default(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    source, target = await funded_accounts(client)
    await seal_and_checkpoint(settings)
    await batch_of_transfers(client, source, target, 6)
    await seal_and_checkpoint(settings)
    items = await audit_items(client)
    latest = (await client.get("/v1/audit/checkpoints/latest")).json()
    record_id = _ids(items)[4]
    response = await client.get(f"/v1/audit/records/{record_id}/proof")
    assert response.status_code == 200, response.text
    proof = response.json()
    assert proof["tree_size"] == latest["tree_size"] == len(items)
    root = bytes.fromhex(latest["root_hash"])
    path = [bytes.fromhex(h) for h in proof["audit_path"]]
    leaf = independent_leaf_hash(items[4])
    assert rfc.verify_inclusion(proof["leaf_index"], proof["tree_size"], leaf, path, root)
    at_four = await client.get(f"/v1/audit/records/{record_id}/proof", params={"tree_size": 5})
    assert at_four.status_code == 200
    assert at_four.json()["tree_size"] == 5


async def test_proof_and_checkpoint_refusals(client: httpx.AsyncClient, settings: Settings) -> None:
    assert_problem(
        await client.get("/v1/audit/checkpoints/latest"), 404, "audit_checkpoint_not_found"
    )
    source, target = await funded_accounts(client)
    unsealed_id = _ids(await audit_items(client))[0]
    unsealed = await client.get(f"/v1/audit/records/{unsealed_id}/proof", params={"tree_size": 1})
    assert_problem(unsealed, 409, "audit_record_not_sealed")
    await seal_and_checkpoint(settings)
    await batch_of_transfers(client, source, target, 2)
    await seal_and_checkpoint(settings)
    ids = _ids(await audit_items(client))
    missing = await client.get(f"/v1/audit/records/{uuid.uuid4()}/proof")
    assert_problem(missing, 404, "audit_record_not_found")
    late = await client.get(f"/v1/audit/records/{ids[-1]}/proof", params={"tree_size": 2})
    assert_problem(late, 409, "audit_record_not_sealed")
    for size in ("0", "-1", str(len(ids) + 1), str(2**80)):
        wrong = await client.get(f"/v1/audit/records/{ids[0]}/proof", params={"tree_size": size})
        assert wrong.status_code == 422, (size, wrong.text)
    # A size out of bounds is malformed; sizes the trail does not have (yet) have their own code.
    malformed = await client.get("/v1/audit/consistency", params={"first": 0, "second": 1})
    assert_problem(malformed, 422, "validation_error")
    for first, second in ((2, 1), (1, len(ids) + 1)):
        wrong = await client.get("/v1/audit/consistency", params={"first": first, "second": second})
        assert_problem(wrong, 422, "audit_tree_size_unavailable")
    listed = await client.get("/v1/audit/checkpoints", params={"limit": 1})
    assert listed.status_code == 200
    page = listed.json()
    assert len(page["data"]) == 1
    older = await client.get(
        "/v1/audit/checkpoints", params={"limit": 1, "cursor": page["next_cursor"]}
    )
    assert older.json()["data"][0]["tree_size"] < page["data"][0]["tree_size"]


@pytest.mark.parametrize("path", ["/v1/audit/checkpoints", "/v1/audit/checkpoints/latest"])
async def test_checkpoints_are_for_auditors(client: httpx.AsyncClient, path: str) -> None:
    created = await client.post("/v1/api-keys", json={"name": "ops", "role": "operator"})
    secret = created.json()["secret"]
    response = await client.get(path, headers={"Authorization": f"Bearer {secret}"})
    assert_problem(response, 403, "forbidden")


async def test_seals_made_before_the_tree_get_their_leaves_first(
    client: httpx.AsyncClient,
    settings: Settings,
    sync_db: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upgraded database has seals and no tree: the sealer adds their leaves, a few per
    transaction, before it seals anything new, and its first checkpoint covers them all."""
    source, target = await funded_accounts(client)
    await batch_of_transfers(client, source, target, 9)
    await seal_and_checkpoint(settings)
    sync_db.execute("SET session_replication_role = replica")  # as if sealed before 0010
    sync_db.execute("DELETE FROM audit_tree_nodes")
    sync_db.execute("DELETE FROM audit_checkpoints")
    sync_db.execute("SET session_replication_role = origin")
    await batch_of_transfers(client, source, target, 2)
    monkeypatch.setattr(limits, "AUDIT_TREE_LEAVES_PER_TX_MAX", 4)
    assert await seal_and_checkpoint(settings) == 2
    items = await audit_items(client)
    latest = (await client.get("/v1/audit/checkpoints/latest")).json()
    assert latest["tree_size"] == len(items)
    assert latest["root_hash"] == rfc.mth([independent_leaf_hash(i) for i in items]).hex()
