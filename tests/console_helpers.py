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


# WCAG 2 contrast of every piece of text against the first opaque background behind it.
CONTRAST_SCRIPT = """() => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    const text = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!text || !el.getClientRects().length) continue;
    const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const what = el.textContent.trim().slice(0, 40);
    if (ratio < 4.5) low.push(el.tagName + " " + ratio.toFixed(2) + " " + what);
  }
  return low;
}"""
