# Lookalike and non-ASCII digits are what this module is for:
# ruff: noqa: RUF001
"""Hypothesis strategies for hostile HTTP requests, built from the app's own routes.

Each route becomes an `Operation`: its method, path template, declared parameters and request
body schema, read from the OpenAPI document (`/schema/openapi.json`) and, for routes the
document leaves out (`/schema/...`), from `app.routes`. `requests_for(operation, known)` draws
a whole request for it: path parameters, query string, headers and body, mixing values the
route accepts (ids that exist, so a request goes deep) with hostile ones (contract 8.2): control
characters, NUL, trailing newlines, Unicode lookalikes and digits, lone surrogates, huge and
tiny numbers, out-of-range timestamps and offsets, long strings, deep nesting, wrong JSON
types, repeated keys, invalid UTF-8, and odd Authorization, Idempotency-Key, If-Match,
traceparent, X-Request-ID and Content-Type headers.

Bodies are written here, not by `json.dumps`: a JSON number keeps its text (`1e400`,
`-0.0`, 10**400), an object may repeat a key, and a string may hold a lone surrogate.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from litestar import Litestar

from ledger.http.pagination import encode_cursor

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Methods a route does not declare: each must be a 405 problem, never a 5xx.
OTHER_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "X-FOO")
SCHEMA_REF = "#/components/schemas/"
LIST_ITEMS_MAX = 3  # a batch of a few transfers reaches every rule; a thousand adds only time

# -- JSON written by hand -----------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON token written as is: a number no float holds, or text that is not JSON at all."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """A JSON object as its key-value pairs, in order: a key may appear twice."""

    items: tuple[tuple[str, Any], ...]


def to_json(value: Any, ascii_only: bool = False) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        inner = ",".join(
            f"{to_json(k, ascii_only)}:{to_json(v, ascii_only)}" for k, v in value.items
        )
        return "{" + inner + "}"
    if isinstance(value, dict):
        return to_json(Pairs(tuple(value.items())), ascii_only)
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def json_bytes(value: Any, ascii_only: bool) -> bytes:
    # surrogatepass: a lone surrogate becomes the bytes of an invalid UTF-8 sequence, on purpose.
    return to_json(value, ascii_only).encode("utf-8", "surrogatepass")


# -- hostile values -------------------------------------------------------------------------------

UNICODE_DIGITS = ("١٢٣", "１２３", "߁߂", "𝟙𝟚", "²", "³", "Ⅻ", "½", "۹", "٣.٥", "௧", "๑")
HOSTILE_TEXTS: tuple[str, ...] = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\n",
    "USD\n",
    "cash\r\n",
    "\r\n",
    "\t",
    "\x7f",
    "\x1b[31m",
    "\x08",
    "é",
    "İ",
    "ǅ",
    "ß",
    "ﬁ",
    "\u202eRTL",
    "\ufeffBOM",
    "a\u200bb",
    "\u00a0",
    "\u2028",
    "ＵＳＤ",
    "UЅD",
    "𝐔𝐒𝐃",
    "acct：1",
    "\U0001f4b8",
    "\ud800",
    "x\udfff",
    *UNICODE_DIGITS,
    "a" * 129,
    "a" * 256,
    "b" * 20_000,
    "%00",
    "%ff",
    "../../etc/passwd",
    "' OR 1=1 --",
    "null",
    "true",
    "{}",
    "1",
    "-1",
    "1.0",
    "1e308",
    "9" * 30,
)
HOSTILE_NUMBERS: tuple[str, ...] = (
    "0",
    "-0",
    "-0.0",
    "0.0",
    "0e0",
    "1.0",
    "1.5",
    "-1",
    "1E2",
    "1e308",
    "-1e308",
    "1e-308",
    "4.9e-324",
    "1e400",
    "-1e400",
    str(2**63 - 1),
    str(2**63),
    str(2**64),
    str(-(2**63)),
    str(-(2**63) - 1),
    str(10**400),
    "-" + str(10**400),
    "9" * 5000,
    "123456789012345678901234567890.5",
    "31536001",
)
NOT_JSON_TOKENS: tuple[str, ...] = ("NaN", "Infinity", "-Infinity", "١٢٣", "０", "01", "+1", ".5")

_YEARS = ("0000", "0001", "1969", "2024", "9999", "10000", "-0001", "２０２４", "٢٠٢٤")
_OFFSETS = ("Z", "z", "+00:00", "+14:00", "-23:59", "+24:00", "-24:00", "+05:30:15", "+05:30:15.5")
_MORE_OFFSETS = ("+0530", "+05", "", "+99:99", " +00:00", "-00:00", "+14:01", "+١٤:٠٠")
TIMESTAMP_SPECIALS: tuple[str, ...] = (
    "2024-02-30T00:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-12-31T23:59:60Z",
    "2024-01-01 00:00:00+00:00",
    "2024-01-01T00:00:00.1234567890123Z",
    "2024-01-01",
    "2024-W01-1T00:00:00Z",
    "2024-001T00:00:00Z",
    "now",
    "0",
    "1700000000",
    "9999-12-31T23:59:59.999999-14:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-23:59",
    "9999-12-31T23:59:59+23:59:59",
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """RFC 3339-ish text around every edge: years 0/1/9999/10000, offsets from -24:00 to
    +24:00 with seconds, Unicode digits, a trailing newline."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(TIMESTAMP_SPECIALS))
    year = draw(st.sampled_from(_YEARS))
    offset = draw(st.sampled_from(_OFFSETS + _MORE_OFFSETS))
    suffix = draw(st.sampled_from(("", "", "", "\n", "\r\n", " ")))
    return f"{year}-01-01T00:00:00{offset}{suffix}"


hostile_texts = st.sampled_from(HOSTILE_TEXTS) | st.text(max_size=12)
hostile_numbers = st.sampled_from(HOSTILE_NUMBERS).map(Raw)


def deep(depth: int, kind: str) -> Any:
    """A value nested `depth` deep: lists, objects, or both."""
    if kind == "list":
        return Raw("[" * depth + "]" * depth)
    if kind == "object":
        return Raw('{"a":' * depth + "1" + "}" * depth)
    return Raw('[{"a":' * depth + "1" + "}]" * depth)


hostile_json = st.one_of(
    hostile_texts,
    hostile_numbers,
    timestamps(),
    st.sampled_from(
        [
            None,
            True,
            False,
            [],
            {},
            [1, 2],
            {"": ""},
            {"\x00": 1},
            Raw("1 "),
            {"a": Raw("1e400")},
            Raw("[" + ",".join(["1"] * 2000) + "]"),
            *(deep(d, k) for d in (9, 100, 5000) for k in ("list", "object", "mixed")),
        ]
    ),
    st.sampled_from(NOT_JSON_TOKENS).map(Raw),
    st.sampled_from(UNICODE_DIGITS),
)

# JSON-ish values a free-form field (`metadata`) may legitimately hold, numbers at every edge.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    hostile_numbers,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


# -- routes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str  # path, query, header
    schema: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI template: /v1/accounts/{account_id}
    parameters: tuple[Parameter, ...]
    body_schema: dict[str, Any] | None
    documented: bool

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def operations(app: Litestar) -> list[Operation]:
    """Every operation of the app: the OpenAPI document's, then each route's other paths and
    methods (the /schema pages), so a new route is fuzzed with no edit here."""
    document = app.openapi_schema.to_schema()
    found: list[Operation] = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            params = tuple(
                Parameter(p["name"], p["in"], resolve(document, p.get("schema", {})))
                for p in op.get("parameters", [])
            )
            content = (op.get("requestBody") or {}).get("content", {})
            body = content.get("application/json", {}).get("schema")
            body_schema = resolve_all(document, body) if body else None
            found.append(Operation(method.upper(), path, params, body_schema, True))
    seen = {(o.method, o.path) for o in found}
    for route in app.routes:
        methods = sorted(getattr(route, "methods", ()))
        for method in methods:
            if method in {"OPTIONS", "HEAD"} or (method, route.path_format) in seen:
                continue
            params = tuple(
                Parameter(name, "path", {"type": "string"}) for name in route.path_parameters
            )
            found.append(Operation(method, route.path_format, params, None, False))
            seen.add((method, route.path_format))
    return found


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = document["components"]["schemas"][ref.removeprefix(SCHEMA_REF)]
    return resolved


def resolve_all(document: dict[str, Any], schema: Any) -> Any:
    """The schema with every `$ref` replaced by its component (our schemas have no cycles)."""
    if isinstance(schema, dict):
        schema = resolve(document, schema)
        return {k: resolve_all(document, v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [resolve_all(document, v) for v in schema]
    return schema


# -- what exists ---------------------------------------------------------------------------------


@dataclass
class Known:
    """Ids and secrets that exist in the fuzzed database, so requests reach past the 404s."""

    admin_secret: str
    reader_secret: str
    account_ids: list[str] = field(default_factory=list)
    transfer_ids: list[str] = field(default_factory=list)
    key_ids: list[str] = field(default_factory=list)  # never the admin's own key: not revoked
    cursors: list[str] = field(default_factory=list)  # the route's own, from a page of one
    etags: list[str] = field(default_factory=list)  # the accounts' at seed time, in their order
    # Accounts and liquidity accounts of an exchange that can succeed (POST /v1/transfers/exchange)
    exchange: dict[str, Any] = field(default_factory=dict)
    category_ids: list[str] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)  # sealed audit records (Merkle proofs)
    webhook_ids: list[str] = field(default_factory=list)

    @property
    def cursor_kinds(self) -> list[str]:
        return [cursor_kind(c) for c in self.cursors]

    def ids(self) -> list[str]:
        return self.account_ids + self.transfer_ids + self.key_ids + self.category_ids

    def ids_for(self, name: str) -> list[str]:
        """Existing ids for a field or parameter, by its name. A credit account's pool starts
        one place later than a debit account's, so that the simplest transfer hypothesis draws
        (first of each) moves money between two accounts instead of being `same_account`."""
        for word, pool in (
            ("account", self.account_ids),
            ("transfer", self.transfer_ids),
            ("key", self.key_ids),
            ("category", self.category_ids),
            ("parent", self.category_ids),
            ("record", self.record_ids),
            ("webhook", self.webhook_ids),
        ):
            if word in name:
                return pool[1:] + pool[:1] if "credit" in name else pool
        return self.ids()


IDEMPOTENCY_KEYS = ("fuzz-key-1", "fuzz-key-2")  # few, so that replays and reuses happen
ENUM_WORDS = (
    "active",
    "frozen",
    "closed",
    "pending",
    "posted",
    "voided",
    "expired",
    "reversed",
    "debit",
    "credit",
    "admin",
    "reader",
    "account.created",
    "transfer.created",
    "cli",
)


def uuid_texts(known: Known, name: str = "") -> st.SearchStrategy[str]:
    """Ids for a parameter or field named `name`: mostly ones that exist, of its kind (an
    `account_id` is an account's), then random, edge and lookalike ones."""
    pool = known.ids_for(name)
    plain = st.sampled_from(pool) if pool else st.uuids().map(str)
    variants = st.sampled_from(pool or [str(uuid.uuid4())]).flatmap(
        lambda text: st.sampled_from(
            [
                text.upper(),
                "{" + text + "}",
                "urn:uuid:" + text,
                text.replace("-", ""),
                text + "\n",
                " " + text,
                text[:-1],
                text + "0",
                text.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
                text.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
            ]
        )
    )
    edges = st.sampled_from(
        [str(uuid.UUID(int=0)), str(uuid.UUID(int=2**128 - 1)), str(uuid.UUID(int=1))]
    )
    return st.one_of(plain, plain, plain, st.uuids().map(str), variants, edges, hostile_texts)


# -- bodies from a schema ------------------------------------------------------------------------


def valid_value(schema: dict[str, Any], known: Known, name: str = "") -> st.SearchStrategy[Any]:
    """A value the schema allows, leaning to values that exist (ids, the seeded currency)."""
    if "oneOf" in schema:
        return st.one_of([valid_value(s, known, name) for s in schema["oneOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = schema.get("minimum", -(2**63))
        high = schema.get("maximum", 2**63 - 1)
        small = st.integers(max(low, 0), min(high, 50)) if max(low, 0) <= min(high, 50) else None
        edges = st.sampled_from(sorted({low, high, min(low + 1, high), max(high - 1, low)}))
        return st.one_of([s for s in (small, small, edges) if s is not None])
    if kind == "string":
        return _valid_string(schema, known, name)
    if kind == "array":
        items = valid_value(schema.get("items", {}), known, name)
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(low, LIST_ITEMS_MAX))
    if kind == "object" or "properties" in schema:
        if "properties" not in schema:
            return st.dictionaries(st.text(max_size=8), json_values, max_size=4)
        return valid_object(schema, known)
    return json_values


def _valid_string(schema: dict[str, Any], known: Known, name: str) -> st.SearchStrategy[Any]:
    if schema.get("format") == "uuid":
        pool = known.ids_for(name)
        return st.sampled_from(pool) | st.uuids().map(str) if pool else st.uuids().map(str)
    pattern = schema.get("pattern")
    if pattern:
        if "[A-Z0-9]{3,12}" in pattern:  # a currency: mostly the seeded one
            return st.sampled_from(["USD", "USD", "EUR", "GBP", "XYZ123"])
        # Python's `$` also matches before a final newline: fullmatch without the lookahead.
        plain = pattern.replace("(?!\\n)", "").removeprefix("^").removesuffix("$")
        return st.from_regex(re.compile(plain), fullmatch=True).filter(
            lambda s: len(s) <= schema.get("maxLength", 10_000)
        )
    return st.text(
        min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 20), 20)
    )


@st.composite
def valid_object(draw: st.DrawFn, schema: dict[str, Any], known: Known) -> dict[str, Any]:
    required = set(schema.get("required", []))
    body: dict[str, Any] = {}
    if "via" in schema.get("properties", {}) and known.exchange and draw(st.booleans()):
        # An exchange: half the time a coherent one (its `via` names the accounts' currencies),
        # or the route would only ever answer `exchange_via_invalid`.
        body.update(known.exchange)
    for name, prop in schema.get("properties", {}).items():
        if name in body:
            continue
        if name in required or draw(st.booleans()):
            body[name] = draw(valid_value(prop, known, name))
    return body


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """One hostile change somewhere in a valid body: a value replaced, a field dropped or added,
    a key written twice."""
    if not isinstance(value, dict):
        return draw(hostile_json)
    if not value:
        return draw(st.sampled_from([{"unknown": 1}, {"": None}, Pairs((("a", 1), ("a", 2)))]))
    names = sorted(value)
    name = draw(st.sampled_from(names))
    change = draw(
        st.sampled_from(["replace", "replace", "replace", "deep", "drop", "add", "twice"])
    )
    out = dict(value)
    if change == "replace":
        out[name] = draw(hostile_json)
    elif change == "deep":  # inside a nested object, or the first item of a list
        inner = value[name]
        if isinstance(inner, list) and inner:
            out[name] = [draw(mutated(inner[0])), *inner[1:]]
        else:
            out[name] = draw(mutated(inner))
    elif change == "drop":
        del out[name]
    elif change == "add":
        out[draw(hostile_texts)] = draw(hostile_json)
    else:
        first, second = value[name], draw(hostile_json | st.just(value[name]))
        rest = tuple((k, v) for k, v in out.items() if k != name)
        return Pairs(((name, first), *rest, (name, second)))
    return out


TOP_LEVEL_WRONG = ("[]", "null", "true", "1", '"x"', "1e400", "[{}]", '{"a":1}{"b":2}')
RAW_BODIES: tuple[bytes, ...] = (
    b"",
    b" ",
    b"\n",
    b"\xff\xfe",
    b"\xef\xbb\xbf{}",
    b'{"code":"\xff"}',
    b'{"code":"\xc0\xaf"}',
    b'{"code":"\xed\xa0\x80"}',
    b'{"a":',
    b"{",
    b"}",
    b"\x00",
    b'{"a":1,}',
    b"{'a': 1}",
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b" " * (1024 * 1024 + 1),
    b'{"metadata":{"k":"' + b"x" * (1024 * 1024) + b'"}}',
)


def bodies(
    schema: dict[str, Any] | None, known: Known, hostile: bool
) -> st.SearchStrategy[bytes | None]:
    """A body the schema allows (or none for a route without one); when `hostile`, a valid body
    with one hostile change, or bytes that are not the JSON asked for at all."""
    good = st.none() if schema is None else valid_value(schema, known)
    encoded = good.map(lambda value: None if value is None else json_bytes(value, False))
    if not hostile:
        return encoded
    raw = st.sampled_from(RAW_BODIES)
    wrong = st.sampled_from(TOP_LEVEL_WRONG).map(lambda text: text.encode())
    if schema is None:
        return st.one_of(raw, wrong)
    bad = good.flatmap(mutated).flatmap(
        lambda value: st.booleans().map(lambda ascii_only: json_bytes(value, ascii_only))
    )
    return st.one_of(bad, bad, bad, bad, bad, raw, wrong, st.none())


# -- parameters ----------------------------------------------------------------------------------

CURSOR_KINDS = ("account", "transfer", "entry", "audit", "event", "apikey", "", "x:y")
CURSOR_VALUES = (
    "1",
    "0",
    "-1",
    "²",
    "١٢",
    "１",
    "9" * 19,
    "9" * 20,
    str(2**63),
    "",
    " 1",
    "1\n",
    "\x00",
    str(uuid.UUID(int=0)),
    "not-a-uuid",
    "é",
)


def cursors(known: Known) -> st.SearchStrategy[str]:
    """Cursors of the route's own kind (an `entry` cursor for entries) holding odd values, of
    other kinds, and not cursors at all."""
    values = st.sampled_from(CURSOR_VALUES + tuple(known.ids()[:3]))
    own = st.builds(
        encode_cursor, st.sampled_from(known.cursor_kinds or list(CURSOR_KINDS)), values
    )
    built = own | st.builds(encode_cursor, st.sampled_from(CURSOR_KINDS), values)
    garbage = st.sampled_from(["=", "====", "a", "!!!", "YQ", "A" * 30_000, "%ff", "\n"])
    return st.one_of(built, built, garbage, hostile_texts)


INTEGER_TEXTS = (
    "1",
    "2",
    "1000",
    "0",
    "-1",
    "1001",
    "1.5",
    "1e3",
    "1.0",
    " 1",
    "1\n",
    "+1",
    "0x10",
    "1_000",
    "",
    "9" * 5000,
    str(2**63),
    str(2**64),
    *UNICODE_DIGITS,
)


def query_value(param: Parameter, known: Known, hostile: bool) -> st.SearchStrategy[str]:
    """A value for a query parameter, by its declared type (or, for plain strings, its name)."""
    schema = param.schema
    members = [schema, *schema.get("oneOf", [])]
    kinds = {m.get("type") for m in members}
    formats = {m.get("format") for m in members}
    if "integer" in kinds:
        good: st.SearchStrategy[str] = st.integers(1, 5).map(str)
        bad = st.sampled_from(INTEGER_TEXTS) | hostile_texts
    elif "date-time" in formats:
        good = st.sampled_from(["2024-01-01T00:00:00Z", "2999-01-01T00:00:00+01:00"])
        bad = timestamps() | hostile_texts
    elif "uuid" in formats:
        good, bad = st.sampled_from(known.ids_for(param.name)), uuid_texts(known, param.name)
    elif param.name in {"cursor", "after"}:
        good, bad = st.sampled_from(known.cursors or [""]), cursors(known)
    elif any(m.get("enum") for m in members):  # a closed set (`format`): its own values
        good = st.sampled_from([v for m in members for v in m.get("enum", [])])
        bad = st.sampled_from(ENUM_WORDS) | hostile_texts
    elif any("[A-Z0-9]{3,12}" in m.get("pattern", "") for m in members):  # a currency
        good, bad = st.sampled_from(["USD", "USD", "EUR"]), hostile_texts
    else:
        good = st.sampled_from((*ENUM_WORDS, "USD", "EUR", *known.ids()))
        bad = hostile_texts
    return st.one_of(bad, bad, good) if hostile else good


def encode_part(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


RAW_QUERY_PIECES = ("%ff", "%", "%zz", "%00", "&&", "=", "a=%c0%af", "limit", "limit=")


@st.composite
def query_strings(draw: st.DrawFn, params: Sequence[Parameter], known: Known, hostile: bool) -> str:
    pieces: list[str] = []
    for param in params:
        if draw(st.integers(0, 2)) == 0:
            continue
        if param.name in {"cursor", "after"} and not (hostile or known.cursors):
            continue  # no valid cursor to send
        repeats = draw(st.sampled_from([1, 1, 1, 2])) if hostile else 1  # a name twice
        for _ in range(repeats):
            value = draw(query_value(param, known, hostile))
            name = param.name
            if param.schema.get("type") == "object":  # deepObject: `metadata[KEY]=VALUE`
                name = f"{name}[{draw(st.sampled_from(['k', 'region', 'tier']))}]"
                if hostile and draw(st.booleans()):
                    name = f"{param.name}{draw(st.sampled_from(['', '[]', '[a][b]', '[']))}"
            pieces.append(f"{encode_part(name)}={encode_part(value)}")
    extra = draw(st.integers(0, 3)) if hostile else None
    if extra == 0:
        pieces.append(draw(st.sampled_from(RAW_QUERY_PIECES)))
    elif extra == 1:
        pieces.append(f"{encode_part(draw(hostile_texts))}={encode_part(draw(hostile_texts))}")
    return "&".join(pieces)


def path_value(param: Parameter, known: Known, hostile: bool) -> st.SearchStrategy[str]:
    if any(m.get("format") == "uuid" for m in [param.schema, *param.schema.get("oneOf", [])]):
        pool = known.ids_for(param.name)
        return uuid_texts(known, param.name) if hostile or not pool else st.sampled_from(pool)
    good = st.sampled_from(["openapi.json", "swagger", "openapi.yaml", "x"])
    return good | hostile_texts if hostile else good


# -- headers -------------------------------------------------------------------------------------

HOSTILE_HEADER_BYTES: tuple[bytes, ...] = (
    b"",
    b" ",
    b"\t",
    b"\x00",
    b"a\x00b",
    b"\x7f",
    b"\xff\xfe",
    "é".encode(),
    "é".encode("latin-1"),
    "²".encode("latin-1"),  # headers are read as Latin-1: `²` is one byte, and `isdigit`
    "ключ".encode(),
    b"a b",
    b"key\n",
    b"key\r\n",
    b"a" * 255,
    b"a" * 256,
    b"x" * 8192,
    b'"1"',
    b'W/"1"',
    b"*",
)
TRACEPARENTS: tuple[bytes, ...] = (
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    b"00-00000000000000000000000000000000-0000000000000000-01",
    b"00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    b"00-0af7651916cd43dd8448eb211c80319c",
    b"0" * 10_000,
)
IF_MATCHES: tuple[bytes, ...] = (
    b'"1"',
    b'"2"',
    b'W/"1"',
    b"1",
    b'"0"',
    b'"-1"',
    b'"99999999999999999999"',
    b'"9223372036854775807"',
    b'"9223372036854775808"',
    '"١"'.encode(),
    '"²"'.encode(),
    '"²"'.encode("latin-1"),
    'W/"¹"'.encode("latin-1"),
    '"１"'.encode(),
    b'"1", "2"',
    b'""',
    b'W/""',
    b"W/",
    b'"1',
)
HOSTS: tuple[bytes, ...] = (
    b"ledger:99999",
    b"ledger:http",
    b"a:b:c",
    b"ledger/v2",
    b"ledger?x",
    b"[::1",
    b"[::1]:8000",
    b"@",
    b"ledger:",
)
CONTENT_TYPES: tuple[bytes, ...] = (
    b"application/json",
    b"application/json",
    b"application/json",
    b"application/json; charset=utf-8",
    b"application/json; charset=latin-1",
    b"APPLICATION/JSON",
    b"application/problem+json",
    b"text/plain",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=xyz",
    b"multipart/form-data",
    b"application/msgpack",
    b"application/json\x00",
    b"/",
    b";;;",
    "application/jsön".encode(),
)


@st.composite
def headers(
    draw: st.DrawFn,
    operation: Operation,
    known: Known,
    has_body: bool,
    hostile: bool,
    hostile_auth: bool,
) -> list[tuple[bytes, bytes]]:
    """The admin's Authorization and a JSON Content-Type, unless `hostile_auth`; an
    Idempotency-Key from a small pool (so replays happen) on some POSTs; and when `hostile`,
    odd values of every header the service reads."""
    out: list[tuple[bytes, bytes]] = []
    auth = draw(st.integers(0, 3)) if hostile_auth else None
    admin = known.admin_secret.encode()
    if auth is None:
        out.append((b"authorization", b"Bearer " + admin))
    elif auth == 0:
        out.append((b"authorization", b"Bearer " + known.reader_secret.encode()))
    elif auth == 1:
        pass  # no Authorization at all
    else:
        garbage = draw(
            st.sampled_from(
                [
                    b"Bearer",
                    b"Bearer ",
                    b"Basic YWRtaW46YWRtaW4=",
                    b"bearer " + admin,
                    b"Bearer  " + admin + b" ",
                    b"Bearer " + admin + b"\x00",
                    b"Bearer " + admin + b"\xff",
                    b"Bearer " + admin[:-1],
                    b"Bearer lk_" + b"x" * 10_000,
                ]
            )
            | st.sampled_from(HOSTILE_HEADER_BYTES).map(lambda v: b"Bearer " + v)
        )
        out.append((b"authorization", garbage))
    if operation.method == "POST" and draw(st.integers(0, 2)) == 0:
        out.append((b"idempotency-key", draw(st.sampled_from(IDEMPOTENCY_KEYS)).encode()))
    takes_if_match = any(p.name.lower() == "if-match" for p in operation.parameters)
    if takes_if_match and not hostile:
        etags = [etag.encode() for etag in known.etags] or list(IF_MATCHES[:3])
        out.append((b"if-match", draw(st.sampled_from(etags))))
    if has_body and not hostile:
        out.append((b"content-type", b"application/json"))
    if hostile:
        out.extend(draw(odd_headers(takes_if_match, has_body)))
    return out


@st.composite
def odd_headers(draw: st.DrawFn, takes_if_match: bool, has_body: bool) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    if draw(st.integers(0, 2)) == 0:
        out.append((b"idempotency-key", draw(st.sampled_from(HOSTILE_HEADER_BYTES))))
    if (takes_if_match or draw(st.integers(0, 5)) == 0) and draw(st.integers(0, 5)):
        out.append((b"if-match", draw(st.sampled_from(IF_MATCHES + HOSTILE_HEADER_BYTES))))
    if draw(st.integers(0, 3)) == 0:
        out.append((b"traceparent", draw(st.sampled_from(TRACEPARENTS + HOSTILE_HEADER_BYTES))))
        if draw(st.booleans()):
            out.append((b"tracestate", draw(st.sampled_from(HOSTILE_HEADER_BYTES))))
    if draw(st.integers(0, 3)) == 0:
        out.append((b"x-request-id", draw(st.sampled_from((*HOSTILE_HEADER_BYTES, b"ok-1")))))
    if (has_body or draw(st.integers(0, 5)) == 0) and draw(st.integers(0, 5)):
        out.append((b"content-type", draw(st.sampled_from(CONTENT_TYPES))))
    if draw(st.integers(0, 5)) == 0:
        out.append((b"host", draw(st.sampled_from(HOSTS + HOSTILE_HEADER_BYTES))))
    if draw(st.integers(0, 5)) == 0:
        name = draw(st.sampled_from([b"accept", b"accept-encoding", b"x-forwarded-for"]))
        out.append((name, draw(st.sampled_from(HOSTILE_HEADER_BYTES))))
    return out


# -- whole requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    target: str  # encoded path and query
    headers: list[tuple[bytes, bytes]]
    body: bytes | None

    def describe(self) -> str:
        body = None if self.body is None else self.body[:300]
        headers = [(name, value[:200]) for name, value in self.headers]
        return f"{self.method} {self.target[:300]} headers={headers!r} body={body!r}"

    __repr__ = describe  # a failing example is printed short, whatever its size

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's printer
        printer.text(self.describe())


_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def plain_path(operation: Operation, known: Known) -> str:
    """The operation's path with a seeded id of the right kind in each parameter."""
    return _PATH_PARAM.sub(lambda m: (known.ids_for(m.group(1)) or ["x"])[0], operation.path)


def cursor_kind(cursor: str) -> str:
    """A cursor is the key it continues after (ledger/http/pagination.py): an id or a sequence."""
    return "sequence" if cursor.isascii() and cursor.isdigit() else "id"


# Where a request's hostile values go. One part at a time, mostly, so that the rest is valid and
# the hostile value reaches as deep as it can; now and then every part at once. "none" first:
# hypothesis starts from the simplest example, so each route's run begins with a valid request.
TARGETS = ("none", "body", "body", "body", "query", "query", "path", "header", "auth", "method")
TARGETS_ALL = "all"


@st.composite
def requests_for(draw: st.DrawFn, operation: Operation, known: Known) -> FuzzRequest:
    target = draw(st.sampled_from((*TARGETS, TARGETS_ALL)))

    def hostile(part: str) -> bool:
        return target in (part, TARGETS_ALL)

    by_name = {p.name: p for p in operation.parameters if p.location == "path"}

    def fill(match: re.Match[str]) -> str:
        param = by_name.get(match.group(1), Parameter(match.group(1), "path", {"type": "string"}))
        return encode_part(draw(path_value(param, known, hostile("path"))))

    path = _PATH_PARAM.sub(fill, operation.path)
    if hostile("path") and draw(st.integers(0, 3)) == 0:
        path = draw(st.sampled_from([path + "/", path + "//", path + "/x", path + "%0A"]))
    params = [p for p in operation.parameters if p.location == "query"]
    query = draw(query_strings(params, known, hostile("query")))
    method = draw(st.sampled_from(OTHER_METHODS)) if hostile("method") else operation.method
    body = draw(bodies(operation.body_schema, known, hostile("body")))
    return FuzzRequest(
        method=method,
        target=path + ("?" + query if query else ""),
        headers=draw(
            headers(operation, known, body is not None, hostile("header"), hostile("auth"))
        ),
        body=body,
    )
