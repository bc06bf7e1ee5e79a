"""What one `ledger bench` run is asked to do, checked against the bounds before anything runs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.core import limits, schemas
from ledger.core.errors import ConfigurationError

CURRENCY_PATTERN = re.compile(schemas.CURRENCY_PATTERN)  # the API's own rule for currencies


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """One run: where the service is, how much load, which shape, and whether to compare.

    `batch` is 0 for one transfer per request, else the transfers per `/v1/transfers/batch`.
    """

    url: str
    key: str
    accounts: int
    clients: int
    duration_s: float
    hot: bool = False
    batch: int = 0
    seed: int | None = None
    idempotency: bool = False
    currency: str = "USD"
    baseline: bool = False
    database_url: str | None = None
    progress: bool = False
    check_sample: int = limits.BENCH_CHECK_TRANSFERS_DEFAULT
    # Processes whose CPU the run reports per transfer (their children included), see cpu.py.
    api_pids: tuple[int, ...] = ()
    worker_pids: tuple[int, ...] = ()
    db_pids: tuple[int, ...] = ()
    # Loopback webhook receivers, each an endpoint of every event (ledger/bench/webhooks.py).
    webhooks: int = 0

    @property
    def mode(self) -> str:
        shape = "hot" if self.hot else "uniform"
        return f"{shape}+batch" if self.batch else shape

    def check(self) -> BenchOptions:
        """Refuse what cannot run, before a single account is created."""
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError("--url must start with http:// or https://")
        if not self.key:
            raise ConfigurationError("--key (or LEDGER_ADMIN_KEY) is needed: an operator key")
        least = 1 if self.hot else 2  # uniform transfers need two distinct accounts
        if not (least <= self.accounts <= limits.BENCH_ACCOUNTS_MAX):
            raise ConfigurationError(f"--accounts must be {least}..{limits.BENCH_ACCOUNTS_MAX}")
        if not (1 <= self.clients <= limits.BENCH_CLIENTS_MAX):
            raise ConfigurationError(f"--clients must be 1..{limits.BENCH_CLIENTS_MAX}")
        if not (0 < self.duration_s <= limits.BENCH_DURATION_SECONDS_MAX):
            raise ConfigurationError(
                f"--duration must be above 0 and at most {limits.BENCH_DURATION_SECONDS_MAX}"
            )
        if self.batch and not (1 <= self.batch <= limits.BATCH_TRANSFERS_MAX):
            raise ConfigurationError(f"--batch must be 1..{limits.BATCH_TRANSFERS_MAX}")
        if not (0 <= self.check_sample <= limits.BENCH_CHECK_TRANSFERS_MAX):
            raise ConfigurationError(
                f"--check-sample must be 0..{limits.BENCH_CHECK_TRANSFERS_MAX}"
            )
        if not CURRENCY_PATTERN.match(self.currency):
            raise ConfigurationError("--currency must be 3..12 of A-Z and 0-9")
        if any(pid <= 0 for pid in (*self.api_pids, *self.worker_pids, *self.db_pids)):
            raise ConfigurationError("--api-pid, --worker-pid and --db-pid must be positive")
        if not (0 <= self.webhooks <= limits.WEBHOOK_ENDPOINTS_MAX):
            raise ConfigurationError(f"--webhooks must be 0..{limits.WEBHOOK_ENDPOINTS_MAX}")
        if self.baseline and not self.database_url:
            raise ConfigurationError(
                "--baseline needs --database-url (or LEDGER_DATABASE_URL) to measure PostgreSQL"
            )
        return self
