"""Before the load: the bench's own accounts, funded from one source, all through the public API.

Every run makes fresh accounts (codes carry a random run id), so runs never collide and the
checks afterwards need to look at nothing but this run's accounts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx

from ledger.bench.http import bounded_map, post_setup
from ledger.bench.options import BenchOptions
from ledger.core import limits
from ledger.core.errors import BenchAborted

# Generous funding: at most TRANSFER_AMOUNT_MAX per transfer, a customer account can pay a
# million transfers before it could run dry, so insufficient_funds stays rare even with --hot.
FUNDING_PER_ACCOUNT = 1_000_000_000
TRANSFER_AMOUNT_MAX = 1_000


@dataclass(frozen=True, slots=True)
class BenchLedger:
    """The accounts of one run. Indexes 0..customers-1 are the funded customer accounts; with
    --hot, index `customers` is the merchant account everyone pays."""

    run_id: str
    currency: str
    source_id: str
    account_ids: list[str]
    customers: int
    hot_index: int | None

    @property
    def funded_total(self) -> int:
        return FUNDING_PER_ACCOUNT * self.customers

    def expected_start(self, index: int) -> int:
        """The posted balance an account had when the load began."""
        return FUNDING_PER_ACCOUNT if index < self.customers else 0


async def prepare_ledger(http: httpx.AsyncClient, options: BenchOptions) -> BenchLedger:
    """Create the source, the customers (and the hot merchant), then fund every customer."""
    run_id = uuid.uuid4().hex[:12]  # not from --seed: a rerun must not collide on account codes
    source = await _create_account(http, options, f"bench.{run_id}.source", "debit", None)
    codes = [f"bench.{run_id}.{index}" for index in range(options.accounts)]
    if options.hot:
        codes.append(f"bench.{run_id}.hot")

    async def create(code: str) -> str:
        return await _create_account(http, options, code, "credit", 0)

    concurrency = min(options.clients, limits.BENCH_SETUP_CONCURRENCY_MAX)
    account_ids = await bounded_map(codes, create, concurrency)
    ledger = BenchLedger(
        run_id=run_id,
        currency=options.currency,
        source_id=source,
        account_ids=account_ids,
        customers=options.accounts,
        hot_index=options.accounts if options.hot else None,
    )
    await _fund(http, ledger)
    return ledger


async def _create_account(
    http: httpx.AsyncClient,
    options: BenchOptions,
    code: str,
    normal_balance: str,
    min_balance: int | None,
) -> str:
    body = {
        "code": code,
        "currency": options.currency,
        "normal_balance": normal_balance,
        "min_balance": min_balance,
        "metadata": {"bench": True},
    }
    account = await post_setup(http, "/v1/accounts", body, expect=201)
    if not isinstance(account, dict) or not isinstance(account.get("id"), str):
        raise BenchAborted("POST /v1/accounts answered 201 without an account id")
    account_id: str = account["id"]
    return account_id


async def _fund(http: httpx.AsyncClient, ledger: BenchLedger) -> None:
    """Atomic batches from the source: either a chunk is fully funded or the bench stops."""
    step = limits.BATCH_TRANSFERS_MAX
    for start in range(0, ledger.customers, step):
        chunk = ledger.account_ids[start : min(start + step, ledger.customers)]
        body = {
            "atomic": True,
            "transfers": [
                {
                    "debit_account_id": ledger.source_id,
                    "credit_account_id": account_id,
                    "amount": FUNDING_PER_ACCOUNT,
                    "reference": "bench funding",
                }
                for account_id in chunk
            ],
        }
        result = await post_setup(http, "/v1/transfers/batch", body, expect=200)
        items = result.get("results") if isinstance(result, dict) else None
        if not isinstance(items, list) or any(item.get("status") != 201 for item in items):
            raise BenchAborted("funding the bench accounts failed: the batch was not all 201")
