"""The `webhooks` section of the OpenAPI document (OpenAPI 3.1): one entry per event type, the
request the service sends to a webhook endpoint. Built from the same event kinds and Structs as
the AsyncAPI document (`ledger/api/asyncapi.py`), so the two cannot say different things; the
schemas join the OpenAPI components under an `Event` prefix, beside the API's own."""

from __future__ import annotations

from typing import Any

from ledger.api.asyncapi import EventKind, envelope_schema, event_kinds, struct_schemas
from ledger.api.schemas import EventEnvelope

SCHEMA_PREFIX = "#/components/schemas/"
COMPONENT_PREFIX = "Event"
SIGNATURE_PATTERN = r"^v1,[A-Za-z0-9+/]+={0,2}( v1,[A-Za-z0-9+/]+={0,2})*$"


def _renamed(value: Any, names: set[str]) -> Any:
    """`value` with every `$ref` to one of `names` pointed at its prefixed component."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            ref = (
                item.removeprefix(SCHEMA_PREFIX)
                if key == "$ref" and isinstance(item, str)
                else None
            )
            if ref is not None and ref in names:
                out[key] = f"{SCHEMA_PREFIX}{COMPONENT_PREFIX}{ref}"
            else:
                out[key] = _renamed(item, names)
        return out
    if isinstance(value, list):
        return [_renamed(item, names) for item in value]
    return value


def _header(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": schema,
    }


HEADERS = [
    _header(
        "webhook-id",
        "the event's id: the same on every attempt, so a receiver drops duplicates by it",
        {"type": "string", "format": "uuid"},
    ),
    _header(
        "webhook-timestamp",
        "when this attempt was made, in Unix seconds; refuse one far from your clock",
        {"type": "string", "pattern": "^[0-9]{1,12}$"},
    ),
    _header(
        "webhook-signature",
        '`v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">` under the '
        "endpoint's secret (the bytes after `whsec_`, base64-decoded), one per valid secret, "
        "space-separated (two for 24 h after a rotation): Standard Webhooks",
        {"type": "string", "pattern": SIGNATURE_PATTERN},
    ),
]


def _operation(kind: EventKind, envelope: dict[str, Any], names: set[str]) -> dict[str, Any]:
    schema = _renamed(envelope_schema(kind, envelope), names)
    return {
        "post": {
            "operationId": "webhook." + kind.event_type,
            "summary": kind.summary,
            "description": (
                f"Sent to every enabled endpoint whose `event_types` match `{kind.event_type}`: "
                "the CloudEvents envelope of `GET /v1/events`, byte for byte, signed as the "
                "Standard Webhooks specification says. At least once; per endpoint, not before "
                "every earlier event of the same subject is delivered."
            ),
            "parameters": HEADERS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            },
            "responses": {
                "2XX": {"description": "delivered (answered within 10 s)"},
                "default": {
                    "description": (
                        "not delivered (another status, a redirect, no answer within 10 s): "
                        "retried after about 1 s, doubling, at most 1 h apart, for 72 h"
                    )
                },
            },
            "security": [],
        }
    }


def webhooks_section() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the `webhooks` object, the component schemas it refers to)."""
    kinds = event_kinds()
    schemas = struct_schemas([EventEnvelope, *dict.fromkeys(kind.data for kind in kinds)])
    envelope = schemas.pop(EventEnvelope.__name__)
    names = set(schemas)
    components = {
        f"{COMPONENT_PREFIX}{name}": _renamed(schema, names)
        for name, schema in sorted(schemas.items())
    }
    webhooks = {kind.event_type: _operation(kind, envelope, names) for kind in kinds}
    return webhooks, components
