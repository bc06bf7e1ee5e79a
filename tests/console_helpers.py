"""Helpers the console tests share: a browser-like client (cookies over https, no bearer key)
and signing in through the real form with its CSRF token."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ledger.app import create_app
from ledger.core.settings import Settings

CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')


async def make_key(client: httpx.AsyncClient, role: str, name: str | None = None) -> dict[str, Any]:
    response = await client.post("/v1/api-keys", json={"name": name or f"{role}-key", "role": role})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@contextlib.asynccontextmanager
async def browser(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of its own app (another "process" on the same database), https so that its
    cookie jar keeps and sends Secure cookies, and no Authorization header."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://console.test") as web:
            yield web
    finally:
        await app.state.close()


def csrf_token(page: httpx.Response) -> str:
    found = CSRF_FIELD.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


async def sign_in(web: httpx.AsyncClient, secret: str) -> httpx.Response:
    form = await web.get("/console/sign-in")
    assert form.status_code == 200, form.text
    return await web.post("/console/sign-in", data={"key": secret, "_csrf_token": csrf_token(form)})
