"""`ledger verify`'s wall time on the ledger of each size, and of its incremental mode.

Run as a separate `ledger verify` process (the command an operator runs, start-up included)
against the bench's database URL. `--since-last` is used when the installed command offers it
(read from its `--help`), just before the full run: it then covers what changed since the
previous size's incremental run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass

VERIFY_TIMEOUT_SECONDS = 3_600.0
SINCE_LAST = "--since-last"


@dataclass(frozen=True, slots=True)
class VerifyRun:
    seconds: float
    exit_code: int
    output: str


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ledger.cli", "verify", *args]


async def _run(database_url: str, *args: str) -> VerifyRun:
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url}
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *_command(*args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), VERIFY_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        return VerifyRun(time.perf_counter() - started, -1, "timed out")
    seconds = time.perf_counter() - started
    return VerifyRun(
        round(seconds, 2), process.returncode or 0, out.decode(errors="replace")[-500:]
    )


async def has_since_last() -> bool:
    process = await asyncio.create_subprocess_exec(
        *_command("--help"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await process.communicate()
    return SINCE_LAST in out.decode(errors="replace")


async def verify(database_url: str, incremental: bool) -> dict[str, float | int | str | None]:
    """The incremental run first (it covers what changed since the previous size's), then the
    full one."""
    since = await _run(database_url, SINCE_LAST) if incremental else None
    full = await _run(database_url)
    report: dict[str, float | int | str | None] = {
        "verify_s": full.seconds,
        "verify_exit": full.exit_code,
        "verify_since_last_s": None,
        "verify_since_last_exit": None,
    }
    if full.exit_code != 0:
        report["verify_output"] = full.output
    if since is not None:
        report["verify_since_last_s"] = since.seconds
        report["verify_since_last_exit"] = since.exit_code
        if since.exit_code != 0:
            report["verify_since_last_output"] = since.output
    return report
