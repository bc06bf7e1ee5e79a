"""`GET /v1/events`: the event feed for clients without Kafka.

Pages follow the feed position the relay gives each published event, one total order that
Kafka follows too; a walk from any cursor never skips or repeats an event. `next_cursor` is set
when the page is full (more may follow at once), null at the end, like every list. To wait for
new events, keep `resume_cursor`: it always continues after the last event returned.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.api.schemas import EventPage
from ledger.core import limits
from ledger.core.errors import EventsExpired, ValidationFailed
from ledger.http import params
from ledger.http.auth import requires
from ledger.http.bodies import get, typed
from ledger.http.pagination import Limit, SequenceCursor, decode_int_cursor, encode_cursor
from ledger.http.responses import json_response
from ledger.http.state import services_of
from outbox import service
from outbox.service import FeedPage

CURSOR_KIND = "event"


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]

    @get("/", guards=[requires("read")], operation_id="listEvents", problems=(EventsExpired,))
    async def list_events(
        self,
        request: Request[Any, Any, Any],
        after: SequenceCursor = None,
        # The synonym of `after` lists take (`?cursor=`): the document names one of the two,
        # since "both, saying different things" is no request a schema can describe.
        cursor: str | None = Parameter(default=None, include_in_schema=False),
        limit: Limit = limits.LIST_LIMIT_DEFAULT,
    ) -> Response[EventPage]:
        params.list_limit(limit)
        given = after if after is not None else cursor
        position = decode_int_cursor(CURSOR_KIND, given) or 0
        if (
            after is not None
            and cursor is not None
            and decode_int_cursor(CURSOR_KIND, cursor) != position
        ):
            raise ValidationFailed(
                "send the cursor as `after` or `cursor`, not two different ones",
                errors=[{"field": "cursor", "message": "conflicts with after"}],
            )

        async def work(session: AsyncSession) -> FeedPage:
            return await service.read_feed(session, after=position, limit=limit)

        page = await services_of(request).read(work)
        resume = (
            encode_cursor(CURSOR_KIND, str(page.last_position))
            if page.last_position is not None
            else given
        )
        full = len(page.envelopes) == limit
        body = {
            "data": page.envelopes,
            "next_cursor": resume if full else None,
            "resume_cursor": resume,
        }
        return typed(json_response(body), EventPage)
