"""What one `ledger bench --growth` run is asked to do, checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.bench.options import CURRENCY_PATTERN
from ledger.core import limits
from ledger.core.errors import ConfigurationError

GROWTH_ACCOUNTS_DEFAULT = 2_000
GROWTH_CLIENTS_DEFAULT = 4
GROWTH_REPEAT_DEFAULT = 7
GROWTH_REPEAT_MAX = 1_000
GROWTH_DEEP_PAGE_DEFAULT = 30
GROWTH_DEEP_PAGE_MAX = 1_000
GROWTH_SIZES_MAX = 20
# Of every 100 transfers, this many pay the one busy account (the rest move between customers).
BUSY_PERCENT = 5
# A read that takes more than this many times its time at the smallest size is flagged.
GROWTH_FLAG_RATIO = 2.0


def parse_sizes(text: str) -> tuple[int, ...]:
    """`10000,100000,1000000` (underscores allowed): growing, positive, at most 20 of them."""
    try:
        sizes = tuple(int(part.strip().replace("_", "")) for part in text.split(","))
    except ValueError as exc:
        raise ConfigurationError("--growth takes sizes like 10000,100000,1000000") from exc
    if not sizes or len(sizes) > GROWTH_SIZES_MAX:
        raise ConfigurationError(f"--growth takes 1..{GROWTH_SIZES_MAX} sizes")
    if any(size <= 0 for size in sizes) or list(sizes) != sorted(set(sizes)):
        raise ConfigurationError("--growth sizes must be positive and strictly increasing")
    return sizes


@dataclass(frozen=True, slots=True)
class GrowthOptions:
    """One growth run: where the service and its database are, the sizes (transfers in the
    ledger, funding included) and how the fill and the timings are done."""

    url: str
    key: str
    database_url: str
    sizes: tuple[int, ...]
    accounts: int = GROWTH_ACCOUNTS_DEFAULT
    clients: int = GROWTH_CLIENTS_DEFAULT
    batch: int = limits.BATCH_TRANSFERS_MAX
    repeat: int = GROWTH_REPEAT_DEFAULT
    deep_page: int = GROWTH_DEEP_PAGE_DEFAULT
    seed: int = 0
    currency: str = "USD"
    progress: bool = False

    def check(self) -> GrowthOptions:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError("--url must start with http:// or https://")
        if not self.key:
            raise ConfigurationError("--key (or LEDGER_ADMIN_KEY) is needed: an admin key")
        if not self.database_url:
            raise ConfigurationError(
                "--growth needs --database-url (or LEDGER_DATABASE_URL): it reads the "
                "database's size, its WAL position and the worker's lags"
            )
        if not (2 <= self.accounts <= limits.BENCH_ACCOUNTS_MAX):
            raise ConfigurationError(f"--accounts must be 2..{limits.BENCH_ACCOUNTS_MAX}")
        if not (1 <= self.clients <= limits.BENCH_CLIENTS_MAX):
            raise ConfigurationError(f"--clients must be 1..{limits.BENCH_CLIENTS_MAX}")
        if not (1 <= self.batch <= limits.BATCH_TRANSFERS_MAX):
            raise ConfigurationError(f"--batch must be 1..{limits.BATCH_TRANSFERS_MAX}")
        if not (1 <= self.repeat <= GROWTH_REPEAT_MAX):
            raise ConfigurationError(f"--repeat must be 1..{GROWTH_REPEAT_MAX}")
        if not (2 <= self.deep_page <= GROWTH_DEEP_PAGE_MAX):
            raise ConfigurationError(f"--deep-page must be 2..{GROWTH_DEEP_PAGE_MAX}")
        if not CURRENCY_PATTERN.match(self.currency):
            raise ConfigurationError("--currency must be 3..12 of A-Z and 0-9")
        if self.sizes[0] <= self.accounts:
            raise ConfigurationError(
                "the first --growth size must exceed --accounts: funding the accounts "
                "already makes one transfer each"
            )
        return self
