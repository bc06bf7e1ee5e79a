"""`GET /schema/asyncapi.json`: the AsyncAPI 3.0 document of the events topic (docs/events.md).

The document is generated from the code that builds the events, so that it cannot drift from
what is published: each `data` schema comes from the msgspec Struct that `ledger/posting/events.py`
encodes (`msgspec.json.schema_components`), the envelope from `EventEnvelope` (the feed's
documented shape, `ledger/api/schemas.py`), the record headers from `outbox/kafka.py`, the
`sequence` width from `outbox/writer.py`. On top of what the types say, the builder adds only what
the types cannot: a Struct is encoded with exactly its fields (`additionalProperties: false`),
every ledger time is a `timestamptz` and so written with its offset (`format: date-time`), the
envelope's constants, which events carry a `sequence`, and the state each transfer event
announces. tests/test_asyncapi.py validates every event of a representative run, read from the
HTTP feed and from Kafka, against this document.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any, get_args

import msgspec
from litestar import Request, Response

from ledger.api.schemas import EventEnvelope
from ledger.http.bodies import get, typed
from ledger.http.state import services_of
from ledger.posting import categories, events
from outbox.kafka import CONTENT_TYPE
from outbox.writer import SEQUENCE_DIGITS

ASYNCAPI_VERSION = "3.0.0"
DOCUMENT_VERSION = "1.0.0"  # the events' contract version, as the OpenAPI document's
KAFKA_BINDING_VERSION = "0.5.0"
SCHEMA_REF = "#/components/schemas/{name}"
CHANNEL = "ledgerEvents"
OPERATION = "publishLedgerEvents"
HEADERS_SCHEMA = "EventHeaders"
SOURCE = "ledger"  # outbox/writer.py::envelope
SEQUENCE_PATTERN = f"^[0-9]{{{SEQUENCE_DIGITS}}}$"
# observability/tracing.py::current_ids writes version 00 in lowercase hex, nothing else.
TRACEPARENT_PATTERN = "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
UUID_STRING: dict[str, Any] = {"type": "string", "format": "uuid"}
MEDIA_TYPE = "application/json"
SEQUENCE_DESCRIPTIONS = {
    "account": "The account's version after the change, zero-padded (sorts as text).",
    "monitor": "How many times the monitor has fired, this time included, zero-padded.",
    "category": "The category's version after the change, zero-padded (sorts as text).",
}


@dataclass(frozen=True, slots=True)
class EventKind:
    """One event type: the Struct of its `data`, whether it carries a `sequence` (account
    events: the version), what its subject names, and what its type pins in `data`."""

    event_type: str
    data: type[msgspec.Struct]
    subject: str
    sequenced: bool
    data_pins: dict[str, Any]
    summary: str


# ledger.transfer.<kind>: the state the transfer reached; a reversal is a new posted transfer
# that names the one it reverses (ledger/posting/kernel.py::Posting.reverse).
TRANSFER_PINS: dict[str, dict[str, Any]] = {
    "pending": {"state": {"const": "pending"}},
    "posted": {"state": {"const": "posted"}},
    "voided": {"state": {"const": "voided"}},
    "expired": {"state": {"const": "expired"}},
    "reversed": {"state": {"const": "posted"}, "reversal_of": UUID_STRING},
}
TRANSFER_SUMMARIES = {
    "pending": "A hold was placed: the amount is reserved on both accounts.",
    "posted": "A transfer was posted, at once or from a hold (`posted_amount` says how much).",
    "voided": "A hold was released before its timeout.",
    "expired": "A hold reached its `timeout_at` and was released by the worker.",
    "reversed": "A new transfer moved back all or part of a posted one (`reversal_of`).",
}


def _account_kind(event_type: str, data: type[msgspec.Struct], summary: str) -> EventKind:
    return EventKind(event_type, data, "account", sequenced=True, data_pins={}, summary=summary)


def event_kinds() -> list[EventKind]:
    """Every event type `ledger/posting/events.py` can publish, in the contract's order."""
    kinds = [
        _account_kind(events.ACCOUNT_CREATED, events.AccountData, "An account was opened."),
        _account_kind(
            events.ACCOUNT_UPDATED,
            events.AccountData,
            "An account's status, floor or metadata changed.",
        ),
        _account_kind(
            events.ACCOUNT_BALANCE_CHANGED,
            events.BalanceChangedData,
            "A transfer moved the account's balances (hold, post, release, reversal).",
        ),
    ]
    kinds.extend(
        EventKind(
            event_type=events.TRANSFER_EVENT_PREFIX + kind,
            data=events.TransferData,
            subject="transfer",
            sequenced=False,
            data_pins=TRANSFER_PINS.get(kind, {}),
            summary=TRANSFER_SUMMARIES.get(kind, "A transfer changed."),
        )
        for kind in get_args(events.TransferEventKind)
    )
    kinds.append(
        EventKind(
            event_type=events.ACCOUNT_MONITOR_TRIGGERED,
            data=events.MonitorTriggeredData,
            subject="monitor",
            sequenced=True,
            data_pins={},
            summary="A change made a balance monitor's condition true (it was false before).",
        )
    )
    kinds.extend(category_kinds())
    return kinds


def category_kinds() -> list[EventKind]:
    """ledger.category.*: subject the category id, sequence its version after the change."""
    return [
        EventKind(event_type, data, "category", sequenced=True, data_pins={}, summary=summary)
        for event_type, data, summary in (
            (categories.CATEGORY_CREATED, categories.CategoryData, "A category was created."),
            (
                categories.CATEGORY_UPDATED,
                categories.CategoryData,
                "A category moved in the tree (`parent_id`) or its metadata changed.",
            ),
            (
                categories.CATEGORY_ACCOUNT_ADDED,
                categories.CategoryMembershipData,
                "An account was put in a category.",
            ),
            (
                categories.CATEGORY_ACCOUNT_REMOVED,
                categories.CategoryMembershipData,
                "An account was taken out of a category.",
            ),
        )
    ]


# -- schemas from the Structs ---------------------------------------------------------------------


def _struct_types(types: list[Any]) -> dict[str, msgspec.inspect.StructType]:
    """Every Struct reachable from `types`, by the name msgspec gives its component."""
    found: dict[str, msgspec.inspect.StructType] = {}
    pending: list[msgspec.inspect.Type] = list(msgspec.inspect.multi_type_info(types))
    while pending:
        kind = pending.pop()
        if isinstance(kind, msgspec.inspect.Metadata):
            pending.append(kind.type)
        elif isinstance(kind, msgspec.inspect.UnionType):
            pending.extend(kind.types)
        elif isinstance(kind, msgspec.inspect.ListType):
            pending.append(kind.item_type)
        elif isinstance(kind, msgspec.inspect.DictType):
            pending.extend((kind.key_type, kind.value_type))
        elif isinstance(kind, msgspec.inspect.StructType) and kind.cls.__name__ not in found:
            found[kind.cls.__name__] = kind
            pending.extend(field.type for field in kind.fields)
    return found


def _holds_datetime(kind: msgspec.inspect.Type) -> bool:
    if isinstance(kind, msgspec.inspect.Metadata):
        return _holds_datetime(kind.type)
    if isinstance(kind, msgspec.inspect.UnionType):
        return any(_holds_datetime(member) for member in kind.types)
    return isinstance(kind, msgspec.inspect.DateTimeType)


def _tighten(schema: dict[str, Any], struct: msgspec.inspect.StructType) -> None:
    """What the encoding promises beyond the types: no other fields, and RFC 3339 times."""
    schema["additionalProperties"] = False
    properties: dict[str, Any] = schema.get("properties", {})
    for field in struct.fields:
        prop = properties.get(field.encode_name)
        if prop is None or not _holds_datetime(field.type):
            continue
        for member in [prop, *prop.get("anyOf", [])]:
            if member.get("type") == "string":
                member["format"] = "date-time"


def struct_schemas(types: list[Any]) -> dict[str, dict[str, Any]]:
    """The component schemas of `types` and every Struct they hold, tightened."""
    _refs, components = msgspec.json.schema_components(types, ref_template=SCHEMA_REF)
    structs = _struct_types(types)
    for name, schema in components.items():
        if name in structs:
            _tighten(schema, structs[name])
    return components


# -- the document ---------------------------------------------------------------------------------


def headers_schema() -> dict[str, Any]:
    """The Kafka record headers (outbox/kafka.py::record_headers): structured mode's content type,
    and the trace of the request that made the change when it had one."""
    return {
        "type": "object",
        "properties": {
            "content-type": {"const": CONTENT_TYPE},
            "traceparent": {"type": "string", "pattern": TRACEPARENT_PATTERN},
        },
        "required": ["content-type"],
        "additionalProperties": False,
    }


def envelope_schema(kind: EventKind, envelope: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvents envelope of one event type: `envelope` (EventEnvelope's schema) with the
    type's constants, its `data` schema and its `sequence` rule."""
    payload = copy.deepcopy(envelope)
    payload["title"] = kind.event_type
    properties: dict[str, Any] = payload["properties"]
    properties["source"] = {"const": SOURCE}
    properties["type"] = {"const": kind.event_type}
    properties["subject"] = {**UUID_STRING, "description": f"The {kind.subject} id (Kafka key)."}
    properties["traceparent"] = {
        "type": "string",
        "pattern": TRACEPARENT_PATTERN,
        "description": "W3C trace context of the request that made the change.",
    }
    data_ref = {"$ref": SCHEMA_REF.format(name=kind.data.__name__)}
    if kind.data_pins:
        pins = copy.deepcopy(kind.data_pins)  # the document may be changed by its reader
        properties["data"] = {"allOf": [data_ref, {"properties": pins}]}
    else:
        properties["data"] = data_ref
    required: list[str] = payload["required"]
    if kind.sequenced:
        properties["sequence"] = {
            "type": "string",
            "pattern": SEQUENCE_PATTERN,
            "description": SEQUENCE_DESCRIPTIONS.get(
                kind.subject, SEQUENCE_DESCRIPTIONS["account"]
            ),
        }
        required.append("sequence")
    else:
        properties.pop("sequence", None)
    return payload


def message(kind: EventKind, envelope: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": kind.event_type,
        "title": kind.event_type,
        "summary": kind.summary,
        "contentType": CONTENT_TYPE,
        "headers": {"$ref": SCHEMA_REF.format(name=HEADERS_SCHEMA)},
        "payload": envelope_schema(kind, envelope),
        "correlationId": {
            "description": "The trace of the HTTP request that made the change.",
            "location": "$message.header#/traceparent",
        },
        "bindings": {
            "kafka": {
                "key": {**UUID_STRING, "description": "The event's subject."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def build_document(topic: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the events published on `topic` (LEDGER_KAFKA_TOPIC)."""
    kinds = event_kinds()
    schemas = struct_schemas([EventEnvelope, *dict.fromkeys(kind.data for kind in kinds)])
    envelope = schemas.pop(EventEnvelope.__name__)
    schemas = dict(sorted(schemas.items()))
    schemas[HEADERS_SCHEMA] = headers_schema()
    channel_ref = f"#/channels/{CHANNEL}"
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Ledger events",
            "version": DOCUMENT_VERSION,
            "description": (
                "Every committed change of the ledger, as a CloudEvents 1.0 JSON envelope in "
                "structured mode, keyed by its subject, in per-account `sequence` order, at "
                "least once. The same envelopes are served by `GET /v1/events`."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": {
            CHANNEL: {
                "address": topic,
                "title": "Ledger events",
                "description": "The events topic (LEDGER_KAFKA_TOPIC).",
                "messages": {
                    kind.event_type: {"$ref": f"#/components/messages/{kind.event_type}"}
                    for kind in kinds
                },
                "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}},
            }
        },
        "operations": {
            OPERATION: {
                "action": "send",
                "channel": {"$ref": channel_ref},
                "summary": "The worker's outbox relay publishes every committed event.",
                "messages": [
                    {"$ref": f"{channel_ref}/messages/{kind.event_type}"} for kind in kinds
                ],
            }
        },
        "components": {
            "schemas": schemas,
            "messages": {kind.event_type: message(kind, envelope) for kind in kinds},
        },
    }


@get(
    "/schema/asyncapi.json",
    operation_id="asyncapi",
    tags=["system"],
    summary="The AsyncAPI 3.0 document of the events topic",
)
async def asyncapi_document(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    body = encoded_document(services_of(request).settings.kafka_topic)
    return typed(Response(content=body, media_type=MEDIA_TYPE), dict[str, Any])


# One app serves one topic: its document is built once (a few milliseconds), then reused.
@functools.lru_cache(maxsize=1)
def encoded_document(topic: str) -> bytes:
    return msgspec.json.encode(build_document(topic))
