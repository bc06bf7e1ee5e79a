"""A client generated from the served OpenAPI document works: `openapi-python-client` builds it
into a temporary directory, and its own types create two accounts, post a transfer with an
Idempotency-Key (then replay it), and read problems (404, 422) as `Problem`.

The app runs under uvicorn on a loopback port (tests/helpers.py::live_server), so the client
talks HTTP to it exactly as an integrator's would."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from ledger.core.settings import Settings
from tests.helpers import balances, live_server

GENERATOR = str(Path(sys.executable).with_name("openapi-python-client"))
GENERATE_TIMEOUT_SECONDS = 300  # a hung generator fails instead of blocking the suite


def generate(document: dict[str, Any], directory: Path, package: str) -> None:
    spec = directory / "openapi.json"
    spec.write_text(httpx.Response(200, json=document).text)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    done = subprocess.run(
        [
            GENERATOR,
            "generate",
            "--path",
            str(spec),
            "--meta",
            "none",
            "--output-path",
            str(directory / package),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Every schema and operation of the document made it into the client.
    assert "Unable to parse" not in done.stdout + done.stderr, done.stdout + done.stderr


def load(directory: Path, package: str, *modules: str) -> list[ModuleType]:
    sys.path.insert(0, str(directory))
    try:
        return [importlib.import_module(f"{package}.{name}") for name in modules]
    finally:
        sys.path.remove(str(directory))


async def test_a_generated_client_moves_money_and_reads_problems(
    settings: Settings, tmp_path: Path
) -> None:
    package = f"ledger_client_{uuid.uuid4().hex[:8]}"
    async with live_server(settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            document = (await http.get("/schema/openapi.json")).json()
        await asyncio.to_thread(generate, document, tmp_path, package)
        client_mod, models, accounts_api, get_account, transfers_api = load(
            tmp_path,
            package,
            "client",
            "models",
            "api.accounts.create_account",
            "api.accounts.get_account",
            "api.transfers.create_transfer",
        )
        client = client_mod.AuthenticatedClient(base_url=url, token=settings.admin_key)
        async with client:
            created = []
            for normal, floor in (("DEBIT", None), ("CREDIT", 0)):
                answer = await accounts_api.asyncio_detailed(
                    client=client,
                    body=models.AccountCreate(
                        code=f"gen:{uuid.uuid4().hex[:12]}",
                        currency="USD",
                        normal_balance=getattr(models.AccountCreateNormalBalance, normal),
                        min_balance=floor,
                    ),
                )
                assert answer.status_code == 201, answer.content
                assert isinstance(answer.parsed, models.AccountOut)
                created.append(answer.parsed)
            source, target = created
            body = models.TransferCreate(
                debit_account_id=source.id, credit_account_id=target.id, amount=250
            )
            key = f"gen-{uuid.uuid4()}"
            first = await transfers_api.asyncio_detailed(
                client=client, body=body, idempotency_key=key
            )
            again = await transfers_api.asyncio_detailed(
                client=client, body=body, idempotency_key=key
            )
            assert first.status_code == 201, first.content
            assert isinstance(first.parsed, models.TransferOut)
            assert first.parsed.state == models.TransferOutState.POSTED
            assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
            assert again.parsed.id == first.parsed.id  # the replay is the same transfer
            # Problems come back typed: an unknown account (404), a refusal of the rules and
            # a validation error naming its field (422).
            missing = await get_account.asyncio_detailed(uuid.uuid4(), client=client)
            assert missing.status_code == 404
            assert isinstance(missing.parsed, models.Problem)
            assert missing.parsed.code == "account_not_found"
            refused = await transfers_api.asyncio_detailed(
                client=client,
                body=models.TransferCreate(
                    debit_account_id=source.id, credit_account_id=source.id, amount=1
                ),
            )
            assert refused.status_code == 422
            assert isinstance(refused.parsed, models.Problem)
            assert refused.parsed.code == "same_account"
            invalid = await transfers_api.asyncio_detailed(
                client=client,
                body=models.TransferCreate(
                    debit_account_id=source.id, credit_account_id=target.id, amount=0
                ),
            )
            assert invalid.status_code == 422
            assert isinstance(invalid.parsed, models.Problem)
            assert invalid.parsed.code == "validation_error"
            assert [e.field for e in invalid.parsed.errors] == ["amount"]
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {settings.admin_key}"}
        ) as http:
            # Moved once, though sent twice.
            assert (await balances(http, str(target.id)))["posted"] == 250
