"""Typed request and response bodies, decoded as strictly as `ledger.core.schemas.decode_body`.

A handler declares `data: SomeStruct` (or `data: SomeStruct | None = None` for a body that may
be left out) and returns `Response[SomeOut]`: the OpenAPI document then shows both. Litestar's
own msgspec decoding is lax (`"5"` and `5.0` become 5, unknown fields slip through with its
DTO), so `StrictBody` replaces it: the raw body goes straight to `decode_body`, into the
handler's own annotation. The app installs it once (`dto=StrictBody, return_dto=None`, and
`handle_body_exception` for HTTP exceptions); handlers get `operation_class=LedgerOperation`
through the `get`, `post`, `patch`, `delete` decorators below. `StrictSchemaPlugin` (installed
by the app too) makes each Struct's schema in the OpenAPI document as exact as its decoding.

What stays exactly as with `decode_body` on `await request.body()`:
- wrong types, strings or floats for integers, unknown fields, out-of-range values, bad JSON,
  bad UTF-8 -> 422 `validation_error` naming the field;
- an empty body where one is required -> 422 `validation_error` "a JSON body is required"
  (Litestar never hands an empty body to the DTO: see `missing_body`);
- an optional body: empty or blank -> None; any other text, `null` included, is decoded into
  the non-None type (so `null` is refused as before).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec
from litestar import Request, Response
from litestar import delete as litestar_delete
from litestar import get as litestar_get
from litestar import patch as litestar_patch
from litestar import post as litestar_post
from litestar import put as litestar_put
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.dto import MsgspecDTO
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.spec import Operation, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.typing import FieldDefinition
from litestar.utils.typing import make_non_optional_union

from ledger.core.errors import ValidationFailed
from ledger.core.schemas import decode_body
from ledger.http.problems import handle_http_exception, handle_ledger_error

if TYPE_CHECKING:  # Litestar's own annotations name these private classes
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.dto._backend import DTOBackend

T = TypeVar("T")


def _body_required() -> ValidationFailed:
    return ValidationFailed("a JSON body is required", errors=[{"field": "", "message": "empty"}])


@functools.lru_cache(maxsize=256)
def _decode_target(annotation: Any, optional: bool) -> Any:
    """The type a body decodes into: `X` for `data: X | None`, so that `null` is refused."""
    return make_non_optional_union(annotation) if optional else annotation


class StrictBody(MsgspecDTO[msgspec.Struct]):
    """A request-body DTO without a transfer model: the body decodes straight into the
    handler's `data` annotation with `decode_body` (strict), then reaches the handler as is."""

    @classmethod
    def create_for_field_definition(
        cls,
        field_definition: FieldDefinition,
        handler_id: str,
        backend_cls: type[DTOBackend] | None = None,
    ) -> None:
        """No backend to build: nothing is transferred, the annotation is the model."""

    @classmethod
    def is_supported_model_type_field(cls, field_definition: FieldDefinition) -> bool:
        return False  # never a return DTO: responses are encoded by the handlers

    def decode_bytes(self, value: bytes) -> Any:
        # Called for a non-empty body only. `parsed_data_field` is memoized on the handler
        # (`handler_id` is not, and cost microseconds a request).
        field = self.asgi_connection.route_handler.parsed_data_field
        if field is None:
            raise ValidationFailed(
                "this route takes no body", errors=[{"field": "", "message": "unexpected"}]
            )
        # An optional body is absent only when empty (Litestar does not call this then):
        # whitespace alone, or a form feed, is a body that is not JSON, refused like any other.
        try:
            return decode_body(value, _decode_target(field.annotation, field.is_optional))
        except UnicodeDecodeError as exc:
            # msgspec raises this, not a DecodeError, for bad UTF-8 inside a JSON string.
            raise ValidationFailed(
                "the body is not valid UTF-8", errors=[{"field": "", "message": str(exc)}]
            ) from exc

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        # Only for form bodies (Body(media_type=...)): our routes take JSON only.
        raise ValidationFailed(
            "a JSON body is required", errors=[{"field": "", "message": "not JSON"}]
        )

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(field_definition)  # the Struct, its own name


def missing_body(exc: ValidationException) -> ValidationFailed | None:
    """An empty body where `data` is required: Litestar skips the DTO and its signature check
    reports the missing `data` (its only error then). None for any other validation error."""
    for item in exc.extra if isinstance(exc.extra, list) else ():
        if isinstance(item, dict) and item.get("key") == "data":
            return _body_required()
    return None


def handle_body_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """The app's HTTP exception handler, with an empty required body named as decode_body
    names it."""
    if isinstance(exc, ValidationException):
        mapped = missing_body(exc)
        if mapped is not None:
            return handle_ledger_error(request, mapped)
    return handle_http_exception(request, exc)


@dataclass  # the dataclass __init__ calls __post_init__ only when declared on a dataclass
class LedgerOperation(Operation):
    """The OpenAPI operation of a typed-body route: no automatic 400 (a bad request is a 422
    here), and an optional body (`data: X | None = None`) documented as X, not required."""

    def __post_init__(self) -> None:
        if self.responses:
            self.responses.pop("400", None)
        body = self.request_body
        if body is None or isinstance(body, Reference):
            return
        for media in (body.content or {}).values():
            members = getattr(media.schema, "one_of", None) or []
            rest = [
                m for m in members if not (isinstance(m, Schema) and m.type == OpenAPIType.NULL)
            ]
            if len(members) == 2 and len(rest) == 1:
                media.schema, body.required = rest[0], False


get = functools.partial(litestar_get, operation_class=LedgerOperation)
post = functools.partial(litestar_post, operation_class=LedgerOperation)
patch = functools.partial(litestar_patch, operation_class=LedgerOperation)
delete = functools.partial(litestar_delete, operation_class=LedgerOperation)
put = functools.partial(litestar_put, operation_class=LedgerOperation)


# -- the OpenAPI schema of a Struct -------------------------------------------------------------

# msgspec's integer constraints and the OpenAPI keywords they become.
_INT_BOUNDS = (
    ("ge", "minimum"),
    ("le", "maximum"),
    ("gt", "exclusive_minimum"),
    ("lt", "exclusive_maximum"),
    ("multiple_of", "multiple_of"),
)


class StrictSchemaPlugin(StructSchemaPlugin):
    """A Struct's schema as exact as its decoding: `additionalProperties: false` for a body
    that refuses unknown fields (`Strict`), and integer bounds written as the integers msgspec
    checks. Litestar writes `le=2**63-1` as the float 9.223372036854776e18, which is 2**63: one
    past the largest amount. For an optional integer it puts the bounds beside the `oneOf`, not
    on the integer, and drops a bound of 0.

    Registered before Litestar's own Struct plugin (`Litestar(plugins=[StrictSchemaPlugin()])`),
    so it builds every Struct's component schema."""

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if not isinstance(info, msgspec.inspect.StructType):
            return schema
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        # A rule across fields the Struct states for the document (`TransferCreate`).
        # One pair is `if`/`then`; several are an `allOf` of such pairs.
        rules = getattr(field_definition.type_, "openapi_if_then", None)
        if isinstance(rules, list):
            schema.all_of = [Schema(schema_if=if_, then=then) for if_, then in rules]
        elif rules is not None:
            schema.schema_if, schema.then = rules
        properties = schema.properties or {}
        for field in info.fields:
            prop = properties.get(field.encode_name)
            if not isinstance(prop, Schema):
                continue
            bounds = _int_type(field.type)
            if bounds is not None:
                _write_int_bounds(prop, bounds)
            _write_dict_bounds(prop, field.type)
            _write_list_bounds(prop, field.type)
        return schema


def _write_list_bounds(prop: Schema, kind: msgspec.inspect.Type) -> None:
    """What Litestar leaves out of a list of constrained strings (a webhook's `event_types`):
    the items' own pattern and lengths; for an optional list (`X | UNSET`), its size goes on the
    array itself, not beside the `oneOf`."""
    if isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    members = kind.types if isinstance(kind, msgspec.inspect.UnionType) else (kind,)
    lists = [m for m in members if isinstance(m, msgspec.inspect.ListType)]
    if len(lists) != 1 or not isinstance(lists[0].item_type, msgspec.inspect.StrType):
        return
    item = lists[0].item_type
    candidates = [prop, *(prop.one_of or [])]
    target = next(
        (m for m in candidates if isinstance(m, Schema) and m.type == OpenAPIType.ARRAY), None
    )
    if target is None:
        return
    target.items = Schema(
        type=OpenAPIType.STRING,
        pattern=item.pattern,
        min_length=item.min_length,
        max_length=item.max_length,
    )
    target.min_items = lists[0].min_length
    target.max_items = lists[0].max_length
    if target is not prop:
        prop.min_items = prop.max_items = None


def _write_dict_bounds(prop: Schema, kind: msgspec.inspect.Type) -> None:
    """What Litestar leaves out of a constrained mapping (`Via`): its size as min/maxProperties
    and its keys' constraints as `propertyNames`."""
    if isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    if not isinstance(kind, msgspec.inspect.DictType) or prop.type != OpenAPIType.OBJECT:
        return
    prop.min_properties = kind.min_length
    prop.max_properties = kind.max_length
    key = kind.key_type
    if isinstance(key, msgspec.inspect.StrType) and key.pattern is not None:
        prop.property_names = Schema(
            type=OpenAPIType.STRING,
            pattern=key.pattern,
            min_length=key.min_length,
            max_length=key.max_length,
        )


def _int_type(kind: msgspec.inspect.Type) -> msgspec.inspect.IntType | None:
    """The constrained integer a field holds: `int`, or `int` in a union (`int | None`)."""
    if isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    members = kind.types if isinstance(kind, msgspec.inspect.UnionType) else (kind,)
    ints = [m for m in members if isinstance(m, msgspec.inspect.IntType)]
    return ints[0] if len(ints) == 1 else None


def _write_int_bounds(prop: Schema, bounds: msgspec.inspect.IntType) -> None:
    members = [prop, *(prop.one_of or [])]
    target = next(
        (m for m in members if isinstance(m, Schema) and m.type == OpenAPIType.INTEGER), None
    )
    if target is None:
        return
    for constraint, keyword in _INT_BOUNDS:
        if target is not prop:  # Litestar's bounds beside a oneOf go to the integer itself
            setattr(prop, keyword, None)
        setattr(target, keyword, getattr(bounds, constraint))


# -- responses ----------------------------------------------------------------------------------


def typed(response: Response[bytes], _: type[T]) -> Response[T]:
    """A response whose body is already encoded (a replay keeps its stored bytes), typed as the
    body it holds: the OpenAPI document shows `T`, the bytes go out unchanged."""
    return cast("Response[T]", response)
