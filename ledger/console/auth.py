"""Who is looking: the console's sign-in, sign-out and the viewer of each page.

The session names an API key by id; every page looks that key up again (no cache), so a key
revoked by any process ends its console sessions on the next request."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from litestar import Request
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.console import repository as repo
from ledger.console.sessions import ROTATE_SESSION_ID, SESSION_COOKIE
from ledger.core import limits
from ledger.core.context import Actor
from ledger.core.roles import PERMISSIONS
from ledger.http.state import services_of

log = structlog.get_logger("ledger.console")

CONSOLE_ROLES = frozenset({"admin", "auditor", "reader"})
SESSION_KEY_ID = "key_id"
SECRET_LENGTH_MAX = 512  # far above any key we issue; longer input is refused unhashed


@dataclass(frozen=True, slots=True)
class Viewer:
    key_id: uuid.UUID
    name: str
    role: str

    @property
    def can_audit(self) -> bool:
        return self.role in PERMISSIONS["audit"]

    @property
    def can_manage_webhooks(self) -> bool:
        return self.role in PERMISSIONS["webhooks"]


class NotSignedIn(Exception):
    """No live session: the page sends the browser to the sign-in form."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _session_key_id(request: Request[Any, Any, Any]) -> uuid.UUID | None:
    session = request.scope.get("session")
    value = session.get(SESSION_KEY_ID) if isinstance(session, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def viewer_of(request: Request[Any, Any, Any]) -> Viewer:
    """The signed-in viewer (a route dependency), or NotSignedIn."""
    key_id = _session_key_id(request)
    if key_id is None:
        raise NotSignedIn("signed_out")

    session_id = request.cookies.get(SESSION_COOKIE)

    async def lookup(session: AsyncSession) -> Any:
        row = await repo.live_key(session, key_id)
        if (row is None or row.role not in CONSOLE_ROLES) and session_id:
            # The key is dead, so is this session (any other ends on its own next request).
            await repo.delete_session(session, session_id)
        return row

    row = await services_of(request).run(lookup)
    if row is None or row.role not in CONSOLE_ROLES:
        log.info("console.session_ended", key_id=str(key_id), reason="key_revoked")
        request.clear_session()
        raise NotSignedIn("key_revoked")
    structlog.contextvars.bind_contextvars(actor_id=str(row.id))
    return Viewer(key_id=row.id, name=row.name, role=row.role)


@dataclass(frozen=True, slots=True)
class SignInRefused:
    message: str


async def sign_in(request: Request[Any, Any, Any], secret: str) -> Viewer | SignInRefused:
    """Check the key and start a session naming it. The secret is hashed for the lookup and
    then dropped: it is never stored, logged or sent back."""
    secret = secret.strip()
    if not secret or len(secret) > SECRET_LENGTH_MAX:
        return SignInRefused("Enter an API key.")
    services = services_of(request)

    async def lookup(session: AsyncSession) -> Actor | None:
        # Bounded housekeeping where sessions are made: expired ones are deleted here.
        now = dt.datetime.now(dt.UTC)
        await repo.sweep_expired_sessions(session, now, limits.CONSOLE_SESSION_SWEEP_MAX)
        return await services.authenticate(session, secret)

    actor = await services.run(lookup)
    if actor is None or actor.id is None:
        log.info("console.sign_in_refused", reason="unknown_or_revoked")
        return SignInRefused("That API key is unknown or revoked.")
    if actor.role not in CONSOLE_ROLES:
        log.info("console.sign_in_refused", reason="role", key_id=str(actor.id))
        return SignInRefused(
            f"A key of role {actor.role} cannot use the console: use an auditor, reader or "
            "admin key."
        )
    request.set_session({SESSION_KEY_ID: str(actor.id)})
    request.scope["state"][ROTATE_SESSION_ID] = True
    log.info("console.signed_in", key_id=str(actor.id), role=actor.role)
    return Viewer(key_id=actor.id, name=actor.name, role=actor.role)
