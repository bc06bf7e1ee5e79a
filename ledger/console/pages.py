"""The console's pages: thin handlers that read through the services the JSON API uses and
render a template. Every page shows the chain's state; every list is paged."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.response import Redirect, Stream, Template
from sqlalchemy.ext.asyncio import AsyncSession

from accounts import service as accounts
from ledger.audit import service as audit
from ledger.console import repository as repo
from ledger.console.auth import SignInRefused, Viewer, sign_in
from ledger.console.chain import ChainState, chain_state
from ledger.console.chart import balance_chart
from ledger.console.diff import decode
from ledger.console.export import audit_csv
from ledger.console.views import (
    SEARCH_FIELDS,
    blank_to_none,
    item_from_record,
    item_from_row,
    parse_cursor,
    parse_time,
    parse_uuid,
    query_string,
)
from ledger.core import limits
from ledger.core.errors import AccountNotFound, Forbidden, TransferNotFound, ValidationFailed
from ledger.http.state import services_of
from ledger.webhooks import service as webhooks
from transfers import repository as transfer_reads
from transfers import service as transfers

PAGE = limits.CONSOLE_PAGE_SIZE
Req = Request[Any, Any, Any]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    values: dict[str, str | None]

    @classmethod
    def of(cls, **values: str | None) -> SearchQuery:
        return cls({name: blank_to_none(values.get(name)) for name in SEARCH_FIELDS})

    def record_filter(self) -> Any:
        v = self.values
        return audit.record_filter(
            actor=v["actor"],
            object_id=v["object_id"],
            action=v["action"],
            request_id=v["request_id"],
            start=parse_time(v["from"], "from"),
            end=parse_time(v["to"], "to"),
        )


def search_query(
    object_id: str | None = None,
    actor: str | None = None,
    request_id: str | None = None,
    action: str | None = None,
    from_: str | None = Parameter(query="from", default=None),
    to: str | None = None,
) -> SearchQuery:
    """The audit search's filters from the query string: one dependency for the search page
    and its CSV export, which take the same ones."""
    return SearchQuery.of(
        object_id=object_id,
        actor=actor,
        request_id=request_id,
        action=action,
        to=to,
        **{"from": from_},
    )


SEARCH = {"search": Provide(search_query, sync_to_thread=False)}


def render(name: str, viewer: Viewer | None, chain: ChainState | None, **context: Any) -> Template:
    return Template(template_name=name, context={"viewer": viewer, "chain": chain, **context})


def require_audit(viewer: Viewer) -> None:
    if not viewer.can_audit:
        raise Forbidden(f"a {viewer.role} key may not read the audit trail")


async def reversal_of(session: AsyncSession, transfer_id: uuid.UUID) -> uuid.UUID | None:
    found = await transfer_reads.get_transfer(session, transfer_id)
    return None if found is None else found.reversal_of


class ConsolePages(Controller):
    path = "/"
    include_in_schema = False

    @get("/sign-in", name="console.sign_in_form")
    async def sign_in_form(self, reason: str | None = None) -> Template:
        message = {
            "key_revoked": "Your key was revoked or removed: sign in again.",
            "signed_out": None,
        }.get(reason or "")
        return render("sign_in.html", None, None, message=message)

    @post("/sign-in", name="console.sign_in", status_code=303)
    async def sign_in(self, request: Req) -> Template | Redirect:
        form = await request.form()
        secret = form.get("key")
        outcome = await sign_in(request, secret if isinstance(secret, str) else "")
        if isinstance(outcome, SignInRefused):
            page = render("sign_in.html", None, None, message=outcome.message)
            page.status_code = 401
            return page
        return Redirect("/console/audit" if outcome.can_audit else "/console", status_code=303)

    @post("/sign-out", name="console.sign_out", status_code=303)
    async def sign_out(self, request: Req, viewer: Viewer) -> Redirect:
        request.clear_session()
        return Redirect("/console/sign-in?reason=signed_out", status_code=303)

    @get("/", name="console.home")
    async def home(self, request: Req, viewer: Viewer, after: str | None = None) -> Template:
        after_id = parse_uuid(after) if after else None
        if after and after_id is None:
            raise ValidationFailed(
                "after: must be an account id from a page link",
                errors=[{"field": "after", "message": "must be an account id from a page link"}],
            )
        services = services_of(request)

        async def work(session: AsyncSession) -> tuple[ChainState, list[Any]]:
            found = await accounts.list_accounts(
                session, code=None, currency=None, status=None, after=after_id, limit=PAGE + 1
            )
            return await chain_state(session, services.settings), found

        chain, found = await services.read(work)
        next_after = str(found[PAGE - 1].id) if len(found) > PAGE else None
        return render("home.html", viewer, chain, accounts=found[:PAGE], next_after=next_after)

    @get("/find", name="console.find")
    async def find(self, request: Req, viewer: Viewer, q: str | None = None) -> Template | Redirect:
        """An account by id or code, or a transfer by id."""
        text = (q or "").strip()
        wanted = parse_uuid(text)
        services = services_of(request)

        async def work(session: AsyncSession) -> tuple[ChainState, str | None]:
            chain = await chain_state(session, services.settings)
            if wanted is not None:
                try:
                    await accounts.get_account(session, wanted)
                    return chain, f"/console/accounts/{wanted}"
                except AccountNotFound:
                    pass
                if await transfer_reads.get_transfer(session, wanted) is not None:
                    return chain, f"/console/transfers/{wanted}"
            elif text and len(text) <= limits.API_KEY_NAME_LENGTH_MAX:
                found = await accounts.list_accounts(
                    session, code=text, currency=None, status=None, after=None, limit=1
                )
                if found:
                    return chain, f"/console/accounts/{found[0].id}"
            return chain, None

        chain, target = await services.read(work)
        if target is not None:
            return Redirect(target, status_code=303)
        if "text/html" not in request.headers.get("accept", ""):
            raise AccountNotFound(f"no account or transfer matches {text!r}")
        page = render("home.html", viewer, chain, accounts=[], next_after=None, not_found=text)
        page.status_code = 404
        return page

    @get("/audit", name="console.audit", dependencies=SEARCH)
    async def audit_search(
        self, request: Req, viewer: Viewer, search: SearchQuery, after: str | None = None
    ) -> Template:
        require_audit(viewer)
        where = search.record_filter()
        after_seq = parse_cursor(after, "after")
        services = services_of(request)

        async def work(session: AsyncSession) -> tuple[ChainState, list[Any]]:
            found = await audit.list_records(session, where, after_seq=after_seq, limit=PAGE + 1)
            previous = await repo.previous_data_of(session, [r.seq for r in found[:PAGE]])
            items = [item_from_record(r, decode(previous.get(r.seq))) for r in found]
            return await chain_state(session, services.settings), items

        chain, items = await services.read(work)
        next_link = None
        if len(items) > PAGE:
            next_link = "/console/audit?" + query_string(search.values, after=items[PAGE - 1].seq)
        return render(
            "audit.html",
            viewer,
            chain,
            query=search.values,
            items=items[:PAGE],
            next_link=next_link,
            csv_link="/console/audit.csv?" + query_string(search.values),
            searched=any(search.values.values()) or after_seq is not None,
        )

    @get("/audit.csv", name="console.audit_csv", dependencies=SEARCH)
    async def audit_export(self, request: Req, viewer: Viewer, search: SearchQuery) -> Stream:
        require_audit(viewer)
        where = search.record_filter()
        return Stream(
            audit_csv(request, where),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
        )

    @get("/accounts/{account_id:str}", name="console.account")
    async def account(
        self,
        request: Req,
        viewer: Viewer,
        account_id: str,
        entries_after: str | None = None,
        audit_before: str | None = None,
    ) -> Template:
        wanted = parse_uuid(account_id)
        if wanted is None:
            raise AccountNotFound(f"no account has the id {account_id!r}")
        after_seq = parse_cursor(entries_after, "entries_after")
        before_seq = parse_cursor(audit_before, "audit_before")
        services = services_of(request)

        async def work(session: AsyncSession) -> dict[str, Any]:
            account = await accounts.get_account(session, wanted)
            entries = await accounts.list_entries(
                session, wanted, start=None, end=None, after_sequence=after_seq, limit=PAGE + 1
            )
            points = await repo.chart_entries(session, wanted, limits.CONSOLE_CHART_POINTS_MAX)
            records = None
            if viewer.can_audit:
                rows = await repo.account_records(
                    session, wanted, before_seq=before_seq, limit=PAGE + 1
                )
                records = [item_from_row(r) for r in rows]
            return {
                "chain": await chain_state(session, services.settings),
                "account": account,
                "entries": entries,
                "chart": balance_chart(points, account.currency),
                "records": records,
            }

        found = await services.read(work)
        entries, records = found.pop("entries"), found.pop("records")
        base = f"/console/accounts/{wanted}"
        return render(
            "account.html",
            viewer,
            found.pop("chain"),
            **found,
            entries=entries[:PAGE],
            entries_next=(
                f"{base}?entries_after={entries[PAGE - 1]['sequence']}"
                if len(entries) > PAGE
                else None
            ),
            records=None if records is None else records[:PAGE],
            records_next=(
                f"{base}?audit_before={records[PAGE - 1].seq}#audit"
                if records is not None and len(records) > PAGE
                else None
            ),
            chart_capped=limits.CONSOLE_CHART_POINTS_MAX,
        )

    @get("/webhooks", name="console.webhooks")
    async def webhooks(self, request: Req, viewer: Viewer, after: str | None = None) -> Template:
        """Webhook endpoints and their health, read only (admins: the endpoints are theirs)."""
        if not viewer.can_manage_webhooks:
            raise Forbidden(f"a {viewer.role} key may not see webhook endpoints")
        after_id = parse_uuid(after) if after else None
        if after and after_id is None:
            raise ValidationFailed(
                "after: must be an endpoint id from a page link",
                errors=[{"field": "after", "message": "must be an endpoint id from a page link"}],
            )
        services = services_of(request)

        async def work(session: AsyncSession) -> tuple[ChainState, list[Any]]:
            found = await webhooks.endpoints_with_health(session, after=after_id, limit=PAGE + 1)
            return await chain_state(session, services.settings), found

        chain, found = await services.run(work)
        next_after = str(found[PAGE - 1][0].id) if len(found) > PAGE else None
        return render(
            "webhooks.html",
            viewer,
            chain,
            endpoints=found[:PAGE],
            next_after=next_after,
            pending_cap=limits.WEBHOOK_PENDING_COUNT_MAX,
        )

    @get("/transfers/{transfer_id:str}", name="console.transfer")
    async def transfer(self, request: Req, viewer: Viewer, transfer_id: str) -> Template:
        wanted = parse_uuid(transfer_id)
        if wanted is None:
            raise TransferNotFound(f"no transfer has the id {transfer_id!r}")
        services = services_of(request)

        async def work(session: AsyncSession) -> dict[str, Any]:
            found = await transfers.get_transfer(session, wanted)
            history = None
            if viewer.can_audit:
                records = await audit.object_history(
                    session,
                    str(wanted),
                    reversal_of=reversal_of,
                    records_max=limits.CONSOLE_HISTORY_RECORDS_MAX,
                )
                history, state = [], None
                for record in records:
                    item = item_from_record(record, state, subject_id=str(wanted))
                    history.append(item)
                    if record.object_id == str(wanted):
                        state = record.data
            return {
                "chain": await chain_state(session, services.settings),
                "transfer": found,
                "history": history,
            }

        found = await services.read(work)
        return render("transfer.html", viewer, found.pop("chain"), **found)
