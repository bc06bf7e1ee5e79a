"""Repairs of the JSON Schemas Litestar writes into the OpenAPI document, applied to the whole
document once (`ledger.http.openapi.complete_document`).

Litestar's generator has three habits that make a schema say something other than what the code
checks, and that generated clients and Schemathesis read literally:
- an optional constrained value (`Currency | None`) gets its `pattern` or bounds beside the
  `oneOf`, where they apply to `null` too and to no member in particular: they are moved onto
  the member they constrain;
- a field typed `X | UnsetType` (absent means "unchanged") becomes a `oneOf` of one member:
  it is replaced by that member;
- an optional query or header parameter is `oneOf: [X, null]`, but a parameter is absent or a
  string, never JSON `null`: the `null` member is dropped.
"""

from __future__ import annotations

from typing import Any

from ledger.core.schemas import METADATA_DESCRIPTION

STRING_KEYWORDS = ("pattern", "minLength", "maxLength", "format")
NUMBER_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_KEYWORD_TYPES = {
    **{keyword: ("string",) for keyword in STRING_KEYWORDS},
    **{keyword: ("integer", "number") for keyword in NUMBER_KEYWORDS},
}
# Keywords holding one schema, a list of schemas, or a map of names to schemas.
_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames")
_MANY = ("oneOf", "anyOf", "allOf", "prefixItems")
_NAMED = ("properties", "patternProperties", "$defs")


def repair(schema: Any) -> Any:
    """Repair `schema` and every schema inside it, in place; returns it."""
    if not isinstance(schema, dict):
        return schema
    if schema.get("description") == METADATA_DESCRIPTION:
        schema.clear()
        schema.update({"$ref": METADATA_REF.format(level=1), "description": METADATA_DESCRIPTION})
        return schema
    for key in _ONE:
        repair(schema.get(key))
    for key in _MANY:
        for member in schema.get(key) or ():
            repair(member)
    for key in _NAMED:
        for member in (schema.get(key) or {}).values():
            repair(member)
    if schema.get("type") == "integer":
        _integral_bounds(schema)
    members = schema.get("oneOf")
    if isinstance(members, list):
        _move_constraints(schema, members)
        if len(members) == 1 and isinstance(members[0], dict):
            _inline(schema, members[0])
    return schema


def repair_parameter(schema: Any) -> Any:
    """A parameter's schema: repaired, and without a `null` member, type or enum value."""
    if isinstance(schema, dict):
        if isinstance(schema.get("oneOf"), list):
            schema["oneOf"] = [m for m in schema["oneOf"] if m != {"type": "null"}]
        kinds = schema.get("type")
        if isinstance(kinds, list) and "null" in kinds:
            rest = [k for k in kinds if k != "null"]
            schema["type"] = rest[0] if len(rest) == 1 else rest
        if isinstance(schema.get("enum"), list):
            schema["enum"] = [v for v in schema["enum"] if v is not None]
    return repair(schema)


def _move_constraints(schema: dict[str, Any], members: list[Any]) -> None:
    for keyword, types in _KEYWORD_TYPES.items():
        if keyword not in schema:
            continue
        targets = [m for m in members if isinstance(m, dict) and m.get("type") in types]
        if len(targets) != 1:
            continue
        targets[0].setdefault(keyword, schema.pop(keyword))


def _integral_bounds(schema: dict[str, Any]) -> None:
    """Litestar writes `Parameter(ge=1, le=1000)` as 1.0 and 1000.0; an integer's bounds are
    integers (a generated client types them so)."""
    for keyword in NUMBER_KEYWORDS:
        value = schema.get(keyword)
        if isinstance(value, float) and value.is_integer():
            schema[keyword] = int(value)


def _inline(schema: dict[str, Any], member: dict[str, Any]) -> None:
    """`{"oneOf": [X], "description": ...}` becomes X with the description."""
    del schema["oneOf"]
    for key, value in member.items():
        schema.setdefault(key, value)


# -- metadata -----------------------------------------------------------------------------------

# `metadata` is any JSON object the database can keep (ledger/core/schemas.py::check_metadata):
# no NUL in any key or string, at most METADATA_DEPTH_MAX levels of objects and arrays.
METADATA_REF = "#/components/schemas/Metadata{level}"
NO_NUL_PATTERN = "^[^\\u0000]*$"
# `pattern` constrains only strings, `items` only arrays, `additionalProperties` and
# `propertyNames` only objects: one schema, no `type`, says "any JSON value without NUL" in a
# form that generated clients read (a recursive union of types they do not).


def null_metadata_in_bodies(schema: dict[str, Any]) -> None:
    """A request body (it refuses unknown fields) takes `metadata: null` as `{}`."""
    if schema.get("additionalProperties") is not False:
        return
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict) and prop.get("$ref") == METADATA_REF.format(level=1):
            schema["properties"][name] = {
                "description": prop.get("description", ""),
                "oneOf": [{"$ref": prop["$ref"]}, {"type": "null"}],
            }


def metadata_components() -> dict[str, Any]:
    """`Metadata1`, the object, and `Metadata2`, any value inside it. The depth bound is said in
    the description only: unrolled into one schema per level, it made Schemathesis' coverage
    phase draw fifteen times the cases for every body holding metadata."""
    inner = {"$ref": METADATA_REF.format(level=2)}
    return {
        "Metadata1": {
            "type": "object",
            "description": METADATA_DESCRIPTION,
            "propertyNames": {"pattern": NO_NUL_PATTERN},
            "additionalProperties": inner,
        },
        "Metadata2": {
            "description": "a JSON value in metadata: no NUL in any string or key",
            "pattern": NO_NUL_PATTERN,
            "propertyNames": {"pattern": NO_NUL_PATTERN},
            "additionalProperties": inner,
            "items": inner,
        },
    }
