"""The reads a user makes, each timed at every size, and the shape each answer must have.

Each read is one HTTP request, sent once as a warm-up and then `repeat` times in a row on one
keep-alive connection; its figures are the median and the 90th percentile (nearest rank) of
those, in milliseconds, client side (the request, the service and the answer's transfer).
The answer of every repetition is checked: the status, and a shape or a count that the
bench can predict from the database (a page as long as the rows that match, entries after
the date asked, a balanced trial balance, ...). A read whose answer is wrong is reported as a
problem, whatever its time.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ledger.bench.http import decode

PAGE = 100  # the lists' default page (`limit` left out, as most clients do)

Check = Callable[[httpx.Response], str | None]


@dataclass(frozen=True, slots=True)
class Read:
    """One request and what its answer must be (`check` names what is wrong, or None)."""

    name: str
    send: Callable[[], Awaitable[httpx.Response]]
    check: Check


@dataclass(slots=True)
class Timing:
    name: str
    median_ms: float  # the p50
    p90_ms: float
    p99_ms: float
    status: int
    problem: str | None


def _nearest_rank(samples: list[float], fraction: float) -> float:
    """The sample at that rank (nearest-rank percentile): with 7 runs, p90 and p99 are both the
    slowest run."""
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


async def time_read(read: Read, repeat: int) -> Timing:
    """Warm-up, then `repeat` timed requests; the first wrong answer is kept as the problem."""
    response = await read.send()
    problem = read.check(response)
    samples: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = await read.send()
        samples.append((time.perf_counter() - started) * 1000)
        problem = problem or read.check(response)
    return Timing(
        name=read.name,
        median_ms=round(statistics.median(samples), 2),
        p90_ms=round(_nearest_rank(samples, 0.9), 2),
        p99_ms=round(_nearest_rank(samples, 0.99), 2),
        status=response.status_code,
        problem=problem,
    )


def body_of(response: httpx.Response) -> Any:
    return decode(response) if response.headers.get("content-type", "").find("json") >= 0 else None


def page_of(response: httpx.Response) -> list[Any] | None:
    body = body_of(response)
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, list) else None


def expect_status(response: httpx.Response, status: int = 200) -> str | None:
    if response.status_code != status:
        return f"answered {response.status_code}, not {status}: {response.text[:200]}"
    return None


def expect_page(length: int, item: Callable[[Any], bool] = lambda _: True) -> Check:
    """A list page of exactly `length` items, each passing `item`."""

    def check(response: httpx.Response) -> str | None:
        wrong = expect_status(response)
        if wrong:
            return wrong
        data = page_of(response)
        if data is None:
            return "no data list in the answer"
        if len(data) != length:
            return f"{len(data)} items, expected {length}"
        if not all(isinstance(entry, dict) and item(entry) for entry in data):
            return "an item does not match what was asked"
        return None

    return check


def expect_body(test: Callable[[Any], bool], what: str) -> Check:
    def check(response: httpx.Response) -> str | None:
        wrong = expect_status(response)
        if wrong:
            return wrong
        return None if test(body_of(response)) else f"the answer is not {what}"

    return check


def expect_html(marker: str) -> Check:
    def check(response: httpx.Response) -> str | None:
        wrong = expect_status(response)
        if wrong:
            return wrong
        return None if marker in response.text else f"the page does not show {marker}"

    return check


def get(
    http: httpx.AsyncClient, path: str, **params: Any
) -> Callable[[], Awaitable[httpx.Response]]:
    query = {key: value for key, value in params.items() if value is not None}

    async def send() -> httpx.Response:
        return await http.get(path, params=query)

    return send
