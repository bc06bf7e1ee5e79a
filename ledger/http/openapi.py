"""The OpenAPI document, completed in one place from what the routes really do.

Litestar writes each operation's parameters and its typed bodies. What it cannot see is added
here, once, from the same objects that act on a request, so that the document cannot say one
thing while the code does another:
- security: every route guarded by `requires(permission)` (`ledger/http/auth.py`) needs the
  bearer key, and its description names the roles of that permission (`ledger/core/roles.py`);
  the others say `security: []`;
- errors: every status the route can answer, with the `Problem` schema
  (`application/problem+json`), the codes it may carry at that status and an example of each.
  The statuses follow from the route: a guard answers 401 (and 403 when some role may not),
  a path parameter that is not a UUID 404, a body or query parameter 422 and 413, the
  database 503 with `Retry-After`, an `Idempotency-Key` 409 and 422, `If-Match` 428 and 412;
  a route adds its own refusals with `problems=(AccountNotFound, ...)` in its decorator;
- examples: every error's, and a request body's where the route gives one (`example={...}`);
- links: where a route's answer leads (`links={...}` in its decorator: the operation and the
  runtime expression of each of its parameters), for clients and Schemathesis' stateful phase;
- headers: `Idempotency-Key` on every POST and `Idempotent-Replayed` on its answers, `If-Match`
  where the `require_if_match` guard reads it, `ETag` where a route declares `answers_etag=True`,
  `X-Request-ID` read by and echoed on every operation, `Retry-After` on 503;
- the generator's quirks, repaired in `ledger.http.openapi_schemas`.

`ContractJsonPlugin` serves the result at `/schema/openapi.json`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import JsonRenderPlugin

from ledger.core import limits
from ledger.core.errors import (
    PROBLEM_MEDIA_TYPE,
    Forbidden,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    LedgerError,
    PayloadTooLarge,
    PreconditionFailed,
    PreconditionRequired,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)
from ledger.core.roles import ROLES
from ledger.http import openapi_schemas
from ledger.http.auth import RoleGuard
from ledger.http.params import require_if_match
from ledger.http.problems import HTTP_CODES, problem_response

SECURITY_SCHEME = "bearerAuth"
PROBLEM_SCHEMA = "Problem"
PROBLEM_REF = f"#/components/schemas/{PROBLEM_SCHEMA}"
PROBLEMS_OPT = "problems"  # a route's own refusals: `problems=(AccountNotFound, ...)`
LINKS_OPT = (
    "links"  # where an answer leads: `links={"getAccount": {"account_id": "$response.body#/id"}}`
)
EXAMPLE_OPT = "example"  # a request body to show: `example={"code": "cash", ...}`
ETAG_OPT = "answers_etag"  # a route that answers the ETag: `answers_etag=True`
# A route whose 200 is also plain text when the client's Accept prefers it:
# `answers_text="what the text is"`.
TEXT_OPT = "answers_text"
REQUEST_ID_PATTERN = "^[A-Za-z0-9._:-]{1,128}$"  # observability/middleware.py::_REQUEST_ID
IDEMPOTENCY_KEY_PATTERN = f"^[!-~]{{1,{limits.IDEMPOTENCY_KEY_LENGTH_MAX}}}$"


@dataclass(frozen=True, slots=True)
class ProblemKind:
    """One refusal as the document shows it: its status, its stable code and its title."""

    status: int
    code: str
    title: str

    @classmethod
    def of(cls, error: type[LedgerError]) -> ProblemKind:
        return cls(error.status, error.code, error.title)

    def example(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://ledger.dev/problems/{self.code.replace('_', '-')}",
            "title": self.title,
            "status": self.status,
            "detail": self.title,
            "code": self.code,
        }
        if self.code == ValidationFailed.code:
            body["detail"] = "Expected `int`, got `str` - at `$.amount`"
            body["errors"] = [{"field": "amount", "message": "Expected `int`, got `str`"}]
        return body


# A path parameter that is not a UUID matches no route: Litestar's own 404.
ROUTE_NOT_FOUND = ProblemKind(404, HTTP_CODES[404], "Not Found")

PROBLEM_COMPONENT: dict[str, Any] = {
    "type": "object",
    "title": PROBLEM_SCHEMA,
    "description": "An RFC 9457 problem: every refusal of the API, as `application/problem+json`.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri", "description": "names the problem"},
        "title": {"type": "string", "description": "the same for every problem of this code"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "this occurrence, for people"},
        "code": {
            "type": "string",
            "pattern": "^[a-z][a-z0-9_]*$",
            "description": "stable snake_case name of the problem, for programs",
        },
        "errors": {
            "type": "array",
            "description": "with `validation_error`: one item per refused field",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

BEARER_SCHEME: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "`Authorization: Bearer <API key secret>`. A key has one role: "
        f"{', '.join(ROLES)}; each operation names the roles that may call it."
    ),
}


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "schema": schema}


REQUEST_ID_HEADER = _header(
    "the request's id: the caller's `X-Request-ID` when it is a sane token, else a new one",
    {"type": "string", "pattern": REQUEST_ID_PATTERN},
)
# Read, never refused: a value that is not a sane token is replaced (observability/middleware.py).
REQUEST_ID_READ = {"type": "string"}
RETRY_AFTER_HEADER = _header("seconds to wait before retrying", {"type": "integer", "minimum": 0})
REPLAYED_HEADER = _header(
    "`true` when this is the stored answer of an earlier request with the same Idempotency-Key",
    {"type": "string", "enum": ["true"]},
)
ETAG_HEADER = _header(
    'the account\'s version, quoted (`"7"`): send it back as `If-Match`',
    {"type": "string", "pattern": '^"[0-9]+"$'},
)


def _parameter(name: str, required: bool, description: str, schema: dict[str, Any]) -> Any:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema,
    }


REQUEST_ID_PARAMETER = _parameter(
    "X-Request-ID",
    False,
    "your id for this request, echoed back and logged when it matches "
    f"`{REQUEST_ID_PATTERN}`; any other value is replaced by a new id, never refused",
    REQUEST_ID_READ,
)
IDEMPOTENCY_KEY_PARAMETER = _parameter(
    "Idempotency-Key",
    False,
    "makes a retry safe: the same key with the same body answers the first result again "
    "(`Idempotent-Replayed: true`), with another body 422 `idempotency_key_reused`",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": limits.IDEMPOTENCY_KEY_LENGTH_MAX,
        "pattern": IDEMPOTENCY_KEY_PATTERN,
    },
)
# Any text: one that is not the account's current ETag fails the precondition (412), as
# RFC 9110 has it for If-Match; the current one is `"<version>"` (or `W/"<version>"`).
IF_MATCH_PARAMETER = _parameter(
    "If-Match",
    True,
    'the account\'s ETag from its last read (`"7"`): any other value is 412, none 428',
    {"type": "string", "minLength": 1, "pattern": "\\S", "examples": ['"1"']},
)


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """What a route handler itself says about the operation it serves."""

    roles: frozenset[str] | None  # None: open to everyone, no key
    if_match: bool
    etag: bool
    problems: tuple[ProblemKind, ...]
    links: dict[str, dict[str, str]]
    example: dict[str, Any] | None
    text: str | None = None

    @classmethod
    def of(cls, handler: HTTPRouteHandler) -> RouteFacts:
        guards = handler.resolve_guards()
        role_guards = [g for g in guards if isinstance(g, RoleGuard)]
        roles = frozenset(ROLES).intersection(*(g.roles for g in role_guards))
        declared = handler.opt.get(PROBLEMS_OPT, ())
        return cls(
            roles=roles if role_guards else None,
            if_match=require_if_match in guards,
            etag=bool(handler.opt.get(ETAG_OPT)),
            problems=tuple(ProblemKind.of(error) for error in declared),
            links=dict(handler.opt.get(LINKS_OPT, {})),
            example=handler.opt.get(EXAMPLE_OPT),
            text=handler.opt.get(TEXT_OPT),
        )


def complete_document(
    document: dict[str, Any],
    handlers: Iterable[HTTPRouteHandler],
    webhooks: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A completed copy of Litestar's `document` (see the module docstring), with the requests
    the service sends (`webhooks`: the section and its component schemas) when given."""
    done = copy.deepcopy(document)
    if webhooks is not None:
        section, webhook_schemas = webhooks
        done["webhooks"] = copy.deepcopy(section)
        done.setdefault("components", {}).setdefault("schemas", {}).update(
            copy.deepcopy(webhook_schemas)
        )
    components = done.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for schema in schemas.values():
        openapi_schemas.repair(schema)
        openapi_schemas.null_metadata_in_bodies(schema)
    schemas[PROBLEM_SCHEMA] = PROBLEM_COMPONENT
    schemas.update(openapi_schemas.metadata_components())
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = BEARER_SCHEME
    facts = {h.operation_id: RouteFacts.of(h) for h in handlers if isinstance(h.operation_id, str)}
    for item in done.get("paths", {}).values():
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                route = facts.get(str(operation.get("operationId")))
                if route is not None:
                    _complete_operation(method, operation, route)
    return done


def _summary(operation_id: str) -> str:
    """`createTransferBatch` -> "Create transfer batch" (Litestar's is the function's name)."""
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", operation_id).lower()
    return words[:1].upper() + words[1:]


def _complete_operation(method: str, operation: dict[str, Any], route: RouteFacts) -> None:
    operation["summary"] = _summary(str(operation["operationId"]))
    parameters: list[dict[str, Any]] = operation.setdefault("parameters", [])
    for parameter in parameters:
        openapi_schemas.repair_parameter(parameter.get("schema"))
    body = operation.get("requestBody")
    for media in (body or {}).get("content", {}).values():
        openapi_schemas.repair(media.get("schema"))
        if route.example is not None:
            media["examples"] = {"example": {"value": route.example}}
    kinds = list(_derived_problems(method, operation, route)) + list(route.problems)
    headers = [REQUEST_ID_PARAMETER]
    if method == "post" and route.roles is not None:
        headers.append(IDEMPOTENCY_KEY_PARAMETER)
    if route.if_match:
        headers.append(IF_MATCH_PARAMETER)
    replaced = {h["name"].lower() for h in headers}
    parameters[:] = [
        p
        for p in parameters
        if not (p.get("in") == "header" and str(p.get("name")).lower() in replaced)
    ]
    parameters.extend(headers)
    _security(operation, route)
    responses: dict[str, Any] = operation["responses"]
    for status, response in responses.items():
        answer_headers = response.setdefault("headers", {})
        answer_headers["X-Request-ID"] = REQUEST_ID_HEADER
        if status.startswith("2") and method == "post" and route.roles is not None:
            answer_headers["Idempotent-Replayed"] = REPLAYED_HEADER
        if status.startswith("2") and route.etag:
            answer_headers["ETag"] = ETAG_HEADER
        if status.startswith("2") and route.links:
            response["links"] = {
                target: {"operationId": target, "parameters": parameters}
                for target, parameters in route.links.items()
            }
    if route.text is not None and "200" in responses:
        responses["200"].setdefault("content", {})["text/plain"] = {
            "schema": {"type": "string", "description": route.text}
        }
    for code, group in _by_status(kinds).items():
        if str(code) not in responses:
            responses[str(code)] = _problem_response(code, group)


def _derived_problems(
    method: str, operation: dict[str, Any], route: RouteFacts
) -> Iterable[ProblemKind]:
    """The refusals that follow from the route's shape, whatever its handler does."""
    where = {p.get("in") for p in operation.get("parameters", [])}
    if route.roles is not None:
        yield ProblemKind.of(Unauthorized)
        if route.roles != frozenset(ROLES):
            yield ProblemKind.of(Forbidden)
        yield ProblemKind.of(ServiceUnavailable)  # the key is looked up in the database
    if "path" in where:
        yield ROUTE_NOT_FOUND
    if "query" in where or "path" in where or operation.get("requestBody"):
        yield ProblemKind.of(ValidationFailed)
    if operation.get("requestBody") or method == "post":
        yield ProblemKind.of(PayloadTooLarge)
    if method == "post" and route.roles is not None:
        yield ProblemKind.of(IdempotencyKeyReused)
        yield ProblemKind.of(IdempotencyKeyInUse)
    if route.if_match:
        yield ProblemKind.of(PreconditionRequired)
        yield ProblemKind.of(PreconditionFailed)


def _security(operation: dict[str, Any], route: RouteFacts) -> None:
    if route.roles is None:
        operation["security"] = []
        return
    operation["security"] = [{SECURITY_SCHEME: []}]
    roles = ", ".join(r for r in ROLES if r in route.roles)
    text = operation.get("description", "").rstrip()
    operation["description"] = f"{text}\n\nRoles: {roles}.".lstrip()


def _by_status(kinds: Iterable[ProblemKind]) -> dict[int, list[ProblemKind]]:
    grouped: dict[int, list[ProblemKind]] = {}
    for kind in kinds:
        group = grouped.setdefault(kind.status, [])
        if all(k.code != kind.code for k in group):
            group.append(kind)
    return dict(sorted(grouped.items()))


def _problem_response(status: int, kinds: list[ProblemKind]) -> dict[str, Any]:
    codes = "; ".join(f"`{k.code}`: {k.title}" for k in kinds)
    headers = {"X-Request-ID": REQUEST_ID_HEADER}
    if status == ServiceUnavailable.status:
        headers["Retry-After"] = RETRY_AFTER_HEADER
    return {
        "description": codes,
        "headers": headers,
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "schema": {"$ref": PROBLEM_REF},
                "examples": {k.code: {"summary": k.title, "value": k.example()} for k in kinds},
            }
        },
    }


class ContractJsonPlugin(JsonRenderPlugin):
    """Serves the completed document at `/schema/openapi.json`, built once per process."""

    def __init__(
        self, webhooks: Callable[[], tuple[dict[str, Any], dict[str, Any]]] | None = None
    ) -> None:
        super().__init__()
        self._rendered: bytes | None = None
        # Builds the `webhooks` section (the app passes it in: its schemas live above this
        # layer), once, with the rest of the document.
        self._webhooks = webhooks

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._rendered is None:
            handlers = [
                handler
                for route in request.app.routes
                for handler in getattr(route, "route_handlers", ())
                if isinstance(handler, HTTPRouteHandler)
            ]
            webhooks = None if self._webhooks is None else self._webhooks()
            document = complete_document(openapi_schema, handlers, webhooks)
            self._rendered = self.render_json(request, document)
        return self._rendered


def schema_not_found_as_problem(response: Response[Any]) -> Response[Any]:
    """`after_request` of the schema router: Litestar answers an unknown `/schema/...` path with
    an HTML page; the API answers every 404 as a problem."""
    if response.status_code == ROUTE_NOT_FOUND.status and response.media_type != PROBLEM_MEDIA_TYPE:
        body = ROUTE_NOT_FOUND.example()
        body["detail"] = "no schema document at this path"
        return problem_response(body)
    return response
