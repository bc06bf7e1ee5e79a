"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

Six, and why.

Integers: under OpenAPI 3.1 (JSON Schema 2020-12) `2.0` *is* the integer 2, so Schemathesis
draws integer fields spelled as floats (`{"amount": 2.0}`) and expects them accepted. The
ledger's contract refuses a float token where an amount goes (422 `validation_error`, pinned by
tests/test_errors.py): money is an integer in the request's own text, not a number that happens
to be whole. No JSON Schema keyword can say "an integer token", so the document cannot forbid
`2.0`; this hook spells such values as the integers they equal, which leaves every generated
value the same value and every check on. Fractional floats, strings and out-of-range integers
(the negative cases) are untouched.

Refusals of state: `positive_data_acceptance` expects a request the document admits to be
accepted, or refused with 401, 403, 404, 409 or 429. A ledger also refuses well-formed requests
for what its state or its rules across values say, and its contract gives those refusals their
own codes at 422 or 412 (`insufficient_funds`, `same_account`, `idempotency_key_reused`,
`precondition_failed`, ...): the document lists each one on the operations that answer it, and no
JSON Schema can state them (a balance, two ids that differ, a key already used, a stale ETag).
Such a failure is dropped only when the answer is a problem whose code the document declares
for that operation at that status, other than `validation_error`. A `validation_error` for a
request the document admits (what the check exists to find: the decoder and the document
disagreeing) still fails the run, as does every other check.

Idempotency keys: the coverage phase sends a few constant keys (`0`, `00`, ...) with every body
it builds, so nearly every create after the first was answered 422 `idempotency_key_reused`
(right, and dropped as above) and never reached the ledger. A well-formed key is therefore made
unique to its request (a digest of the key, the method, the path and the body): the same
request with the same key still replays, another request gets its own key and is really run.
Malformed keys (the negative cases) are sent as drawn.

Metadata depth: the contract bounds metadata at 8 levels of nesting (422 `validation_error`
past it, pinned by tests/test_errors.py). JSON Schema has no keyword for depth: only one
schema per level could say it, and unrolled that way the coverage phase drew fifteen times the
cases for every body with metadata, so the document states the bound in the metadata schema's
description. Schemathesis, reading only the keywords, now and then draws metadata nine deep and
expects it accepted. This hook cuts generated metadata at the documented depth (a container
that would sit ninth is sent as null), so every metadata sent is one the document admits in full.

Metadata filters on the wire: `metadata[KEY]=VALUE` is one deepObject query parameter whose
values the document types as strings. The negative phase now and then draws a value of another
type (a number, say `2.05e-270`) and expects a refusal, but a query string has only text: what
reaches the service is the string `2.05e-270`, a filter the document admits, and answering it is
right. Such a failure is dropped only when `metadata` is the one component named invalid and
every pair, as sent, meets the document's own key and value rules; any other schema-violating
request that is accepted still fails the run.

A missing If-Match: `missing_required_header` expects 400, 401, 403, 406, 415 or 422 for a
request without a required header. RFC 6585 made 428 Precondition Required for exactly a write
sent without its precondition, and the contract answers it (`precondition_required`). That one
answer, for that one header, is accepted; any other answer to a missing header still fails.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import schemathesis

from ledger.core.limits import (
    METADATA_DEPTH_MAX,
    METADATA_FILTER_KEY_CHARS_MAX,
    METADATA_FILTER_VALUE_CHARS_MAX,
    METADATA_FILTERS_MAX,
)
from ledger.http.metadata_filters import KEY_PATTERN, PRINTABLE_PATTERN
from ledger.http.openapi import IDEMPOTENCY_KEY_PATTERN

FILTER_KEY = re.compile(KEY_PATTERN)
FILTER_VALUE = re.compile(PRINTABLE_PATTERN)

# Past 2**53 a float no longer names one integer: leave such values as they were drawn.
WHOLE_FLOAT_MAX = 2**53


def integer_spelling(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= WHOLE_FLOAT_MAX:
        return int(value)
    if isinstance(value, dict):
        return {k: integer_spelling(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integer_spelling(v) for v in value]
    return value


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    return metadata_within_depth(integer_spelling(body))


def metadata_within_depth(value: Any) -> Any:
    """Every `metadata` object in a body (a transfer's, each batch item's, ...) cut at the
    documented depth; the metadata object itself is level 1."""
    if isinstance(value, list):
        return [metadata_within_depth(item) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        key: _cut(item, 1)
        if key == "metadata" and isinstance(item, dict)
        else metadata_within_depth(item)
        for key, item in value.items()
    }


def _cut(value: Any, level: int) -> Any:
    """`value` sits at `level`: a container there past the bound becomes null."""
    if not isinstance(value, dict | list):
        return value
    if level > METADATA_DEPTH_MAX:
        return None
    if isinstance(value, dict):
        return {key: _cut(item, level + 1) for key, item in value.items()}
    return [_cut(item, level + 1) for item in value]


VALIDATION_ERROR = "validation_error"
PRECONDITION_REQUIRED = 428
STATE_STATUSES = frozenset({412, 422})
PROBLEM_MEDIA_TYPE = "application/problem+json"


def declared_codes(case: Any, status: int) -> set[str]:
    """The problem codes the document declares for this operation at `status`."""
    response = case.operation.definition.raw.get("responses", {}).get(str(status), {})
    examples = response.get("content", {}).get(PROBLEM_MEDIA_TYPE, {}).get("examples", {})
    return {example["value"]["code"] for example in examples.values()}


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """False drops the failure (see the module docstring): a declared refusal of state, or 428
    for a missing If-Match."""
    kind = type(failure).__name__
    if kind == "AcceptedNegativeData":
        return not _metadata_filters_valid_as_sent(failure, case)
    if kind == "MissingHeaderNotRejected":
        return not (response.status_code == PRECONDITION_REQUIRED and _names_if_match(failure))
    if kind != "RejectedPositiveData":
        return True
    if response.status_code not in STATE_STATUSES:
        return True
    try:
        code = json.loads(response.content)["code"]
    except (ValueError, KeyError, TypeError):
        return True
    return code == VALIDATION_ERROR or code not in declared_codes(case, response.status_code)


NEGATIVE_METADATA_ONLY = re.compile(r"Invalid component: parameter `metadata` in query - [^\n]*$")


def _metadata_filters_valid_as_sent(failure: Any, case: Any) -> bool:
    """True when the only invalid component was the metadata filters and, spelled as the query
    string carries them (text), every pair is one the document admits."""
    invalid = [line for line in str(failure.message).splitlines() if "Invalid component" in line]
    if len(invalid) != 1 or NEGATIVE_METADATA_ONLY.search(invalid[0].strip()) is None:
        return False
    pairs = (case.query or {}).get("metadata")
    if not isinstance(pairs, dict) or len(pairs) > METADATA_FILTERS_MAX:
        return False
    return all(
        isinstance(key, str)
        and 1 <= len(key) <= METADATA_FILTER_KEY_CHARS_MAX
        and FILTER_KEY.fullmatch(key) is not None
        and isinstance(value, str | int | float)
        and not isinstance(value, bool)
        and len(str(value)) <= METADATA_FILTER_VALUE_CHARS_MAX
        and FILTER_VALUE.fullmatch(str(value)) is not None
        for key, value in pairs.items()
    )


def _names_if_match(failure: Any) -> bool:
    return str(getattr(failure, "header_name", "")).lower() == "if-match"


WELL_FORMED_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and WELL_FORMED_KEY.fullmatch(key):
        request = json.dumps(
            [key, case.method, case.path, case.path_parameters, case.body],
            sort_keys=True,
            default=repr,
        )
        headers["Idempotency-Key"] = hashlib.sha256(request.encode()).hexdigest()
        case.headers = headers
    return case
