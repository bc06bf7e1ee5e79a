"""Idempotent POSTs: the Idempotency-Key claim of a request and its one write transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.context import Actor, WriteContext
from ledger.core.json_text import text_form
from ledger.http.auth import write_context
from ledger.http.state import services_of
from ledger.idempotency.store import (
    IdempotencyClaim,
    StoredResponse,
    check_key,
    fingerprint,
    run_idempotent,
)
from observability import metrics


def canonical(body: bytes) -> bytes:
    """The body's form (`text_form`): the same JSON, whitespace and member order aside, with
    every value spelled the same (`1.0` is not `1.00`), always fingerprints the same; any other
    text fingerprints otherwise, so its key is 422 `idempotency_key_reused`, never a replay."""
    return text_form(body)


def claim_of(request: Request[Any, Any, Any], body: bytes) -> IdempotencyClaim | None:
    """The request's Idempotency-Key, scoped to its principal, with the body's fingerprint."""
    key = request.headers.get("idempotency-key")
    actor: Actor = request.state.actor
    if key is None or actor.id is None:
        return None
    check_key(key)
    return IdempotencyClaim(
        principal_id=actor.id,
        key=key,
        fingerprint=fingerprint(request.method, request.url.path, canonical(body)),
    )


async def idempotent_post(
    request: Request[Any, Any, Any],
    effect: Callable[[AsyncSession, WriteContext], Awaitable[tuple[int, Any]]],
    *,
    redact: Callable[[Any], Any] | None = None,
) -> Response[bytes]:
    """Run one write in one transaction, honouring Idempotency-Key exactly as the contract says.

    `redact` gives the value to keep for replays when it must not hold everything sent now (an
    API key's secret is never stored in the clear, not even in the key row)."""
    services = services_of(request)
    claim = claim_of(request, await request.body())
    base_ctx = write_context(request)

    async def work(session: AsyncSession) -> StoredResponse:
        ctx = base_ctx.at_now()

        async def run_effect(s: AsyncSession) -> StoredResponse:
            status, value = await effect(s, ctx)
            kept = None if redact is None else msgspec.json.encode(redact(value))
            return StoredResponse(status, msgspec.json.encode(value), stored_body=kept)

        if claim is None:
            return await run_effect(session)
        return await run_idempotent(session, claim, now=ctx.now, effect=run_effect)

    return respond(await services.run(work))


def respond(stored: StoredResponse) -> Response[bytes]:
    """The HTTP answer of a write, first sent or replayed: the stored bytes, as they were."""
    headers = {}
    if stored.replayed:
        headers["Idempotent-Replayed"] = "true"
        metrics.IDEMPOTENT_REPLAYS.inc()
    return Response(
        content=stored.body,
        status_code=stored.status,
        media_type=stored.media_type,
        headers=headers,
    )
