"""`ledger bench`: the load generator's options, handed to `ledger.bench` (a dev extra, imported
only when the command runs)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ledger.cli.common import _settings

# The load bench's defaults; `--growth` has its own (ledger/bench/growth/options.py).
ACCOUNTS_DEFAULT = 1000
CLIENTS_DEFAULT = 16


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from ledger.bench import BenchOptions, run_bench
    from ledger.core import limits

    if args.growth is not None:
        return _cmd_growth(args)
    settings = _settings(require_db=False)
    options = BenchOptions(
        url=args.url or f"http://{settings.host}:{settings.port}",
        key=args.key or settings.admin_key or "",
        accounts=ACCOUNTS_DEFAULT if args.accounts is None else args.accounts,
        clients=CLIENTS_DEFAULT if args.clients is None else args.clients,
        duration_s=args.duration,
        hot=args.hot,
        batch=args.batch or 0,
        seed=args.seed,
        idempotency=args.idempotency,
        currency=args.currency,
        baseline=args.baseline,
        database_url=args.database_url or settings.database_url,
        progress=sys.stderr.isatty(),
        check_sample=(
            limits.BENCH_CHECK_TRANSFERS_DEFAULT if args.check_sample is None else args.check_sample
        ),
        api_pids=tuple(args.api_pid or ()),
        worker_pids=tuple(args.worker_pid or ()),
        db_pids=tuple(args.db_pid or ()),
        webhooks=args.webhooks,
    )
    report, problems = run_bench(options)
    for line in problems:
        print(f"bench: {line}", file=sys.stderr)
    print(json.dumps(report), flush=True)
    return 0


def _cmd_growth(args: argparse.Namespace) -> int:
    import json

    from ledger.bench import require_bench_extra
    from ledger.bench.growth import GrowthOptions, parse_sizes, render, run_growth
    from ledger.bench.growth.options import GROWTH_ACCOUNTS_DEFAULT, GROWTH_CLIENTS_DEFAULT
    from ledger.core import limits

    require_bench_extra()
    settings = _settings(require_db=False)
    options = GrowthOptions(
        url=args.url or f"http://{settings.host}:{settings.port}",
        key=args.key or settings.admin_key or "",
        database_url=args.database_url or settings.database_url or "",
        sizes=parse_sizes(args.growth),
        accounts=GROWTH_ACCOUNTS_DEFAULT if args.accounts is None else args.accounts,
        clients=GROWTH_CLIENTS_DEFAULT if args.clients is None else args.clients,
        batch=args.batch or limits.BATCH_TRANSFERS_MAX,
        repeat=args.repeat,
        deep_page=args.deep_page,
        seed=args.seed or 0,
        currency=args.currency,
        progress=sys.stderr.isatty(),
    )
    report = run_growth(options)
    if not args.json:
        print(render(report), flush=True)
    print(json.dumps(report), flush=True)  # the last line, as the load bench's
    return 0


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="load generator: funded accounts, concurrent transfers")
    bench.add_argument("--url", default=None, help="the API (default http://LEDGER_HOST:PORT)")
    bench.add_argument("--key", default=None, help="operator key (default LEDGER_ADMIN_KEY)")
    bench.add_argument("--accounts", type=int, default=None, help="1000 (--growth: 2000)")
    bench.add_argument("--clients", type=int, default=None, help="16 (--growth: 4)")
    bench.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    bench.add_argument("--hot", action="store_true", help="every transfer pays one account")
    bench.add_argument("--batch", type=int, default=None, help="transfers per batch request")
    bench.add_argument(
        "--growth",
        default=None,
        metavar="SIZES",
        help="fill a fresh ledger to each size (transfers, e.g. 10000,100000,1000000) and time "
        "every read at each; needs --database-url",
    )
    bench.add_argument("--repeat", type=int, default=7, help="--growth: timed runs per read")
    bench.add_argument(
        "--deep-page", type=int, default=30, help="--growth: the metadata filter's deep page"
    )
    bench.add_argument("--json", action="store_true", help="--growth: only the JSON line, no table")
    bench.add_argument("--seed", type=int, default=None)
    bench.add_argument("--idempotency", action="store_true", help="Idempotency-Key per request")
    bench.add_argument("--currency", default="USD")
    bench.add_argument("--baseline", action="store_true", help="also run pgbench, print ratios")
    bench.add_argument("--database-url", default=None, help="default LEDGER_DATABASE_URL")
    bench.add_argument(
        "--check-sample", type=int, default=None, help="acknowledged transfers re-read (1000)"
    )
    bench.add_argument(
        "--webhooks",
        type=int,
        default=0,
        help="N loopback receivers subscribed to every event: report the webhook lag "
        "(an admin key; the service allows http and private addresses)",
    )
    for component in ("api", "worker", "db"):  # CPU per transfer, children included
        bench.add_argument(
            f"--{component}-pid",
            type=int,
            action="append",
            help=f"a pid of the {component} (repeatable): report its CPU per transfer",
        )
    bench.set_defaults(func=cmd_bench)
