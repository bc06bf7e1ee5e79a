"""`GET /v1/reports/trial-balance?currency=&as_of=&format=json|csv` (the `read` permission:
admin, operator, reader, auditor)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from typing import Any, Literal

from litestar import Controller, Request, Response
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.reports import service
from accounts.reports.schemas import TrialBalanceOut
from ledger.core.errors import ValidationFailed
from ledger.core.schemas import CURRENCY_PATTERN
from ledger.http import params
from ledger.http.auth import requires
from ledger.http.bodies import LedgerOperation, get, typed
from ledger.http.responses import json_response
from ledger.http.state import services_of

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
CSV_HEADER = ("account_id", "code", "normal_balance", "debit", "credit")
# The totals line: its `normal_balance` cell says `total`, which no account's can.
CSV_TOTAL = "total"
_CURRENCY = re.compile(CURRENCY_PATTERN)


def trial_balance_csv(report: TrialBalanceOut) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for line in report.accounts:
        writer.writerow((line.account_id, line.code, line.normal_balance, line.debit, line.credit))
    writer.writerow(("", "", CSV_TOTAL, report.total_debit, report.total_credit))
    return out.getvalue().encode()


@dataclass
class TrialBalanceOperation(LedgerOperation):
    """The 200 answer is JSON or, with `format=csv`, CSV: both are documented."""

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.content = {
                **(ok.content or {}),
                "text/csv": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.STRING,
                        description=(
                            "`format=csv`: the header account_id,code,normal_balance,debit,credit, "
                            "one line per account, then `,,total,<total_debit>,<total_credit>`."
                        ),
                    )
                ),
            }


class ReportController(Controller):
    path = "/v1/reports"
    tags = ["reports"]

    @get(
        "/trial-balance",
        guards=[requires("read")],
        operation_id="getTrialBalance",
        operation_class=TrialBalanceOperation,
    )
    async def trial_balance(
        self,
        request: Request[Any, Any, Any],
        currency: str | None = Parameter(
            default=None, required=True, pattern=CURRENCY_PATTERN, description="one currency"
        ),
        as_of: str | None = params.timestamp(),
        format_: Literal["json", "csv"] = Parameter(query="format", default="json"),
    ) -> Response[TrialBalanceOut]:
        """Every account of the currency with its posted balance on its normal side; the totals
        of both sides are equal. `format=csv`: the same lines as CSV, then a `total` line."""
        if currency is None or _CURRENCY.fullmatch(currency) is None:
            raise ValidationFailed(
                "currency is required: 3..12 of A-Z and 0-9",
                errors=[{"field": "currency", "message": "required, [A-Z0-9]{3,12}"}],
            )
        when = params.optional_utc(as_of, "as_of")
        now = dt.datetime.now(dt.UTC)

        async def work(session: AsyncSession) -> TrialBalanceOut:
            return await service.trial_balance(session, currency, when, now)

        report = await services_of(request).read(work)
        if format_ == "csv":
            body = Response(content=trial_balance_csv(report), media_type=CSV_MEDIA_TYPE)
            return typed(body, TrialBalanceOut)
        return typed(json_response(report), TrialBalanceOut)
