"""Schemathesis against a real `ledger serve`, with `ledger worker` beside it, on the suite's
PostgreSQL and broker: every check (`--checks all`), every phase including the stateful one,
authenticated as admin. It must find nothing; then the money it moved must still add up.

The one hook it runs with (tests/schemathesis_hooks.py) spells whole floats drawn for integer
fields as integers; why is said there. The run is bounded by `MAX_EXAMPLES` per operation, so
that it costs about a minute on two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.core.settings import Settings
from ledger.embedded import LOOPBACK, EmbeddedBroker, free_port
from tests.conftest import new_database
from tests.helpers import violations
from tests.processes import LEDGER, ledger_env, stop, wait_until_ready

ADMIN_KEY = "lk_test_schemathesis_admin_0123456789"
ST = str(Path(sys.executable).with_name("st"))
MAX_EXAMPLES = 20  # per operation, fuzzing and stateful: about a minute on two cores
ST_TIMEOUT_SECONDS = 600  # a hung run fails instead of blocking the suite
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Service:
    url: str
    database_url: str
    serve_log: Path
    worker_log: Path


@pytest.fixture(scope="module")
def service(
    pg_server: str,
    template_db: str,
    broker: EmbeddedBroker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    database_url = new_database(pg_server)
    env = ledger_env(
        database_url,
        LEDGER_ADMIN_KEY=ADMIN_KEY,
        LEDGER_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        LEDGER_KAFKA_TOPIC=f"ledger.events.test.{uuid.uuid4().hex[:10]}",
        # The endpoints Schemathesis creates name hosts of its invention: the worker delivers
        # to none of them (only loopback addresses, ever).
        LEDGER_WEBHOOK_DELIVERY="off",
    )
    logs = tmp_path_factory.mktemp("schemathesis")
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    with (logs / "serve.jsonl").open("wb") as serve_log, (logs / "worker.jsonl").open("wb") as w:
        serve = subprocess.Popen(
            [LEDGER, "serve", "--host", LOOPBACK, "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=serve_log,
            start_new_session=True,
        )
        worker = subprocess.Popen(
            [LEDGER, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=w, start_new_session=True
        )
    try:
        wait_until_ready(serve, url)
        assert worker.poll() is None, (logs / "worker.jsonl").read_text()
        yield Service(url, database_url, logs / "serve.jsonl", logs / "worker.jsonl")
    finally:
        stop(worker)
        stop(serve)


def run_schemathesis(service: Service, workdir: Path) -> subprocess.CompletedProcess[str]:
    # The admin key goes to the document's bearer scheme (not a blanket header), so that the
    # checks that leave it out (ignored_auth, missing_required_header) really send none.
    config = workdir / "schemathesis.toml"
    config.write_text(f'[auth.openapi.bearerAuth]\nbearer = "{ADMIN_KEY}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    env.update(
        SCHEMATHESIS_HOOKS="tests.schemathesis_hooks",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    command = [
        ST,
        "--config-file",
        str(config),
        "run",
        f"{service.url}/schema/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        # One worker: Python 3.11's `ast.parse`, which Hypothesis calls to describe strategies,
        # can fail when two threads run it at once ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--report",
        "junit",
        "--report-dir",
        str(workdir / "report"),
        "--no-color",
    ]
    return subprocess.run(
        command,
        env=env,
        cwd=workdir,  # Schemathesis keeps its cache in the working directory
        capture_output=True,
        text=True,
        timeout=ST_TIMEOUT_SECONDS,
        check=False,
    )


async def test_schemathesis_finds_no_failure_against_the_real_service(
    service: Service, tmp_path: Path
) -> None:
    done = run_schemathesis(service, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-20_000:]
    # Every phase ran, the stateful one included, and nothing was skipped as unreachable.
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, output[-5_000:]
    # No 500 got past the checks as an "expected" answer either: the service logged none.
    assert "http.unhandled_error" not in service.serve_log.read_text()
    # Whatever the fuzzing moved, every money invariant still holds.
    assert await violations(Settings(database_url=service.database_url)) == []
