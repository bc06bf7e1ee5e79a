"""The console's session cookie, CSRF protection and response headers.

Both are scoped to the /console router: the JSON API under /v1 keeps bearer keys, no cookie and
no CSRF token. Cookies are Secure, HttpOnly and SameSite=Strict, with path /console; browsers
accept Secure cookies over plain http on localhost and 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar import Response
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.middleware.csrf import CSRFMiddleware
from litestar.middleware.session.server_side import (
    ServerSideSessionBackend,
    ServerSideSessionConfig,
)
from litestar.types import ASGIApp, Empty, Message, Receive, Scope, ScopeSession, Send
from litestar.utils.dataclass import extract_dataclass_items

from ledger.console.sessions import ROTATE_SESSION_ID, SESSION_COOKIE
from ledger.core import limits

CONSOLE_PATH = "/console"
SESSION_STORE = "ledger_console_sessions"
CSRF_COOKIE = "ledger_console_csrf"

# No script, style, image or form target but the service's own; no framing; no referrer leaves.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class ConsoleSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side backend, with two changes: a visitor who is not signed in gets no
    session row and no cookie, and a sign-in stores its session under a fresh id."""

    async def store_in_message(
        self,
        scope_session: ScopeSession,
        message: Message,
        connection: ASGIConnection[Any, Any, Any, Any],
    ) -> None:
        store = self.config.get_store_from_app(connection.scope["app"])
        brought = connection.cookies.get(self.config.key)
        state: dict[str, Any] = connection.scope.get("state", {})  # type: ignore[assignment]
        signed_out = scope_session is Empty or not scope_session  # cleared, or never set
        if signed_out or (state.get(ROTATE_SESSION_ID) and brought):
            if brought:
                await self.delete(brought, store=store)
                if signed_out:
                    self._set_cookie(message, "null", expires=0)
            if signed_out:
                return
        session_id = self.generate_session_id() if state.get(ROTATE_SESSION_ID) else None
        session_id = session_id or brought or self.generate_session_id()
        await self.set(session_id, self.serialize_data(scope_session, connection.scope), store)
        self._set_cookie(message, session_id)

    def _set_cookie(self, message: Message, value: str, expires: int | None = None) -> None:
        params = dict(
            extract_dataclass_items(self.config, exclude_none=True, include=Cookie.__dict__.keys())
        )
        if expires is not None:
            params["expires"] = expires
        cookie = Cookie(value=value, key=self.config.key, **params)
        MutableScopeHeaders.from_message(message).add("Set-Cookie", cookie.to_header(header=""))


class ConsoleSessionConfig(ServerSideSessionConfig):
    _backend_class = ConsoleSessionBackend


def session_config() -> ConsoleSessionConfig:
    return ConsoleSessionConfig(
        key=SESSION_COOKIE,
        store=SESSION_STORE,
        max_age=limits.CONSOLE_SESSION_SECONDS,
        # Each response stores the session again with a fresh expiry: no renewal on read too.
        renew_on_access=False,
        path=CONSOLE_PATH,
        secure=True,
        httponly=True,
        samesite="strict",
    )


@dataclass
class CsrfSecret:
    """The CSRF secret, read once per process from the database (`console_secret`), so that
    every process signs and checks tokens alike."""

    load: Callable[[], Awaitable[str]]
    value: str | None = None
    _lock: asyncio.Lock | None = None

    async def get(self) -> str:
        if self.value is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self.value is None:
                    self.value = await self.load()
        return self.value


class ConsoleCsrfMiddleware:
    """Litestar's CSRF middleware, built on the first request, once the secret is known."""

    def __init__(self, app: ASGIApp, secret: CsrfSecret) -> None:
        self.app = app
        self.secret = secret
        self.inner: CSRFMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.inner is None:
            config = CSRFConfig(
                secret=await self.secret.get(),
                cookie_name=CSRF_COOKIE,
                cookie_path=CONSOLE_PATH,
                cookie_secure=True,
                cookie_httponly=True,
                cookie_samesite="strict",
            )
            self.inner = CSRFMiddleware(self.app, config)
        await self.inner(scope, receive, send)


def add_security_headers(response: Response[Any]) -> Response[Any]:
    """The router's after-request hook: every console response carries these."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response
