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

import aiohttp
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
    session: aiohttp.ClientSession,
    url: str,
    *,
    event_id: str,
    body: bytes,
    signer: Signer,
    timeout_seconds: float = limits.WEBHOOK_ATTEMPT_TIMEOUT_SECONDS,
    response_bytes_max: int = limits.WEBHOOK_RESPONSE_BYTES_MAX,
) -> Outcome:
    """POST once, through a session of `transport.guarded_client`, following no redirect. A
    2xx status within `timeout_seconds` delivers; the response body is read within the same
    time and at most `response_bytes_max` of it (then the connection is dropped rather than
    kept), whatever the receiver keeps sending."""
    started = time.monotonic()
    status: int | None = None
    headers = signer.headers(event_id, body, dt.datetime.now(dt.UTC))
    try:
        # One limit for the whole attempt: a drip satisfies every per-read limit.
        async with asyncio.timeout(timeout_seconds):
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as r:
                status = r.status
                if not await _read_bounded(r, response_bytes_max):
                    r.close()  # more than the limit: drop the connection, do not read on
    except TimeoutError:
        if status is not None:  # the status came in time; only the body was slow
            return _outcome(status, None, started)
        return Outcome(
            False, None, f"timeout: no answer within {timeout_seconds:g} s", _since(started)
        )
    except (aiohttp.ClientError, OSError) as exc:
        if status is not None:
            return _outcome(status, None, started)
        return Outcome(False, None, _describe(exc), _since(started))
    return _outcome(status, None, started)


async def _read_bounded(response: aiohttp.ClientResponse, bytes_max: int) -> bool:
    """Read at most `bytes_max` of the body; True when the body ended within it."""
    read = 0
    while read < bytes_max:
        chunk = await response.content.read(bytes_max - read)
        if not chunk:
            return True
        read += len(chunk)
    return response.content.at_eof()


def _describe(exc: BaseException) -> str:
    """Why a request failed, short and free of secrets: the class and, for a connection that
    could not be made, the reason underneath (an address refused, a refused connect)."""
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    detail = str(cause) or type(cause).__name__
    return f"{type(exc).__name__}: {detail}"[: limits.WEBHOOK_ERROR_LENGTH_MAX]


def _since(started: float) -> float:
    return time.monotonic() - started


def _outcome(status: int | None, error: str | None, started: float) -> Outcome:
    if status is not None and 200 <= status <= 299:
        return Outcome(True, status, None, _since(started))
    return Outcome(False, status, error or f"status {status}", _since(started))
