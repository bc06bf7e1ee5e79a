"""Capped, jittered exponential backoff for loops that keep running between their own attempts
(the outbox relay, the consumer kit).

`run_in_transaction` retries through tenacity, which drives its attempts itself. These loops are
not tenacity retries (the relay goes on serving LISTEN and polls while it waits; the consumer
waits on its stop event), and tenacity's waits read a RetryCallState, so one small function
serves them instead."""

from __future__ import annotations

import random

# 2**16 times any initial delay is far past every cap: the exponent stops growing there, so a
# long outage never builds a huge integer.
EXPONENT_MAX = 16


def jittered_backoff_ms(failures: int, *, initial_ms: int, max_ms: int) -> float:
    """The wait after `failures` consecutive failures (1 for the first): initial_ms doubled per
    failure and capped at max_ms, then drawn from its upper half ("equal jitter"), so processes
    that failed together (a relay and its standbys, a group's members) do not retry in step."""
    delay_ms = min(max_ms, initial_ms * 2 ** min(failures - 1, EXPONENT_MAX))
    return random.uniform(delay_ms / 2, delay_ms)
