"""What Schemathesis found in the service, each pinned by a plain test: OPTIONS names every
method, timestamps are RFC 3339 strings only, `null` is no filter, cursors have one shape, a
malformed PATCH body is named before a stale If-Match."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import create_account, funded_pair, transfer


async def test_options_allows_every_method_of_the_route(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await client.options(f"/v1/accounts/{account['id']}")
    assert response.status_code == 204
    assert response.headers["allow"] == "GET, OPTIONS, PATCH"
    listing = await client.options("/v1/transfers")
    assert listing.headers["allow"] == "GET, OPTIONS, POST"


@pytest.mark.parametrize("value", ["1e-102", "0", "1700000000", "2026-01-01"])
async def test_a_timestamp_is_rfc_3339_not_a_number(client: httpx.AsyncClient, value: str) -> None:
    account = await create_account(client)
    response = await client.get(f"/v1/accounts/{account['id']}/balance", params={"as_of": value})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    good = await client.get(
        f"/v1/accounts/{account['id']}/balance", params={"as_of": "2026-01-01T00:00:00+02:00"}
    )
    assert good.status_code == 200, good.text
    assert good.json()["as_of"] == "2025-12-31T22:00:00Z"


@pytest.mark.parametrize(
    ("path", "name"),
    [("/v1/transfers", "state"), ("/v1/transfers", "account_id"), ("/v1/accounts", "status")],
)
async def test_null_is_no_filter(client: httpx.AsyncClient, path: str, name: str) -> None:
    """`?state=null` listed every transfer: Litestar read it as "absent"."""
    response = await client.get(path, params={name: "null"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_cursors_are_the_key_they_continue_after(client: httpx.AsyncClient) -> None:
    _source, a, _b = await funded_pair(client, 10)
    for _ in range(2):
        assert (await transfer(client, a["id"], _b["id"], 1)).status_code == 201
    first = (await client.get(f"/v1/accounts/{a['id']}/entries", params={"limit": 1})).json()
    assert first["next_cursor"] == str(first["data"][0]["sequence"])
    rest = await client.get(
        f"/v1/accounts/{a['id']}/entries", params={"cursor": first["next_cursor"]}
    )
    sequences = [e["sequence"] for e in rest.json()["data"]]
    assert sequences and min(sequences) > first["data"][0]["sequence"]
    accounts = (await client.get("/v1/accounts", params={"limit": 1})).json()
    assert accounts["next_cursor"] == accounts["data"][0]["id"]
    for bad in ("1" * 19, "-1", "x", "1 "):
        refused = await client.get(f"/v1/accounts/{a['id']}/entries", params={"cursor": bad})
        assert refused.status_code == 422, bad


async def test_a_malformed_patch_body_is_named_before_a_stale_if_match(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    url = f"/v1/accounts/{account['id']}"
    nul = await client.patch(url, json={"metadata": {"a": "\u0000"}}, headers={"If-Match": '"7"'})
    assert nul.status_code == 422 and nul.json()["code"] == "validation_error", nul.text
    stale = await client.patch(url, json={"metadata": {"a": 1}}, headers={"If-Match": '"7"'})
    assert stale.status_code == 412 and stale.json()["code"] == "precondition_failed"
    blank = await client.patch(url, json={"metadata": {}}, headers={"If-Match": " "})
    assert blank.status_code == 428 and blank.json()["code"] == "precondition_required"
    assert (await client.get(url)).json()["metadata"] == {}  # nothing changed


async def test_after_and_cursor_naming_one_position_agree(client: httpx.AsyncClient) -> None:
    same = await client.get("/v1/events", params={"after": "0", "cursor": "00"})
    assert same.status_code == 200, same.text
    different = await client.get("/v1/events", params={"after": "0", "cursor": "5"})
    assert different.status_code == 422


async def test_text_rules_are_in_the_document_and_enforced(client: httpx.AsyncClient) -> None:
    """No NUL in a reference or an audit filter, no empty filter: the document says so (so a
    schema-valid request is never refused for it), and the service refuses the rest."""
    document = (await client.get("/schema/openapi.json")).json()
    reference = document["components"]["schemas"]["TransferCreate"]["properties"]["reference"]
    (string,) = [m for m in reference["oneOf"] if m.get("type") == "string"]
    assert string["pattern"] == "^[^\\x00]*$"
    audit = {p["name"]: p["schema"] for p in document["paths"]["/v1/audit"]["get"]["parameters"]}
    assert audit["actor"]["minLength"] == 1
    for params in ({"actor": ""}, {"object_id": "a\u0000b"}, {"action": "x" * 65}):
        response = await client.get("/v1/audit", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["code"] == "validation_error"
    assert (await client.get("/v1/audit", params={"actor": "cli"})).status_code == 200


@pytest.mark.parametrize("body", [b" ", b"\r\n", b"\x0c\r", b"\t"])
async def test_an_optional_body_of_whitespace_is_not_json_and_changes_nothing(
    client: httpx.AsyncClient, body: bytes
) -> None:
    """A void takes no body or `{}`; whitespace alone is a body that is not JSON (Schemathesis
    sent a form feed and got the empty cancel). Nothing is voided or remembered."""
    _, debit, credit = await funded_pair(client, 100)
    held = await transfer(client, debit["id"], credit["id"], 10, pending=True)
    assert held.status_code == 201, held.text
    transfer_id = held.json()["id"]
    refused = await client.post(
        f"/v1/transfers/{transfer_id}/void",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "validation_error"
    assert (await client.get(f"/v1/transfers/{transfer_id}")).json()["state"] == "pending"
    empty = await client.post(f"/v1/transfers/{transfer_id}/void")  # no body at all: still fine
    assert empty.status_code == 200, empty.text
    assert empty.json()["state"] == "voided"
