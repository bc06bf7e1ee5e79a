"""The bench's HTTP side: one pooled httpx client, and a bounded fan-out for setup and checks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
import msgspec

from ledger.core import limits
from ledger.core.errors import BenchAborted

T = TypeVar("T")
R = TypeVar("R")

JSON_HEADERS = {"content-type": "application/json"}


def open_client(url: str, key: str, connections: int) -> httpx.AsyncClient:
    """One connection per client at most: a client has one request in flight at a time, so the
    pool never queues a request behind another client's."""
    # httpx logs every request at INFO: at thousands a second that is load on the client (which
    # shares the machine with the service) and noise on stderr, where progress goes.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return httpx.AsyncClient(
        base_url=url,
        headers={"authorization": f"Bearer {key}"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(limits.BENCH_REQUEST_TIMEOUT_SECONDS),
        trust_env=False,  # loopback benchmarks must not be routed through a proxy from the env
    )


def decode(response: httpx.Response) -> Any:
    """The JSON body, or None when there is none we can read (counted by the caller)."""
    try:
        return msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return None


async def post_setup(http: httpx.AsyncClient, path: str, body: Any, expect: int) -> Any:
    """A setup request: anything but the expected status means the bench cannot run."""
    try:
        response = await http.post(path, content=msgspec.json.encode(body), headers=JSON_HEADERS)
    except httpx.HTTPError as exc:
        raise BenchAborted(f"cannot reach the service at {http.base_url}: {exc!r}") from exc
    if response.status_code != expect:
        problem = decode(response)
        code = problem.get("code") if isinstance(problem, dict) else None
        raise BenchAborted(
            f"POST {path} answered {response.status_code} ({code or 'no problem code'}); "
            f"the key needs the operator or admin role"
        )
    return decode(response)


async def bounded_map(
    items: Sequence[T], work: Callable[[T], Awaitable[R]], concurrency: int
) -> list[R]:
    """`work` on every item with at most `concurrency` in flight; results in item order."""
    results: dict[int, R] = {}
    cursor = iter(range(len(items)))

    async def worker() -> None:
        for index in cursor:  # the shared iterator hands each index to exactly one worker
            results[index] = await work(items[index])

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))
    return [results[index] for index in range(len(items))]
