"""After the load: was money conserved, and is every acknowledged transfer stored?

Read back through the public API only, so the check holds against any deployment:
- conservation: the source still shows the funded total and this run's customer (and merchant)
  accounts together still hold exactly that, with nothing left pending;
- exact balances: when no request had an unknown outcome, each account's posted balance equals
  its funding plus the acknowledged transfers that touched it (a lost or doubled transfer moves
  at least one account off its model);
- stored: a uniform sample of the acknowledged ids (bounded) is read with GET and must come back
  posted, with the accounts and amount that were sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from ledger.bench.http import bounded_map, decode
from ledger.bench.load import Acked, Tally
from ledger.bench.setup import BenchLedger
from ledger.core import limits

PROBLEMS_SHOWN_MAX = 20


@dataclass
class CheckResult:
    conserved: bool = True
    stored: bool = True
    balances_exact: bool | None = None  # None: some outcomes were unknown, not comparable
    checked_transfers: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.conserved and self.stored and self.balances_exact is not False

    def problem(self, line: str) -> None:
        if len(self.problems) < PROBLEMS_SHOWN_MAX:
            self.problems.append(line)


async def check_run(http: httpx.AsyncClient, ledger: BenchLedger, tally: Tally) -> CheckResult:
    result = CheckResult()
    concurrency = limits.BENCH_SETUP_CONCURRENCY_MAX
    ids = [ledger.source_id, *ledger.account_ids]
    accounts = await bounded_map(ids, lambda i: _get(http, f"/v1/accounts/{i}"), concurrency)
    _check_balances(result, ledger, tally, accounts[0], accounts[1:])
    stored = await bounded_map(
        tally.sample, lambda a: _get(http, f"/v1/transfers/{a.transfer_id}"), concurrency
    )
    for acked, found in zip(tally.sample, stored, strict=True):
        _check_stored(result, ledger, acked, found)
    result.checked_transfers = len(tally.sample)
    return result


async def _get(http: httpx.AsyncClient, path: str) -> tuple[int, Any]:
    try:
        response = await http.get(path)
    except httpx.HTTPError as exc:
        return 0, repr(exc)
    return response.status_code, decode(response)


def _posted(found: tuple[int, Any]) -> tuple[int, int] | None:
    """(posted, pending debits + credits) of a fetched account, or None if it was not read."""
    status, body = found
    if status != 200 or not isinstance(body, dict):
        return None
    balances: Any = body.get("balances")
    try:
        pending = int(balances["pending_debits"]) + int(balances["pending_credits"])
        return int(balances["posted"]), pending
    except (KeyError, TypeError, ValueError):
        return None


def _check_balances(
    result: CheckResult,
    ledger: BenchLedger,
    tally: Tally,
    source: tuple[int, Any],
    accounts: list[tuple[int, Any]],
) -> None:
    read = _posted(source)
    if read is None or read != (ledger.funded_total, 0):
        result.conserved = False
        result.problem(f"source account {ledger.source_id}: {read} != ({ledger.funded_total}, 0)")
    total, exact = 0, tally.ambiguous == 0
    for index, found in enumerate(accounts):
        account_id = ledger.account_ids[index]
        read = _posted(found)
        if read is None:
            result.conserved = False
            result.problem(f"account {account_id} could not be read: {found[0]}")
            continue
        posted, pending = read
        total += posted
        if pending:
            result.conserved = False
            result.problem(f"account {account_id} has {pending} pending, the bench holds none")
        expected = ledger.expected_start(index) + tally.deltas[index]
        if exact and posted != expected:
            result.balances_exact = False
            result.problem(f"account {account_id}: posted {posted}, acknowledged model {expected}")
    if total != ledger.funded_total:
        result.conserved = False
        result.problem(f"accounts hold {total} together, {ledger.funded_total} was funded")
    if exact and result.balances_exact is None:
        result.balances_exact = True


def _check_stored(
    result: CheckResult, ledger: BenchLedger, acked: Acked, found: tuple[int, Any]
) -> None:
    status, body = found
    ids = ledger.account_ids
    want = {
        "state": "posted",
        "debit_account_id": ids[acked.draw.debit],
        "credit_account_id": ids[acked.draw.credit],
        "amount": acked.draw.amount,
        "posted_amount": acked.draw.amount,
    }
    if status != 200 or not isinstance(body, dict):
        result.stored = False
        result.problem(f"acknowledged transfer {acked.transfer_id}: GET answered {status}")
        return
    got = {key: body.get(key) for key in want}
    if got != want:
        result.stored = False
        result.problem(f"acknowledged transfer {acked.transfer_id}: stored {got}, sent {want}")
