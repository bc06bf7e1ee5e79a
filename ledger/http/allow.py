"""`OPTIONS` answers with every method of the route in `Allow`.

Litestar makes a route's OPTIONS handler when the route's first handlers are registered and
keeps it when more methods join the same path, so `OPTIONS /v1/accounts/{id}` said
`Allow: GET, OPTIONS` while the route also takes PATCH. This middleware writes `Allow` from the
route the request matched, as the app holds it once every handler is registered."""

from __future__ import annotations

from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

ALLOW = b"allow"


class RouteMethods:
    """The methods of each route template, read from the app's routes on first use."""

    def __init__(self) -> None:
        self._methods: dict[str, bytes] | None = None

    def of(self, scope: Scope) -> bytes | None:
        if self._methods is None:
            routes: Any = getattr(scope.get("app"), "routes", None) or []
            self._methods = {
                route.path_format: ", ".join(sorted(route.methods)).encode("latin-1")
                for route in routes
                if getattr(route, "methods", None)
            }
        template = scope.get("path_template")
        return self._methods.get(template) if isinstance(template, str) else None


def allow_every_method(app: ASGIApp) -> ASGIApp:
    routes = RouteMethods()

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("method") != "OPTIONS":
            await app(scope, receive, send)
            return

        async def send_with_allow(message: Message) -> None:
            methods = routes.of(scope)
            if message["type"] == "http.response.start" and methods is not None:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != ALLOW]
                message["headers"] = [*headers, (ALLOW, methods)]
            await send(message)

        await app(scope, receive, send_with_allow)

    return middleware
