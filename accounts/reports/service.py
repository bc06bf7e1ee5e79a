"""The trial balance: every account of one currency, its posted balance on its normal side.

By double entry the two sides are equal: total debit - total credit is the sum over all accounts
of (posted debits - posted credits), which every transfer leaves unchanged. A difference would be
a broken ledger; it is logged as an error and answered as found (`ledger verify` names the
account), never hidden."""

from __future__ import annotations

import datetime as dt

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.reports import repository as repo
from accounts.reports.schemas import TrialBalanceLine, TrialBalanceOut

log = structlog.get_logger("accounts.reports")


async def trial_balance(
    session: AsyncSession, currency: str, as_of: dt.datetime | None, now: dt.datetime
) -> TrialBalanceOut:
    rows = await repo.trial_balance_lines(session, currency, as_of)
    lines = [TrialBalanceLine(*row) for row in rows]
    total_debit = sum(line.debit for line in lines)
    total_credit = sum(line.credit for line in lines)
    if total_debit != total_credit:
        log.error(
            "report.trial_balance_unbalanced",
            currency=currency,
            total_debit=total_debit,
            total_credit=total_credit,
        )
    return TrialBalanceOut(
        as_of=as_of or now,
        currency=currency,
        accounts=lines,
        total_debit=total_debit,
        total_credit=total_credit,
    )
