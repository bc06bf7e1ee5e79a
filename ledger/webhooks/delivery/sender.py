"""One delivery attempt: the Standard Webhooks headers, the POST, and what came of it.

Signatures are made by `standardwebhooks`, the specification's reference library (the receivers'
own verifier, and the tests'): `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one per valid
secret, space-separated. The body is the envelope's stored bytes, sent and signed as they are.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from standardwebhooks.webhooks import Webhook

from ledger.core import limits

CONTENT_TYPE = "application/json"
USER_AGENT = "ledger-webhooks/1"


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    status_code: int | None
    error: str | None  # why it failed, short and free of secrets; None when delivered
    seconds: float


class Signer:
    """The endpoint's valid secrets, newest first; one signature per secret."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._webhooks = [Webhook(secret) for secret in secrets]

    def __len__(self) -> int:
        return len(self._webhooks)

    def headers(self, event_id: str, body: bytes, now: dt.datetime) -> dict[str, str]:
        signatures = " ".join(w.sign(event_id, now, body) for w in self._webhooks)
        return {
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures,
            "content-type": CONTENT_TYPE,
            "user-agent": USER_AGENT,
        }


async def attempt(
    transport: httpx.AsyncBaseTransport,
    url: str,
    *,
    event_id: str,
    body: bytes,
    signer: Signer,
    timeout_seconds: float = limits.WEBHOOK_ATTEMPT_TIMEOUT_SECONDS,
    response_bytes_max: int = limits.WEBHOOK_RESPONSE_BYTES_MAX,
) -> Outcome:
    """POST once. A 2xx status within `timeout_seconds` delivers; the response body is read
    within the same time and at most `response_bytes_max` of it (then the connection is
    dropped), whatever the receiver keeps sending."""
    started = time.monotonic()
    status: int | None = None
    request = httpx.Request(
        "POST",
        url,
        headers=signer.headers(event_id, body, dt.datetime.now(dt.UTC)),
        content=body,
        # httpx's own limits bound each phase (connect, each read and write); the whole
        # attempt is bounded below, since a drip satisfies every per-read limit.
        extensions={"timeout": httpx.Timeout(timeout_seconds).as_dict()},
    )
    try:
        async with asyncio.timeout(timeout_seconds):
            response = await transport.handle_async_request(request)
            try:
                status = response.status_code
                await _read_bounded(response, response_bytes_max)
            finally:
                await response.aclose()
    except TimeoutError:
        if status is not None:  # the status came in time; only the body was slow
            return _outcome(status, None, started)
        return Outcome(
            False, None, f"timeout: no answer within {timeout_seconds:g} s", _since(started)
        )
    except httpx.HTTPError as exc:
        if status is not None:
            return _outcome(status, None, started)
        detail = str(exc)[: limits.WEBHOOK_ERROR_LENGTH_MAX] or type(exc).__name__
        return Outcome(False, None, f"{type(exc).__name__}: {detail}", _since(started))
    return _outcome(status, None, started)


async def _read_bounded(response: httpx.Response, bytes_max: int) -> None:
    """Read at most `bytes_max` of the body; past that, stop (closing the stream drops the
    connection instead of reading on)."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= bytes_max:
            return


def _since(started: float) -> float:
    return time.monotonic() - started


def _outcome(status: int | None, error: str | None, started: float) -> Outcome:
    if status is not None and 200 <= status <= 299:
        return Outcome(True, status, None, _since(started))
    return Outcome(False, status, error or f"status {status}", _since(started))
