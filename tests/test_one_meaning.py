"""One meaning per text (contract 9.1): a body that names a member twice anywhere is 422
`validation_error` naming the field, on every route that takes a body, and changes nothing;
`ledger audit verify-proof` refuses such a record file. An Idempotency-Key replays only a body
of the same form (whitespace, member order and escapes aside, every number as it was spelled),
and a same-id retry is a replay only with metadata of that same form."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.app import create_app
from ledger.cli.main import ensure_admin_key
from ledger.core.settings import Settings
from tests.audit_merkle_helpers import (
    audit_items,
    funded_accounts,
    seal_and_checkpoint,
    write_public_key,
)
from tests.fuzz_strategies import Known, Operation, Pairs, json_bytes, operations, valid_value
from tests.helpers import funded_pair
from tests.test_audit_checkpoints import _verify_proof
from tests.test_fuzz import BASE_URL, FINGERPRINTED_TABLES, _close, fingerprint, seed

JSON = {"content-type": "application/json"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, problem
    return problem


async def test_a_duplicated_amount_is_refused_not_the_last_one_posted(
    client: httpx.AsyncClient,
) -> None:
    _source, a, b = await funded_pair(client, 100)
    body = (
        f'{{"debit_account_id":"{a["id"]}","credit_account_id":"{b["id"]}","amount":5,"amount":7}}'
    ).encode()
    problem = assert_problem(
        await client.post("/v1/transfers", content=body, headers=JSON), 422, "validation_error"
    )
    assert problem["errors"][0]["field"] == "amount"
    listed = await client.get("/v1/transfers", params={"account_id": b["id"]})
    assert listed.json()["data"] == []


PATH_PARAMETER = re.compile(r"\{([a-z_]+)\}")

# -- every route that takes a body, with a name written twice at a random depth ----------------

# Routes whose body is free-form enough to hold metadata get one nested up to this deep.
METADATA_DEPTH_MAX = 8


def object_paths(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every non-empty object inside `value`, itself included."""
    if isinstance(value, dict):
        if value:
            yield path
        for name, member in value.items():
            yield from object_paths(member, (*path, name))
    elif isinstance(value, list):
        for index, member in enumerate(value):
            yield from object_paths(member, (*path, str(index)))


def with_duplicate(value: Any, path: tuple[str, ...], name: str, second: Any, at: int) -> Any:
    """`value` with the object at `path` naming `name` once more (value `second`), the repeat
    written at position `at` among the members after the first."""
    if not path:
        members = list(value.items())
        first = [k for k, _ in members].index(name)
        position = first + 1 + at % (len(members) - first)
        members.insert(position, (name, second))
        return Pairs(tuple(members))
    head, rest = path[0], path[1:]
    if isinstance(value, list):
        copy = list(value)
        copy[int(head)] = with_duplicate(value[int(head)], rest, name, second, at)
        return copy
    return {**value, head: with_duplicate(value[head], rest, name, second, at)}


def nested_metadata(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {"leaf": 1.5, "note": "a:b"}
    for level in range(depth - 1):
        inner = {f"level{level}": inner, "n": level}
    return inner


@st.composite
def duplicated_bodies(draw: st.DrawFn, operation: Operation, known: Known) -> tuple[bytes, str]:
    """A valid body for `operation` with one member named twice somewhere, and that member's
    path. In metadata the second value may differ; elsewhere it repeats the first, so the body
    is refused for the duplicate alone."""
    assert operation.body_schema is not None
    body = draw(valid_value(operation.body_schema, known))
    if isinstance(body, dict) and "metadata" in body:
        body["metadata"] = nested_metadata(draw(st.integers(1, METADATA_DEPTH_MAX)))
    if isinstance(body, dict) and isinstance(body.get("transfers"), list):
        for item in body["transfers"]:
            if draw(st.booleans()):
                item["metadata"] = nested_metadata(draw(st.integers(1, METADATA_DEPTH_MAX)))
    candidates = list(object_paths(body))
    if not candidates:  # an empty object: the only member it can have, twice
        body, candidates = {"amount": 1}, [()]
    path = draw(st.sampled_from(candidates))
    target: Any = body
    for part in path:
        target = target[int(part)] if isinstance(target, list) else target[part]
    name = draw(st.sampled_from(sorted(target)))
    in_metadata = "metadata" in path
    second = draw(st.sampled_from([target[name], 2, "other", {"x": 1}])) if in_metadata else None
    second = target[name] if second is None else second
    duplicated = with_duplicate(body, path, name, second, draw(st.integers(0, 8)))
    return json_bytes(duplicated, draw(st.booleans())), ".".join((*path, name))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    try:
        yield event_loop
    finally:
        event_loop.close()


BODY_OPERATIONS = [
    o
    for o in operations(create_app(Settings(database_url="postgresql://x@127.0.0.1:9/none")))
    if o.body_schema is not None
]


def test_every_body_route_refuses_a_name_written_twice_at_any_depth(
    settings: Settings, sync_db: psycopg.Connection[Any], loop: asyncio.AbstractEventLoop
) -> None:
    assert len(BODY_OPERATIONS) >= 10  # the app's routes, read from its document
    admin_secret = settings.admin_key or ""
    loop.run_until_complete(ensure_admin_key(settings))
    app = create_app(settings)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {admin_secret}"},
    )
    seen: set[str] = set()
    try:
        known = loop.run_until_complete(seed(http, admin_secret))

        @settings_for_routes
        @given(data=st.data())
        def one(data: st.DataObject) -> None:
            operation = data.draw(st.sampled_from(BODY_OPERATIONS))
            body, field = data.draw(duplicated_bodies(operation, known))
            # Every path parameter the route has (read from the document, so a route added
            # later is covered too) names an id the seed made, or a fresh one.
            target = PATH_PARAMETER.sub(
                lambda found: (known.ids_for(found[1]) or [str(uuid.uuid4())])[0],
                operation.path,
            )
            headers = {**JSON, "If-Match": known.etags[0], "Idempotency-Key": str(uuid.uuid4())}
            before = fingerprint(sync_db)
            response = loop.run_until_complete(
                http.request(operation.method, target, content=body, headers=headers)
            )
            where = f"{operation.id} {body!r}: {response.text}"
            assert response.status_code == 422, where
            problem = response.json()
            assert problem["code"] == "validation_error", where
            assert problem["errors"][0]["field"] == field, where
            after = fingerprint(sync_db)
            assert [t for t in FINGERPRINTED_TABLES if after[t] != before[t]] == [], where
            seen.add(operation.id)

        one()
        assert seen == {o.id for o in BODY_OPERATIONS}  # every route was tried
    finally:
        loop.run_until_complete(_close(app, http))


settings_for_routes = settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


# -- the record file of verify-proof --------------------------------------------------------------


async def test_verify_proof_refuses_a_record_with_a_prepended_action(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    await funded_accounts(client)
    await seal_and_checkpoint(settings)
    item = (await audit_items(client))[-1]
    record = json.loads(item)
    proof = await client.get(f"/v1/audit/records/{record['id']}/proof")
    (tmp_path / "proof.json").write_text(proof.text)
    (tmp_path / "checkpoint.json").write_text(
        (await client.get("/v1/audit/checkpoints/latest")).text
    )
    args = ["--checkpoint", str(tmp_path / "checkpoint.json")]
    args += ["--public-key", str(write_public_key(tmp_path))]
    (tmp_path / "genuine.json").write_bytes(item)
    genuine = _verify_proof(tmp_path / "genuine.json", tmp_path / "proof.json", args)
    assert genuine.returncode == 0, genuine.stderr
    # The same record with another action in front: a reader that keeps the first name sees
    # another record, one that keeps the last sees the genuine one (which the proof covers).
    forged = b'{"action":"account.delete",' + item.lstrip()[1:]
    assert json.loads(forged) == record
    (tmp_path / "forged.json").write_bytes(forged)
    refused = _verify_proof(tmp_path / "forged.json", tmp_path / "proof.json", args)
    assert refused.returncode == 1, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "'action'" in lines[0] and "twice" in lines[0], lines


# -- same text, same request -----------------------------------------------------------------------


def transfer_text(a: str, b: str, metadata: str, *, transfer_id: str | None = None) -> bytes:
    head = f'"id":"{transfer_id}",' if transfer_id else ""
    return (
        f'{{{head}"debit_account_id":"{a}","credit_account_id":"{b}","amount":3,'
        f'"metadata":{metadata}}}'
    ).encode()


@pytest.mark.parametrize("group_commit", [True, False])
async def test_an_idempotency_key_replays_only_the_same_spelling(
    settings: Settings, group_commit: bool
) -> None:
    from tests.helpers import app_client

    await ensure_admin_key(settings)
    async with app_client(settings.with_(group_commit=group_commit)) as client:
        _source, a, b = await funded_pair(client, 100)
        key = {**JSON, "Idempotency-Key": f"k-{uuid.uuid4()}"}
        first = await client.post(
            "/v1/transfers",
            content=transfer_text(a["id"], b["id"], '{"x":1.0,"y":"é"}'),
            headers=key,
        )
        assert first.status_code == 201, first.text
        # Whitespace, member order and string escapes carry no meaning: a replay.
        respelled = (
            f'{{ "metadata" : {{ "y" : "\\u00e9", "x" : 1.0 }}, "amount" : 3,\n'
            f'"credit_account_id":"{b["id"]}", "debit_account_id":"{a["id"]}" }}'
        ).encode()
        again = await client.post("/v1/transfers", content=respelled, headers=key)
        assert again.status_code == 201, again.text
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.content == first.content
        for other in ('{"x":1.00,"y":"é"}', '{"x":1,"y":"é"}', '{"x":1e0,"y":"é"}'):
            refused = await client.post(
                "/v1/transfers", content=transfer_text(a["id"], b["id"], other), headers=key
            )
            assert_problem(refused, 422, "idempotency_key_reused")
        assert (await client.get(f"/v1/accounts/{b['id']}")).json()["balances"]["posted"] == 3
        # An integer spelled `-0` is not `0` either (a floor of zero, written two ways).
        account_key = {**JSON, "Idempotency-Key": f"k-{uuid.uuid4()}"}
        code = f"acct:{uuid.uuid4().hex[:12]}"
        account = f'{{"code":"{code}","currency":"USD","normal_balance":"credit","min_balance":%s}}'
        made = await client.post("/v1/accounts", content=account % "0", headers=account_key)
        assert made.status_code == 201, made.text
        refused = await client.post("/v1/accounts", content=account % "-0", headers=account_key)
        assert_problem(refused, 422, "idempotency_key_reused")


async def test_a_same_id_retry_is_a_replay_only_with_metadata_of_the_same_form(
    client: httpx.AsyncClient,
) -> None:
    _source, a, b = await funded_pair(client, 100)
    transfer_id = str(uuid.uuid4())
    kept = '{"x":1.0,"tag":"é"}'
    created = await client.post(
        "/v1/transfers",
        content=transfer_text(a["id"], b["id"], kept, transfer_id=transfer_id),
        headers=JSON,
    )
    assert created.status_code == 201, created.text
    replay = transfer_text(a["id"], b["id"], '{"tag":"\\u00e9", "x":1.0}', transfer_id=transfer_id)
    again = await client.post("/v1/transfers", content=replay, headers=JSON)
    assert again.status_code == 200, again.text
    for other in ('{"x":1.00,"tag":"é"}', '{"x":-0,"tag":"é"}'):
        conflict = await client.post(
            "/v1/transfers",
            content=transfer_text(a["id"], b["id"], other, transfer_id=transfer_id),
            headers=JSON,
        )
        assert_problem(conflict, 409, "transfer_exists_with_different_fields")
    # What used to hide a different value behind the same form: a name written twice.
    twice = transfer_text(a["id"], b["id"], '{"x":1.00,"x":1.0,"tag":"é"}', transfer_id=transfer_id)
    assert_problem(
        await client.post("/v1/transfers", content=twice, headers=JSON), 422, "validation_error"
    )
    category_id = str(uuid.uuid4())
    category = (
        f'{{"id":"{category_id}","code":"c:{category_id[:8]}","currency":"USD",'
        f'"normal_balance":"credit","metadata":%s}}'
    )
    made = await client.post("/v1/categories", content=category % '{"r":2.50}', headers=JSON)
    assert made.status_code == 201, made.text
    same = await client.post("/v1/categories", content=category % '{ "r" : 2.50 }', headers=JSON)
    assert same.status_code == 200, same.text
    conflict = await client.post("/v1/categories", content=category % '{"r":2.5}', headers=JSON)
    assert_problem(conflict, 409, "category_exists_with_different_fields")
