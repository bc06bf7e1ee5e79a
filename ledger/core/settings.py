"""Settings read from the environment once, when a command starts (never at import)."""

from __future__ import annotations

import os
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace

import sqlalchemy as sa

from ledger.core import limits
from ledger.core.dburl import DatabaseUrl
from ledger.core.errors import ConfigurationError

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "ledger.events"
    kafka_enable_idempotence: bool = False
    event_retention_hours: int = limits.EVENT_RETENTION_HOURS_DEFAULT
    admin_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    log_format: str = "json"
    audit_sealer: bool = True  # LEDGER_AUDIT_SEALER=off: no sealing (only to measure its cost)
    group_commit: bool = True  # LEDGER_GROUP_COMMIT=off: one transaction per transfer request
    # LEDGER_METRICS_PORT: `ledger worker` / `ledger consume` serve /metrics on this port too
    # (the API's /metrics cannot see another process's counters).
    metrics_port: int | None = None
    # Verifiable audit: the Ed25519 private key (PEM, PKCS#8) that signs checkpoints, a path;
    # `serve` and `worker` refuse to start without it. Where checkpoints go besides the database.
    audit_signing_key: str | None = None
    kafka_checkpoint_topic: str = "ledger.audit.checkpoints"
    audit_checkpoint_file: str | None = None
    # LEDGER_AUDIT_PUBLIC_KEYS: PEM files (comma-separated paths) of keys that signed checkpoints
    # before a rotation; the signing key's own public key is always trusted besides them.
    audit_public_keys: tuple[str, ...] = ()
    # LEDGER_AUDIT_LOG_NAME: the origin line (and key name) of the checkpoints' C2SP notes.
    audit_log_name: str = "ledger/audit"
    # Webhooks (contract 9.2): plain http and private addresses, for development and tests only;
    # whether this worker delivers; the key that seals signing secrets (a file of random bytes;
    # unset: derived from the audit signing key).
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    webhook_delivery: bool = True
    webhook_secret_key: str | None = None
    # Beyond one machine (docs/scaling.md). LEDGER_DATABASE_READ_URL: reads that may lag (lists,
    # statements, reports, the feed, the console) go there, each after checking that it has
    # replayed every write acknowledged before it began. LEDGER_DATABASE_DIRECT_URL: the
    # connections that hold session state (the relay's and the sealer's leader locks, LISTEN);
    # when it is set apart from LEDGER_DATABASE_URL, that one is taken for a transaction-mode
    # pooler (PgBouncer): no server-side prepared statements, no startup options.
    database_read_url: str | None = None
    database_direct_url: str | None = None

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def database(self) -> DatabaseUrl:
        """LEDGER_DATABASE_URL, parsed: the request path and every job's own transactions."""
        if self.database_url is None:
            raise ConfigurationError("LEDGER_DATABASE_URL is not set")
        return DatabaseUrl.parse(self.database_url)

    @property
    def direct_database(self) -> DatabaseUrl:
        """Where session state lives: LEDGER_DATABASE_DIRECT_URL, by default the main URL."""
        if self.database_direct_url is None:
            return self.database
        return DatabaseUrl.parse(self.database_direct_url, "LEDGER_DATABASE_DIRECT_URL")

    @property
    def read_database(self) -> DatabaseUrl | None:
        if self.database_read_url is None:
            return None
        return DatabaseUrl.parse(self.database_read_url, "LEDGER_DATABASE_READ_URL")

    @property
    def pooled(self) -> bool:
        """LEDGER_DATABASE_URL goes through a transaction-mode pooler: a direct URL of its own
        was given for session state."""
        return self.database_direct_url is not None and self.database_direct_url != (
            self.database_url
        )

    @property
    def sqlalchemy_url(self) -> sa.URL:
        return self.database.sqlalchemy_url()


def to_sqlalchemy_url(url: str) -> str:
    """A database URL (libpq's form, several hosts included) in SQLAlchemy's psycopg form."""
    return DatabaseUrl.parse(url).sqlalchemy_url().render_as_string(hide_password=False)


def _flag(value: str | None, *, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _retention_hours(value: str | None) -> int:
    """How long published events stay in the HTTP feed, in whole hours (bounded in limits)."""
    if value is None or not value.strip():
        return limits.EVENT_RETENTION_HOURS_DEFAULT
    text = value.strip()
    if not text.isdigit() or not (1 <= int(text) <= limits.EVENT_RETENTION_HOURS_MAX):
        bound = limits.EVENT_RETENTION_HOURS_MAX
        raise ConfigurationError(f"LEDGER_EVENT_RETENTION_HOURS must be a whole number 1..{bound}")
    return int(text)


def _metrics_port(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isdigit() or not (1 <= int(text) <= 65535):
        raise ConfigurationError("LEDGER_METRICS_PORT must be a port number 1..65535")
    return int(text)


def _public_keys(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(path.strip() for path in value.split(",") if path.strip())


def log_name_problem(name: str) -> str | None:
    """Why `name` cannot be a log's origin and note key name, or None: non-empty, bounded, and
    no space of any kind, no `+`, no control character (the C2SP signed-note key name rules)."""
    if not 1 <= len(name) <= limits.AUDIT_LOG_NAME_LENGTH_MAX:
        return f"must be 1..{limits.AUDIT_LOG_NAME_LENGTH_MAX} characters"
    for char in name:
        if char == "+" or char.isspace() or unicodedata.category(char) in ("Cc", "Zs", "Cs"):
            return "must hold no space, no '+' and no control character"
    return None


def _log_name(value: str | None) -> str:
    if value is None or value == "":
        return "ledger/audit"
    problem = log_name_problem(value)
    if problem is not None:
        raise ConfigurationError(f"LEDGER_AUDIT_LOG_NAME {problem}")
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    level = env.get("LEDGER_LOG_LEVEL", "info").strip().lower() or "info"
    if level not in LOG_LEVELS:
        raise ConfigurationError(f"LEDGER_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    default_format = "console" if sys.stderr.isatty() else "json"
    log_format = env.get("LEDGER_LOG_FORMAT", default_format).strip().lower() or default_format
    if log_format not in ("json", "console"):
        raise ConfigurationError("LEDGER_LOG_FORMAT must be json or console")
    port_text = env.get("LEDGER_PORT", "8000")
    try:
        port = int(port_text)
    except ValueError as exc:
        raise ConfigurationError("LEDGER_PORT must be an integer") from exc
    return Settings(
        kafka_bootstrap_servers=env.get("LEDGER_KAFKA_BOOTSTRAP_SERVERS") or None,
        kafka_topic=env.get("LEDGER_KAFKA_TOPIC") or "ledger.events",
        kafka_enable_idempotence=_flag(env.get("LEDGER_KAFKA_ENABLE_IDEMPOTENCE"), default=False),
        event_retention_hours=_retention_hours(env.get("LEDGER_EVENT_RETENTION_HOURS")),
        admin_key=env.get("LEDGER_ADMIN_KEY") or None,
        host=env.get("LEDGER_HOST") or "127.0.0.1",
        port=port,
        log_level=level,
        log_format=log_format,
        audit_sealer=_flag(env.get("LEDGER_AUDIT_SEALER"), default=True),
        group_commit=_flag(env.get("LEDGER_GROUP_COMMIT"), default=True),
        metrics_port=_metrics_port(env.get("LEDGER_METRICS_PORT")),
        audit_signing_key=env.get("LEDGER_AUDIT_SIGNING_KEY") or None,
        kafka_checkpoint_topic=env.get("LEDGER_KAFKA_CHECKPOINT_TOPIC")
        or "ledger.audit.checkpoints",
        audit_checkpoint_file=env.get("LEDGER_AUDIT_CHECKPOINT_FILE") or None,
        audit_public_keys=_public_keys(env.get("LEDGER_AUDIT_PUBLIC_KEYS")),
        audit_log_name=_log_name(env.get("LEDGER_AUDIT_LOG_NAME")),
        webhook_allow_http=_flag(env.get("LEDGER_WEBHOOK_ALLOW_HTTP"), default=False),
        webhook_allow_private=_flag(env.get("LEDGER_WEBHOOK_ALLOW_PRIVATE"), default=False),
        webhook_delivery=_flag(env.get("LEDGER_WEBHOOK_DELIVERY"), default=True),
        webhook_secret_key=env.get("LEDGER_WEBHOOK_SECRET_KEY") or None,
        **_database_urls(env),
    )


def _database_urls(env: Mapping[str, str]) -> dict[str, str | None]:
    """The three database URLs, each checked now: one that cannot be used stops the command
    with one line naming it, before anything connects."""
    urls = {
        "database_url": ("LEDGER_DATABASE_URL", env.get("LEDGER_DATABASE_URL") or None),
        "database_read_url": (
            "LEDGER_DATABASE_READ_URL",
            env.get("LEDGER_DATABASE_READ_URL") or None,
        ),
        "database_direct_url": (
            "LEDGER_DATABASE_DIRECT_URL",
            env.get("LEDGER_DATABASE_DIRECT_URL") or None,
        ),
    }
    for variable, value in urls.values():
        if value is not None:
            DatabaseUrl.parse(value, variable)
    return {field: value for field, (_variable, value) in urls.items()}
