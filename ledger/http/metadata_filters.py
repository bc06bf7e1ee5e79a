"""`metadata[KEY]=VALUE` list filters: parsed and checked here, documented in the OpenAPI document.

Each pair means "the object's metadata has top-level member KEY equal to the string VALUE"; all
pairs must match. The repositories answer them by containment (`metadata @> {"KEY": "VALUE"}`)
on the jsonb copy of the metadata, which a GIN index (`jsonb_path_ops`) serves. Anything that
starts like a filter but is not one (`metadata=x`, `metadata[]`, `metadata[a][b]`, a control
character, too many or too long) is a 422 `invalid_metadata_filter`, never a query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.openapi.spec import Parameter, Schema
from litestar.openapi.spec.enums import OpenAPIType

from ledger.core import limits
from ledger.core.errors import InvalidMetadataFilter
from ledger.http.bodies import LedgerOperation

PREFIX = "metadata"
_FILTER = re.compile(r"metadata\[(?P<key>[^\[\]]+)\]")
# Control characters (jsonb refuses NUL; none belongs in a filter) and lone surrogates.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
# The same rule for the document: a key or value is printable text (no `[` or `]` in a key).
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
KEY_PATTERN = r"^[^\x00-\x1f\x7f\[\]]+$"

MetadataFilters = list[tuple[str, str]]


def metadata_filters(request: Request[Any, Any, Any]) -> MetadataFilters:
    """The request's metadata filters, in the order sent (empty when none)."""
    found: MetadataFilters = []
    for name, value in request.query_params.multi_items():
        if not name.startswith(PREFIX):
            continue
        match = _FILTER.fullmatch(name)
        if match is None:
            raise _invalid(name, "a metadata filter is metadata[KEY]=VALUE")
        key = match["key"]
        _check(name, key, limits.METADATA_FILTER_KEY_CHARS_MAX, "key")
        _check(name, value, limits.METADATA_FILTER_VALUE_CHARS_MAX, "value")
        found.append((key, value))
    if len(found) > limits.METADATA_FILTERS_MAX:
        raise _invalid(PREFIX, f"at most {limits.METADATA_FILTERS_MAX} metadata filters")
    return found


def _check(name: str, text: str, chars_max: int, what: str) -> None:
    if len(text) > chars_max:
        raise _invalid(name, f"a filter {what} has at most {chars_max} characters")
    if _UNPRINTABLE.search(text) is not None:
        raise _invalid(name, f"a filter {what} may not hold control characters")


def _invalid(name: str, message: str) -> InvalidMetadataFilter:
    # The field names the parameter as sent, printable (it may hold what was refused).
    field = name.encode("unicode_escape").decode("ascii")[:200]
    return InvalidMetadataFilter(message, errors=[{"field": field, "message": message}])


@dataclass
class MetadataFilterOperation(LedgerOperation):
    """A list operation that takes metadata filters: documented as one `deepObject` parameter
    (`metadata[KEY]=VALUE`, repeatable), which Litestar's signature cannot declare."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.parameters = [
            *(self.parameters or []),
            Parameter(
                name=PREFIX,
                param_in="query",
                required=False,
                style="deepObject",
                explode=True,
                description=(
                    "Filters on top-level metadata members, `metadata[KEY]=VALUE`, repeatable: "
                    "every pair must match (string equality). Served by an index. At most "
                    f"{limits.METADATA_FILTERS_MAX} pairs; bad syntax is 422 "
                    "`invalid_metadata_filter`."
                ),
                schema=Schema(
                    type=OpenAPIType.OBJECT,
                    additional_properties=Schema(
                        type=OpenAPIType.STRING,
                        max_length=limits.METADATA_FILTER_VALUE_CHARS_MAX,
                        pattern=PRINTABLE_PATTERN,
                    ),
                    property_names=Schema(
                        type=OpenAPIType.STRING,
                        min_length=1,
                        max_length=limits.METADATA_FILTER_KEY_CHARS_MAX,
                        pattern=KEY_PATTERN,
                    ),
                    max_properties=limits.METADATA_FILTERS_MAX,
                ),
            ),
        ]
