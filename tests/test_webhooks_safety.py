"""Webhook delivery's safety bounds (contract 9.2), against real loopback servers: a host that
resolves to a private address is refused on the connection itself, a redirect is not followed,
at most 64 KiB of an answer is read, and an answer dripped byte by byte ends at the time limit."""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
import psycopg
import pytest

from ledger.core import limits
from ledger.core.settings import Settings
from ledger.webhooks.delivery.sender import Signer, attempt
from ledger.webhooks.delivery.transport import AddressRefused, guarded_client
from ledger.webhooks.secrets import make_secret
from tests.helpers import create_account
from tests.webhook_helpers import create_endpoint, delivering, receiver_settings, wait_for
from tests.webhook_receiver import receiving

SIGNER = Signer([make_secret()])


@pytest.fixture
def settings(db_url: str) -> Settings:
    return receiver_settings(db_url)


def guarded(*, allow_private: bool) -> aiohttp.ClientSession:
    return guarded_client(allow_private=allow_private, connections_max=2)


async def test_a_host_resolving_to_a_private_address_is_refused_on_connect() -> None:
    async with receiving() as receiver:
        url = f"http://localhost:{receiver.port}/hook"  # a name: its address is known on connect
        async with guarded(allow_private=False) as refusing:
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await refusing.post(url, data=b"{}")
            assert isinstance(caught.value.os_error, AddressRefused)
            outcome = await attempt(refusing, url, event_id="e1", body=b"{}", signer=SIGNER)
        assert not outcome.delivered and outcome.status_code is None
        assert outcome.error is not None and "private" in outcome.error
        assert receiver.requests == []  # nothing ever reached it
        async with guarded(allow_private=True) as allowing:  # the same request, allowed
            assert (
                await attempt(allowing, url, event_id="e1", body=b"{}", signer=SIGNER)
            ).delivered
        assert len(receiver.requests) == 1


async def test_an_address_in_the_url_is_checked_on_connect_too() -> None:
    """aiohttp does not resolve an address literal: the socket factory checks the address of
    every socket about to connect, so a private literal is refused as a private name is."""
    async with receiving() as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        async with guarded(allow_private=False) as refusing:
            outcome = await attempt(refusing, url, event_id="e1", body=b"{}", signer=SIGNER)
    assert not outcome.delivered and outcome.status_code is None
    assert outcome.error is not None and "private" in outcome.error
    assert receiver.requests == []


async def test_the_worker_refuses_a_private_address_the_api_let_through(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    """The API allowed the name (as a public name would be), the worker's settings do not allow
    private addresses: the delivery fails on connect and stays pending, nothing is sent."""
    async with receiving() as receiver, delivering(settings.with_(webhook_allow_private=False)):
        endpoint = await create_endpoint(client, f"http://localhost:{receiver.port}/hook")
        await create_account(client)
        await wait_for(
            lambda: sync_db.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (1,),
            "the attempt to be recorded",
        )
        log = (await client.get(f"/v1/webhooks/{endpoint['id']}/deliveries")).json()["data"]
    assert receiver.requests == []
    assert log[0]["status"] == "pending" and log[0]["attempts"] >= 1
    assert "private" in log[0]["last_error"] and log[0]["next_attempt_at"] is not None


async def test_a_redirect_is_not_followed() -> None:
    async with receiving() as target, receiving(lambda _r: "redirect") as redirecting:
        redirecting.redirect_to = target.url
        async with guarded(allow_private=True) as http:
            outcome = await attempt(http, redirecting.url, event_id="e1", body=b"{}", signer=SIGNER)
    assert not outcome.delivered and outcome.status_code == 302
    assert len(redirecting.requests) == 1 and target.requests == []


async def test_at_most_64_kib_of_an_answer_is_read() -> None:
    """The receiver answers 200 with a gigabyte it writes as fast as it is read: the attempt
    ends delivered having taken a bounded part of it (what the socket buffers hold beside the
    64 KiB read), where reading on for the time limit would have taken gigabytes."""
    async with receiving(lambda _r: "endless") as endless:
        async with guarded(allow_private=True) as http:
            outcome = await attempt(
                http, endless.url, event_id="e1", body=b"{}", signer=SIGNER, timeout_seconds=3
            )
        written = endless.bytes_written
    assert outcome.delivered and outcome.status_code == 200
    assert written < 32 * 1024 * 1024, written
    assert limits.WEBHOOK_RESPONSE_BYTES_MAX == 64 * 1024


async def test_a_status_line_dripped_byte_by_byte_ends_at_the_time_limit() -> None:
    """Per-read timeouts would not end it, since a drip satisfies every one of them: the attempt's
    own limit ends it (here 1 s; the service's is 10 s), as a failure."""
    async with receiving(lambda _r: "drip") as dripping, guarded(allow_private=True) as http:
        outcome = await attempt(
            http, dripping.url, event_id="e1", body=b"{}", signer=SIGNER, timeout_seconds=1
        )
    assert not outcome.delivered and outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith("timeout")
