"""A record's leaf: RFC 8785 bytes of its audit item, with a total rule beyond I-JSON.

Where RFC 8785 is defined (I-JSON), the leaf is exactly what the `rfc8785` library writes. Where
it is not (integers beyond 2**53-1: amounts and balances reach 2**63-1, metadata keeps any
integer), the rule writes the integer's digits, so a number never becomes a string; the sealer
seals any record the service can write, and its proofs verify."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import rfc8785
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ledger.audit.leaf import canonical, canonical_by_walk
from ledger.core import limits
from ledger.core.settings import Settings
from tests import merkle_rfc9162 as rfc
from tests.audit_merkle_helpers import audit_items, seal_and_checkpoint
from tests.helpers import create_account
from tests.test_metadata_exact import json_texts

SAFE = 2**53 - 1
i_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-SAFE, SAFE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(i_json, st.booleans())
def test_on_i_json_the_leaf_is_rfc_8785(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert canonical(text) == canonical_by_walk(text) == rfc8785.dumps(json.loads(text))


@hypothesis_settings(max_examples=300, deadline=None)
@given(json_texts)
def test_any_json_text_has_one_canonical_form(text: str) -> None:
    once = canonical(text)
    assert once == canonical_by_walk(
        text
    )  # the fast path writes what the rule, value by value, does
    assert canonical(once) == once  # a fixed point: canonical text is its own canonical form
    # The same values read as doubles (JCS writes the double a number denotes: `6.4e+16` and
    # `64000000000000000` are one number).
    assert json.loads(once, parse_int=float) == json.loads(text, parse_int=float)


def test_every_bmp_character_is_written_as_rfc_8785_writes_it() -> None:
    strings = [f"a{chr(c)}b" for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    members = {s: i for i, s in enumerate(strings)}  # as member names too, sorted
    for value in (strings, members):
        text = json.dumps(value)  # ASCII with escapes: the text is plain for the fast path
        assert canonical(text) == rfc8785.dumps(value)


def test_beyond_i_json_numbers_stay_numbers() -> None:
    assert canonical('{"a":9007199254740993}') == b'{"a":9007199254740993}'
    assert canonical('{"a":9007199254740993}') != canonical('{"a":"9007199254740993"}')
    assert canonical("[-0, 1.0, 1E5, 2.50]") == b"[0,1,100000,2.5]"
    assert canonical('{"n":1e400}') == b'{"n":1e400}'  # a hand-made item: its text
    assert canonical('"\\ud83d x"') == b'"\\ud83d x"'  # a lone surrogate, escaped
    big = "9" * 5_000  # beyond Python's int-from-text digit limit: never converted
    assert canonical(f"[{big}]") == f"[{big}]".encode()


async def test_the_largest_amount_and_metadata_integers_are_sealed_and_proven(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    target = await create_account(client)
    metadata = '{"big":123456789012345678901234567890,"upper":1E5}'
    body = (
        f'{{"debit_account_id":"{source["id"]}","credit_account_id":"{target["id"]}",'
        f'"amount":{limits.AMOUNT_MAX},"metadata":{metadata}}}'
    )
    response = await client.post(
        "/v1/transfers", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text
    items = await audit_items(client)
    assert await seal_and_checkpoint(settings) == len(items)
    item = items[-1]
    assert str(limits.AMOUNT_MAX) in item.decode()
    leaf = hashlib.sha256(b"\x00" + canonical(item)).digest()
    latest = (await client.get("/v1/audit/checkpoints/latest")).json()
    record_id = json.loads(item)["id"]
    proof = (await client.get(f"/v1/audit/records/{record_id}/proof")).json()
    assert proof["leaf_hash"] == leaf.hex()
    path = [bytes.fromhex(h) for h in proof["audit_path"]]
    root = bytes.fromhex(latest["root_hash"])
    assert rfc.verify_inclusion(proof["leaf_index"], proof["tree_size"], leaf, path, root)
