"""`ledger dev`: everything on one laptop, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import structlog
import uvicorn

from ledger.app import create_app
from ledger.core import migrate
from ledger.core.settings import Settings, load_settings
from ledger.embedded import EmbeddedBroker, EmbeddedPostgres
from observability.logging import configure_logging

log = structlog.get_logger("ledger.dev")


def run_dev(data_dir: Path, *, port: int | None = None) -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    try:
        if settings.database_url is None:
            postgres = EmbeddedPostgres(data_dir.resolve() / "postgres", port=_saved_port(data_dir))
            postgres.start()
            (data_dir / "postgres.port").write_text(str(postgres.port))
            _ensure_database(postgres)
            settings = settings.with_(database_url=postgres.url("ledger"))
        if settings.kafka_bootstrap_servers is None:
            broker = EmbeddedBroker().start()
            settings = settings.with_(kafka_bootstrap_servers=broker.bootstrap_servers)
        admin_key = settings.admin_key or _saved_admin_key(data_dir)
        settings = settings.with_(admin_key=admin_key, port=port or settings.port)
        settings = _with_audit_checkpoints(settings, data_dir)
        migrate.upgrade(settings.database_url or "")
        asyncio.run(_serve_all(settings))
    except KeyboardInterrupt:
        pass
    finally:
        if broker is not None:
            broker.stop()
        if postgres is not None:
            postgres.stop()
    return 0


async def _serve_all(settings: object) -> None:
    from ledger.cli.main import ensure_admin_key
    from ledger.core.settings import Settings
    from ledger.worker.jobs import run_worker

    if not isinstance(settings, Settings):  # pragma: no cover
        raise TypeError("settings")
    await ensure_admin_key(settings)
    base = f"http://{settings.host}:{settings.port}"
    banner = (
        "\n  Ledger is up.\n"
        f"  API          {base}/v1\n"
        f"  OpenAPI UI   {base}/schema\n"
        f"  Console      {base}/console (sign in with the admin key, or an auditor's)\n"
        f"  Database     {settings.database_url}\n"
        f"  Kafka        {settings.kafka_bootstrap_servers} (topic {settings.kafka_topic})\n"
        f"  Admin key    {settings.admin_key}\n"
        f"  Audit        checkpoints signed with {settings.audit_signing_key},\n"
        f"               appended to {settings.audit_checkpoint_file}\n\n"
        f"  Try: curl -H 'Authorization: Bearer {settings.admin_key}' {base}/v1/accounts\n"
    )
    print(banner, flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            server_header=False,
        )
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop))
    try:
        await server.serve()
    finally:
        stop.set()
        await worker


def _saved_port(data_dir: Path) -> int:
    path = data_dir / "postgres.port"
    if path.exists() and path.read_text().strip().isdigit():
        return int(path.read_text().strip())
    return 0


def _saved_admin_key(data_dir: Path) -> str:
    """One admin key per dev data directory, kept beside the data (never logged)."""
    path = data_dir / "admin.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = "lk_" + secrets.token_urlsafe(32)
    path.write_text(secret)
    os.chmod(path, 0o600)
    return secret


def _with_audit_checkpoints(settings: Settings, data_dir: Path) -> Settings:
    """A checkpoint signing key under the data directory (made once, printed key id) unless
    LEDGER_AUDIT_SIGNING_KEY names one; checkpoints appended to ./.ledger/checkpoints.jsonl
    unless LEDGER_AUDIT_CHECKPOINT_FILE says otherwise."""
    from ledger.audit.signing import generate_key, key_id_of, load_signer

    if settings.audit_signing_key is None:
        path = data_dir / "audit-signing-key.pem"
        if not path.exists():
            private = generate_key(path)
            log.info("dev.audit_key_created", key_id=key_id_of(private.public_key()))
        settings = settings.with_(audit_signing_key=str(path))
    if settings.audit_checkpoint_file is None:
        settings = settings.with_(audit_checkpoint_file=str(data_dir / "checkpoints.jsonl"))
    load_signer(settings.audit_signing_key)  # a bad key stops `ledger dev` before it serves
    return settings


def _ensure_database(postgres: EmbeddedPostgres) -> None:
    import psycopg

    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'ledger'").fetchone()
        if not exists:
            conn.execute("CREATE DATABASE ledger")
