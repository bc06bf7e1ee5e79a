"""How the app factory mounts the console: one router under /console with its own session and
CSRF middleware (the JSON API has neither), the templates, the static files and the store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware.base import DefineMiddleware
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.stores.base import Store
from litestar.template.config import TemplateConfig
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.console import repository as repo
from ledger.console.auth import NotSignedIn, viewer_of
from ledger.console.pages import ConsolePages
from ledger.console.security import (
    CONSOLE_PATH,
    SESSION_STORE,
    ConsoleCsrfMiddleware,
    CsrfSecret,
    add_security_headers,
    session_config,
)
from ledger.console.sessions import SESSION_COOKIE, DatabaseSessionStore
from ledger.core import limits
from ledger.core.errors import InvariantViolation, LedgerError
from ledger.http.bodies import handle_body_exception
from ledger.http.problems import HTTP_CODES, handle_ledger_error
from ledger.http.state import Services

HERE = Path(__file__).parent


@dataclass(frozen=True, slots=True)
class Console:
    routers: list[Router]
    template_config: TemplateConfig[JinjaTemplateEngine]
    stores: dict[str, Store]


def _to_sign_in(_: Request[Any, Any, Any], exc: NotSignedIn) -> Response[Any]:
    response: Response[Any] = Redirect(
        f"{CONSOLE_PATH}/sign-in?reason={exc.reason}", status_code=303
    )
    if exc.reason == "key_revoked":
        response.delete_cookie(SESSION_COOKIE, path=CONSOLE_PATH)
    return add_security_headers(response)


def _wants_html(request: Request[Any, Any, Any]) -> bool:
    """Browsers ask for text/html and get a page; any other client gets the API's problem."""
    return "text/html" in request.headers.get("accept", "")


def _error_page(request: Request[Any, Any, Any], exc: LedgerError) -> Response[Any]:
    if not _wants_html(request):
        return add_security_headers(handle_ledger_error(request, exc))
    context: dict[str, Any] = {
        "viewer": None,
        "chain": None,
        "status": exc.status,
        "code": exc.code,
        "title": exc.title,
        "detail": exc.detail,
        "errors": exc.extra.get("errors") or [],
    }
    page = Template(template_name="error.html", context=context, status_code=exc.status)
    if exc.status == 503:
        page.headers["Retry-After"] = str(limits.RETRY_AFTER_SECONDS)
    return add_security_headers(page)


def _http_error_page(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if not _wants_html(request):
        return add_security_headers(handle_body_exception(request, exc))
    status = exc.status_code if 400 <= exc.status_code < 600 else 500
    context: dict[str, Any] = {
        "viewer": None,
        "chain": None,
        "status": status,
        "code": HTTP_CODES.get(status, "http_error"),
        "title": exc.detail,
        "detail": exc.detail,
        "errors": [],
    }
    return add_security_headers(
        Template(template_name="error.html", context=context, status_code=status)
    )


def console(services: Services) -> Console:
    store = DatabaseSessionStore(services.run)  # type: ignore[arg-type]

    async def load_secret() -> str:
        async def work(session: AsyncSession) -> str | None:
            return await repo.csrf_secret(session)

        secret = await services.run(work)
        if secret is None:
            raise InvariantViolation("console_secret is empty: run `ledger db upgrade`")
        return secret

    pages = Router(
        path=CONSOLE_PATH,
        route_handlers=[ConsolePages],
        dependencies={"viewer": Provide(viewer_of)},
        middleware=[
            DefineMiddleware(ConsoleCsrfMiddleware, secret=CsrfSecret(load_secret)),
            session_config().middleware,
        ],
        exception_handlers={
            NotSignedIn: _to_sign_in,
            LedgerError: _error_page,
            HTTPException: _http_error_page,
        },
        after_request=add_security_headers,
        include_in_schema=False,
    )
    static = create_static_files_router(
        path=f"{CONSOLE_PATH}/static",
        directories=[HERE / "static"],
        name="console.static",
        after_request=add_security_headers,
        include_in_schema=False,
    )
    templates = TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)
    return Console(
        routers=[pages, static], template_config=templates, stores={SESSION_STORE: store}
    )
