"""The OpenAPI document: every /v1 operation shows the body it takes and the body it answers, and
a Struct's schema is as exact as its decoding (unknown fields refused, integer bounds exact)."""

from __future__ import annotations

from typing import Any

import httpx

from ledger.core import limits
from ledger.core.schemas import ACCOUNT_CODE_PATTERN

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
BODY_METHODS = ("post", "patch", "put")
SCHEMA_PREFIX = "#/components/schemas/"

# Every /v1 route that takes a body, and the Struct it decodes into.
REQUEST_BODIES = {
    "createAccount": "AccountCreate",
    "patchAccount": "AccountPatch",
    "createTransfer": "TransferCreate",
    "createTransferBatch": "BatchCreate",
    "postTransfer": "AmountBody",
    "voidTransfer": "EmptyBody",
    "reverseTransfer": "AmountBody",
    "createApiKey": "ApiKeyCreate",
    # money movement
    "createExchange": "ExchangeCreate",
    "createMonitor": "MonitorCreate",
    "putPeriodLock": "PeriodLockPut",
    "createCategory": "CategoryCreate",
    "patchCategory": "CategoryPatch",
    "addCategoryAccount": "MembershipPut",
    # webhooks
    "createWebhook": "WebhookCreate",
    "patchWebhook": "WebhookPatch",
    "rotateWebhookSecret": "WebhookEmptyBody",
    "replayWebhook": "WebhookReplay",
    "retryWebhookDelivery": "WebhookEmptyBody",
}


async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def v1_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        if path.startswith("/v1/")
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def json_schema(content: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema of a JSON body: a `$ref`, or an inline schema that says something."""
    schema = (content or {}).get("application/json", {}).get("schema")
    if not isinstance(schema, dict) or not schema:
        return None
    return schema


def component(document: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def ref_name(schema: dict[str, Any]) -> str:
    ref: str = schema["$ref"]
    assert ref.startswith(SCHEMA_PREFIX), ref
    return ref.removeprefix(SCHEMA_PREFIX)


async def test_every_v1_operation_documents_its_request_and_response_bodies(
    client: httpx.AsyncClient,
) -> None:
    document = await openapi(client)
    operations = v1_operations(document)
    assert len(operations) >= 15  # accounts, transfers, API keys, events, audit
    with_body: dict[str, str] = {}
    for method, path, operation in operations:
        where = f"{method.upper()} {path}"
        body = operation.get("requestBody")
        if method in BODY_METHODS:
            assert body is not None, where
            schema = json_schema(body.get("content"))
            assert schema is not None, where
            with_body[operation["operationId"]] = ref_name(schema)
        else:
            assert body is None, where
        answers = {
            status: json_schema(response.get("content"))
            for status, response in operation["responses"].items()
            if status.startswith("2")
        }
        assert answers, where
        assert all(schema is not None for schema in answers.values()), (where, answers)
        assert "400" not in operation["responses"], where  # a bad request is a 422 here
    assert with_body == REQUEST_BODIES


async def test_responses_name_their_structs(client: httpx.AsyncClient) -> None:
    document = await openapi(client)
    expected = {
        ("/v1/api-keys", "post"): "ApiKeyCreated",
        ("/v1/api-keys", "get"): "ApiKeyPage",
        ("/v1/api-keys/{key_id}", "delete"): "ApiKeyOut",
        ("/v1/audit", "get"): "AuditPage",
        ("/v1/audit/verify", "get"): "AuditVerifyOut",
        ("/v1/events", "get"): "EventPage",
        ("/v1/transfers", "post"): "TransferOut",
        ("/v1/accounts", "get"): "AccountPage",
    }
    for (path, method), name in expected.items():
        responses = document["paths"][path][method]["responses"]
        schemas = [json_schema(r.get("content")) for s, r in responses.items() if s.startswith("2")]
        # A create answers 201, or 200 for an id that exists already: the same Struct.
        assert schemas and all(s is not None and ref_name(s) == name for s in schemas), (
            path,
            method,
            schemas,
        )
    page = component(document, "EventPage")
    assert page["properties"]["data"]["items"] == {"$ref": SCHEMA_PREFIX + "EventEnvelope"}


async def test_strict_bodies_refuse_unknown_fields_and_bounds_are_exact_integers(
    client: httpx.AsyncClient,
) -> None:
    document = await openapi(client)
    create = component(document, "TransferCreate")
    assert create["additionalProperties"] is False
    amount = create["properties"]["amount"]
    assert amount["type"] == "integer"
    for keyword, bound in (("minimum", 1), ("maximum", 9223372036854775807)):
        assert type(amount[keyword]) is int and amount[keyword] == bound, amount
    assert limits.AMOUNT_MAX == 9223372036854775807
    code = component(document, "AccountCreate")["properties"]["code"]
    assert code["pattern"] == ACCOUNT_CODE_PATTERN


async def test_optional_integers_carry_their_bounds_on_the_integer(
    client: httpx.AsyncClient,
) -> None:
    document = await openapi(client)
    amount = component(document, "AmountBody")["properties"]["amount"]
    (integer,) = [m for m in amount["oneOf"] if m.get("type") == "integer"]
    assert (integer["minimum"], integer["maximum"]) == (1, limits.AMOUNT_MAX), amount
    assert "minimum" not in amount and "maximum" not in amount
    timeout = component(document, "TransferCreate")["properties"]["timeout_seconds"]
    (integer,) = [m for m in timeout["oneOf"] if m.get("type") == "integer"]
    assert (integer["minimum"], integer["maximum"]) == (0, limits.TIMEOUT_SECONDS_MAX), timeout


async def test_response_structs_are_not_marked_strict(client: httpx.AsyncClient) -> None:
    """Only bodies that refuse unknown fields say so: an answer may gain fields."""
    document = await openapi(client)
    for name in ("TransferOut", "AccountOut", "ApiKeyPage", "EventEnvelope", "AuditPage"):
        assert "additionalProperties" not in component(document, name), name
    for name in REQUEST_BODIES.values():
        assert component(document, name)["additionalProperties"] is False, name


# -- what ledger/http/openapi.py adds -----------------------------------------------------------

PROBLEM_REF = SCHEMA_PREFIX + "Problem"
PROBLEM_MEDIA = "application/problem+json"


def problem_codes(operation: dict[str, Any], status: str) -> set[str]:
    content = operation["responses"][status]["content"][PROBLEM_MEDIA]
    assert content["schema"] == {"$ref": PROBLEM_REF}
    return {example["value"]["code"] for example in content["examples"].values()}


async def test_every_v1_operation_declares_security_roles_and_its_errors(
    client: httpx.AsyncClient,
) -> None:
    document = await openapi(client)
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, operation in v1_operations(document):
        where = f"{method.upper()} {path}"
        assert operation["security"] == [{"bearerAuth": []}], where
        assert "Roles: admin" in operation["description"], where
        assert problem_codes(operation, "401") == {"unauthorized"}, where
        assert "service_unavailable" in problem_codes(operation, "503"), where
        assert "Retry-After" in operation["responses"]["503"]["headers"], where
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert "X-Request-ID" in headers, where
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in response["headers"], (where, status)
        if method == "post":
            assert "Idempotency-Key" in headers, where
            assert "idempotency_key_reused" in problem_codes(operation, "422"), where
            assert "idempotency_key_in_use" in problem_codes(operation, "409"), where
            for status, response in operation["responses"].items():
                if status.startswith("2"):
                    assert "Idempotent-Replayed" in response["headers"], (where, status)
    assert document["paths"]["/health"]["get"]["security"] == []


async def test_roles_follow_the_guards(client: httpx.AsyncClient) -> None:
    """A read is open to every role (no 403 possible); a write and the key routes are not."""
    paths = (await openapi(client))["paths"]
    read = paths["/v1/accounts/{account_id}"]["get"]
    assert read["description"].endswith("Roles: admin, operator, reader, auditor.")
    assert "403" not in read["responses"]
    write = paths["/v1/transfers"]["post"]
    assert write["summary"] == "Create transfer"  # from the operation id, not "Create"
    assert write["description"].endswith("Roles: admin, operator.")
    assert problem_codes(write, "403") == {"forbidden"}
    keys = paths["/v1/api-keys"]["post"]
    assert keys["description"].endswith("Roles: admin.")
    audit = paths["/v1/audit"]["get"]
    assert audit["description"].endswith("Roles: admin, auditor.")


async def test_declared_refusals_preconditions_and_etag(client: httpx.AsyncClient) -> None:
    paths = (await openapi(client))["paths"]
    create = paths["/v1/transfers"]["post"]
    assert {"insufficient_funds", "same_account", "validation_error"} <= problem_codes(
        create, "422"
    )
    assert problem_codes(create, "404") >= {"account_not_found"}
    patch = paths["/v1/accounts/{account_id}"]["patch"]
    (if_match,) = [p for p in patch["parameters"] if p["name"] == "If-Match"]
    assert if_match["required"] is True
    assert problem_codes(patch, "428") == {"precondition_required"}
    assert problem_codes(patch, "412") == {"precondition_failed"}
    assert "ETag" in patch["responses"]["200"]["headers"]
    assert "ETag" in paths["/v1/accounts/{account_id}"]["get"]["responses"]["200"]["headers"]
    verify = paths["/v1/audit/verify"]["get"]
    assert problem_codes(verify, "503") == {"service_unavailable", "audit_verify_busy"}


async def test_generator_quirks_are_repaired(client: httpx.AsyncClient) -> None:
    document = await openapi(client)
    # An optional constrained string: the pattern on the string, not beside the oneOf.
    currency = component(document, "TransferCreate")["properties"]["currency"]
    assert "pattern" not in currency
    (string,) = [m for m in currency["oneOf"] if m.get("type") == "string"]
    assert string["pattern"].startswith("^[A-Z0-9]")
    # `X | UnsetType`: the member itself, not a oneOf of one.
    status = component(document, "AccountPatch")["properties"]["status"]
    assert "oneOf" not in status and status["enum"] == ["active", "frozen", "closed"]
    # A query parameter is never null; integer bounds are integers.
    listing = document["paths"]["/v1/transfers"]["get"]["parameters"]
    by_name = {p["name"]: p["schema"] for p in listing}
    assert by_name["state"] == {
        "type": "string",
        "enum": ["pending", "posted", "voided", "expired"],
    }
    assert (by_name["limit"]["minimum"], by_name["limit"]["maximum"]) == (1, 1000)
    assert type(by_name["limit"]["maximum"]) is int
    assert by_name["cursor"]["pattern"].startswith("^[0-9a-fA-F]{8}-")
    # Rules across fields: a timeout needs a pending transfer; an import is never pending.
    timeout, imported = component(document, "TransferCreate")["allOf"]
    assert timeout["if"]["required"] == ["timeout_seconds"]
    assert timeout["then"]["properties"]["pending"] == {"const": True}
    assert imported["if"]["required"] == ["imported_at"]
    assert imported["then"]["properties"]["pending"] == {"const": False}
    # A constrained mapping keeps its size and its keys' pattern (an exchange's `via`).
    via = component(document, "ExchangeCreate")["properties"]["via"]
    assert (via["minProperties"], via["maxProperties"]) == (2, 2)
    assert via["propertyNames"]["pattern"].startswith("^[A-Z0-9]")


async def test_an_unknown_schema_path_is_a_problem_404(client: httpx.AsyncClient) -> None:
    for path in ("/schema/nothing-here", "/schema/nothing.json"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith(PROBLEM_MEDIA), path
        assert response.json()["code"] == "not_found", path
    assert (await client.get("/schema/openapi.json")).status_code == 200


async def test_links_lead_from_an_answer_to_the_routes_that_take_its_id(
    client: httpx.AsyncClient,
) -> None:
    paths = (await openapi(client))["paths"]
    created = paths["/v1/transfers"]["post"]["responses"]["201"]["links"]
    assert created["postTransfer"] == {
        "operationId": "postTransfer",
        "parameters": {"transfer_id": "$response.body#/id"},
    }
    read = paths["/v1/accounts/{account_id}"]["get"]["responses"]["200"]["links"]
    assert read["patchAccount"]["parameters"]["header.If-Match"] == "$response.header.ETag"
    operation_ids = {
        operation["operationId"]
        for item in paths.values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    for item in paths.values():
        for operation in item.values():
            for response in (operation.get("responses") or {}).values():
                for link in (response.get("links") or {}).values():
                    assert link["operationId"] in operation_ids, link


async def test_request_examples_decode_into_their_bodies(client: httpx.AsyncClient) -> None:
    """Each request example is a body the route's own Struct takes."""
    from accounts.schemas import AccountCreate
    from ledger.apikeys.schemas import ApiKeyCreate
    from ledger.core.schemas import decode_body
    from transfers.schemas import TransferCreate

    paths = (await openapi(client))["paths"]
    for path, kind in (
        ("/v1/accounts", AccountCreate),
        ("/v1/transfers", TransferCreate),
        ("/v1/api-keys", ApiKeyCreate),
    ):
        media = paths[path]["post"]["requestBody"]["content"]["application/json"]
        example = media["examples"]["example"]["value"]
        decode_body(httpx.Response(200, json=example).content, kind)
