"""Small helpers the HTTP tests share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn

from ledger.app import create_app
from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction
from ledger.core.settings import Settings
from ledger.embedded import LOOPBACK, free_port
from ledger.posting.invariants import find_violations

# `serve` and `worker` refuse to start without a checkpoint signing key: the session makes one
# (tests/conftest.py) and every subprocess environment built here carries it.
AUDIT_KEY_ENV = "LEDGER_AUDIT_SIGNING_KEY"


def inherited_env(drop: tuple[str, ...] = ("LEDGER_",)) -> dict[str, str]:
    """This process's environment without variables starting with `drop` (a test sets the
    LEDGER_ ones it means), but with the session's audit signing key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    if AUDIT_KEY_ENV in os.environ:
        env[AUDIT_KEY_ENV] = os.environ[AUDIT_KEY_ENV]
    return env


async def create_account(
    client: httpx.AsyncClient,
    *,
    normal_balance: str = "credit",
    currency: str = "USD",
    min_balance: int | str | None = "default",
    code: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code or f"acct:{uuid.uuid4().hex[:12]}",
        "currency": currency,
        "normal_balance": normal_balance,
        **extra,
    }
    if min_balance != "default":
        body["min_balance"] = min_balance
    response = await client.post("/v1/accounts", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def transfer(
    client: httpx.AsyncClient, debit: str, credit: str, amount: int, **extra: Any
) -> Any:
    return await client.post(
        "/v1/transfers",
        json={"debit_account_id": debit, "credit_account_id": credit, "amount": amount, **extra},
    )


async def funded_pair(
    client: httpx.AsyncClient, amount: int, currency: str = "USD"
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A debit-normal source with no floor, and two credit-normal customer accounts, the first
    funded with `amount`."""
    source = await create_account(
        client, normal_balance="debit", currency=currency, min_balance=None
    )
    a = await create_account(client, currency=currency)
    b = await create_account(client, currency=currency)
    if amount:
        response = await transfer(client, source["id"], a["id"], amount)
        assert response.status_code == 201, response.text
    return source, a, b


async def balances(client: httpx.AsyncClient, account_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/accounts/{account_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["balances"]
    return result


@contextlib.asynccontextmanager
async def live_server(settings: Settings) -> AsyncIterator[str]:
    """The real app under uvicorn on a loopback port, in this event loop: unlike the test
    client (which runs one request at a time), it serves concurrent requests concurrently."""
    from ledger.cli.main import ensure_admin_key

    await ensure_admin_key(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=LOOPBACK,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the live server stopped at start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def app_client(
    settings: Settings, secret: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Like the `client` fixture, for tests that build their own settings (another database, a
    shorter lock timeout, ...). Without a signing key of their own they get the session's, as
    `serve` always has one."""
    if settings.audit_signing_key is None and AUDIT_KEY_ENV in os.environ:
        settings = settings.with_(audit_signing_key=os.environ[AUDIT_KEY_ENV])
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver.local",
            headers={"Authorization": f"Bearer {secret or settings.admin_key}"},
        ) as http:
            yield http
    finally:
        # The app's own shutdown (no lifespan runs under ASGITransport): it stops the outbox
        # notifier before disposing of the engine. Disposing alone let a notifier wake-up still
        # pending open a fresh pooled connection after the dispose, a backend that lingered.
        await app.state.close()


async def violations(settings: Settings) -> list[str]:
    """What `ledger verify` would print for the test's database (empty when every rule holds)."""
    engine = create_engine(settings, pool_size=1)
    try:
        return await run_in_transaction(create_sessionmaker(engine), find_violations)
    finally:
        await engine.dispose()
