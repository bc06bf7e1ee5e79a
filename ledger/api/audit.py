"""Thin HTTP layer for auditors: the trail, filtered and paged, and its verification."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit import leaf, service
from ledger.audit.keys import keyring_for
from ledger.audit.schemas import AuditPage, AuditRecordOut, AuditVerifyOut
from ledger.core.errors import AuditVerifyBusy
from ledger.http import params
from ledger.http.auth import requires
from ledger.http.bodies import get, typed
from ledger.http.pagination import Limit, SequenceCursor, decode_int_cursor, page
from ledger.http.responses import json_response
from ledger.http.state import Services, services_of


def _filter(length_max: int) -> Any:
    """A text filter as `service.record_filter` takes it: 1..length_max characters, no NUL;
    declared so that Litestar checks it and the OpenAPI document says it."""
    return Parameter(min_length=1, max_length=length_max, pattern=r"^[^\x00]*$")


# The process's verification gate, kept with the app's other per-process services.
VERIFY_GATE_KEY = "ledger.audit.verify_gate"


class AuditController(Controller):
    path = "/v1/audit"
    tags = ["audit"]
    guards = [requires("audit")]

    @get("/", operation_id="listAuditRecords")
    async def list_(
        self,
        request: Request[Any, Any, Any],
        actor: Annotated[str | None, _filter(service.ACTOR_NAME_LENGTH_MAX)] = None,
        object_id: Annotated[str | None, _filter(service.OBJECT_ID_LENGTH_MAX)] = None,
        action: Annotated[str | None, _filter(service.ACTION_LENGTH_MAX)] = None,
        from_: str | None = params.timestamp("from"),
        to: str | None = params.timestamp(),
        cursor: SequenceCursor = None,
        limit: Limit = 100,
    ) -> Response[AuditPage]:
        """Audit records oldest first; `actor` is an API key id or an actor name."""
        params.list_limit(limit)
        after = decode_int_cursor("audit", cursor)
        start = params.optional_utc(from_, "from")
        end = params.optional_utc(to, "to")
        where = service.record_filter(
            actor=actor, object_id=object_id, action=action, start=start, end=end
        )

        async def work(session: AsyncSession) -> list[tuple[AuditRecordOut, bytes]]:
            return await service.list_records_as_stored(
                session, where, after_seq=after, limit=limit
            )

        # AuditPage's shape, with each `data` sent as stored (never re-encoded from a parse).
        # The Merkle leaf of a sealed record is the RFC 8785 form of exactly this item.
        items = [leaf.item(record, data) for record, data in await services_of(request).read(work)]
        body = page(items, limit, lambda r: str(r["seq"]), "audit")
        return typed(json_response(body), AuditPage)

    @get("/verify", operation_id="verifyAuditTrail", problems=(AuditVerifyBusy,))
    async def verify(self, request: Request[Any, Any, Any]) -> Response[AuditVerifyOut]:
        """Recompute the hash chain, then the Merkle tree from the records against the stored
        tree and the checkpoint rows: `ok` false names the first problem (200 either way).
        One verification at a time per process: another is refused unstarted (503)."""
        services = services_of(request)
        keys = keyring_for(services.settings)

        async def work(session: AsyncSession) -> AuditVerifyOut:
            return await service.verify(session, keys)

        async with _verify_gate(services).place():
            report = await services.run(work)
        return typed(json_response(report), AuditVerifyOut)


def _verify_gate(services: Services) -> service.VerifyGate:
    gate = services.extensions.get(VERIFY_GATE_KEY)
    if not isinstance(gate, service.VerifyGate):
        gate = services.extensions[VERIFY_GATE_KEY] = service.VerifyGate()
    return gate
