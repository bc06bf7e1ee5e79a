"""structlog for everything: our loggers and the stdlib ones (Litestar, uvicorn, SQLAlchemy,
aiokafka, alembic) render through one pipeline, JSON lines on stderr by default, console on a TTY.

Every line has `timestamp`, `level`, `event`, `logger`; a line written inside a span also has
`trace_id` and `span_id` (read from OpenTelemetry when the line is written), and a line written
while serving a request has the `request_id` the middleware binds. Secrets are masked last, just
before rendering, so nothing added by an earlier processor (a traceback included) escapes it.
The standard for using all this is docs/logging.md."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from functools import lru_cache
from typing import IO, Any

import msgspec
import structlog
from opentelemetry import trace

# API key secrets (`lk_` + 43 url-safe characters) and bearer credentials, wherever they appear
# in a value: a message, an exception text, a header dump.
_SECRET_TEXT = re.compile(r"lk_[A-Za-z0-9_-]{8,}|[Bb]earer\s+[^\s\"',;]+")
# Keys whose values are never logged whatever they look like.
_SECRET_KEYS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "secret", "password"}
    | {"api_key", "admin_key", "token", "access_token", "refresh_token", "secret_hash"}
)
_SECRET_KEY_SUFFIXES = ("_secret", "_password", "_token")
REDACTED = "[redacted]"
_REDACT_DEPTH_MAX = 8

# Stdlib loggers we route through our handler (their own handlers removed) and their floors:
# SQLAlchemy at INFO would echo every statement, aiokafka at INFO every rebalance.
_LIBRARY_LEVEL_FLOORS = {
    "litestar": logging.INFO,
    "uvicorn": logging.INFO,
    "uvicorn.error": logging.INFO,
    "sqlalchemy": logging.WARNING,
    "aiokafka": logging.WARNING,
    "alembic": logging.WARNING,
    "asyncio": logging.WARNING,
    # httpx logs every request with its URL at info: webhook deliveries would log each
    # receiver's URL (which may carry its own token) once per event. Ours say what matters.
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
}

LogFormat = str  # "json" | "console"


@lru_cache(maxsize=4096)  # the same few dozen field names, on every line
def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in _SECRET_KEYS or lowered.endswith(_SECRET_KEY_SUFFIXES)


def redact(value: Any, depth: int = 0) -> Any:
    """The value with secrets masked: strings by pattern, containers recursively (bounded)."""
    if isinstance(value, str):
        # Nearly every value has neither marker; the pattern runs only on those that do.
        if "lk_" not in value and "earer" not in value:
            return value
        return _SECRET_TEXT.sub(REDACTED, value)
    if depth >= _REDACT_DEPTH_MAX:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and _is_secret_key(k) else redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        # Header lists come as (name, value) pairs: mask by name like a mapping would.
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[0], str | bytes)
            and _is_secret_key(
                value[0].decode("latin-1") if isinstance(value[0], bytes) else value[0]
            )
        ):
            return (value[0], REDACTED)
        return [redact(item, depth + 1) for item in value]
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"), depth)
    return value


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the last word before rendering, so nothing escapes it."""
    for key in list(event.keys()):
        event[key] = REDACTED if _is_secret_key(key) else redact(event[key])
    return event


def add_trace_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`trace_id` and `span_id` of the span current when the line is written.

    The span is read at log time rather than bound once per request, so lines inside a consumer's
    span or a worker step carry their own trace too. `traceparent`, bound per request for the
    audit and outbox writers, is dropped: it repeats trace_id and span_id."""
    event.pop("traceparent", None)
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event["trace_id"] = format(span_context.trace_id, "032x")
        event["span_id"] = format(span_context.span_id, "016x")
    return event


_JSON = msgspec.json.Encoder(enc_hook=str)


def _json_dumps(value: Any, **kwargs: Any) -> str:
    # UUIDs, datetimes (RFC 3339) and decimals render as their text, anything else unknown as
    # its str(), never as a repr.
    return _JSON.encode(value).decode()


def default_format(stream: IO[str] | None = None) -> LogFormat:
    """`console` for a person at a terminal, `json` for everything that collects logs."""
    target = stream if stream is not None else sys.stderr
    isatty = getattr(target, "isatty", None)
    return "console" if callable(isatty) and isatty() else "json"


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_trace_context,
        structlog.processors.StackInfoRenderer(),
    ]


def make_formatter(fmt: LogFormat = "json") -> logging.Formatter:
    """The formatter every handler uses: our processors, then secrets masked, then rendered."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
    # Tracebacks become text before the secrets are masked, in both formats: an exception's
    # message can carry a secret as easily as a field can.
    final: list[Any] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        redact_secrets,
        renderer,
    ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(), processors=final
    )


def make_handler(stream: IO[str], fmt: LogFormat = "json") -> logging.Handler:
    """A handler writing our rendered lines to `stream`. Tests add one to the root logger to
    capture everything the process logs (the secrets scan reads a whole session's lines)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(fmt))
    return handler


class _OwnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces only that one
    and leaves handlers others added (pytest's capture, a test's file) in place."""


def configure_logging(
    level: str = "info", fmt: LogFormat | None = None, *, stream: IO[str] | None = None
) -> None:
    """Route structlog and the stdlib loggers through one handler on stderr (or `stream`).

    Called once by each command (and again by each `serve --workers` process); calling it again
    only changes the level and format."""
    target = stream if stream is not None else sys.stderr
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = _OwnHandler(target)
    handler.setFormatter(make_formatter(fmt or default_format(target)))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _OwnHandler)] + [handler]
    root_level = logging.getLevelName(level.upper())
    root.setLevel(root_level)
    for name, floor in _LIBRARY_LEVEL_FLOORS.items():
        library = logging.getLogger(name)
        library.handlers[:] = []
        library.propagate = True
        library.setLevel(max(floor, root_level))
    # uvicorn's access log is replaced by our `http.request` line, which carries the ids.
    logging.getLogger("uvicorn.access").disabled = True
