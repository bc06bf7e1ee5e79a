"""OpenTelemetry tracing: one tracer provider per process, the exporter chosen by OTEL_* variables.

Tracing is always on, even with no exporter: trace and span ids feed the log lines, the audit
records and the outbox rows' `traceparent`, so one trace can be followed from an HTTP request to
the consumer of its events. Spans leave the process only when the standard variables ask for it
(`OTEL_TRACES_EXPORTER=otlp|console`, or `OTEL_EXPORTER_OTLP_ENDPOINT`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import structlog
from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger("observability.tracing")

_provider: TracerProvider | None = None


def configure_tracing(service_name: str = "ledger") -> TracerProvider:
    """Install the process's tracer provider once and return it (later calls return the same one).

    Tests add an in-memory exporter with `add_span_processor`; a provider installed earlier by
    someone else (e.g. the `opentelemetry-instrument` launcher) is reused, not replaced, because
    the OpenTelemetry API allows only one global provider per process."""
    global _provider
    if _provider is not None:
        return _provider
    existing = trace.get_tracer_provider()
    if isinstance(existing, TracerProvider):
        _provider = existing
        return _provider
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    for exporter in exporters_from_env():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def add_span_processor(processor: SpanProcessor) -> None:
    """Attach a span processor (an exporter) to this process's provider, configuring it if needed.

    Tests use it with `SimpleSpanProcessor(InMemorySpanExporter())`; processors cannot be removed,
    so attach one per process and `clear()` the exporter between tests."""
    configure_tracing().add_span_processor(processor)


def exporters_from_env() -> list[SpanExporter]:
    """The exporters OTEL_TRACES_EXPORTER names (comma separated); none when it is unset, unless
    OTEL_EXPORTER_OTLP_ENDPOINT is set, which implies `otlp`."""
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not raw:
        raw = "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "none"
    exporters: list[SpanExporter] = []
    for choice in (part.strip() for part in raw.split(",")):
        if choice in ("", "none"):
            continue
        exporter = _exporter(choice)
        if exporter is not None:
            exporters.append(exporter)
    return exporters


def _exporter(choice: str) -> SpanExporter | None:
    if choice == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # stderr: stdout belongs to commands whose output is data (`ledger keys create`).
        return ConsoleSpanExporter(out=sys.stderr)
    if choice == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning(
                "tracing.exporter_missing",
                exporter=choice,
                detail="install the otlp extra: pip install 'ledger-service[otlp]'",
            )
            return None
        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    log.warning("tracing.exporter_unknown", exporter=choice)
    return None


def instrument_engine(engine: AsyncEngine) -> None:
    """SQL spans for every statement this engine runs inside a trace, children of the span that
    is current (the request's server span, the consumer's processing span).

    The instrumentation listens on the async engine's `sync_engine` (where SQLAlchemy fires its
    cursor events). We attach its `EngineTracer` per engine instead of calling the instrumentor,
    whose global `instrument()` works once per process and patches `create_engine` everywhere."""
    from opentelemetry.instrumentation.sqlalchemy.engine import (  # type: ignore[import-untyped,unused-ignore]
        EngineTracer,
    )

    tracer = ChildSpansOnly(trace.get_tracer("ledger.sql"))
    meter = otel_metrics.get_meter("ledger.sql")
    connections = meter.create_up_down_counter(
        "db.client.connections.usage", unit="connections", description="connections in use"
    )
    EngineTracer(tracer, engine.sync_engine, connections)  # type: ignore[no-untyped-call]


class ChildSpansOnly(trace.Tracer):
    """A tracer that starts spans only inside an existing trace.

    SQL run outside any request or consumer span (the relay's polls, the sealer, /metrics
    scrapes) would otherwise make one single-span trace per statement: noise and export cost
    with nothing to correlate."""

    def __init__(self, inner: trace.Tracer) -> None:
        self._inner = inner

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        if not trace.get_current_span(context).get_span_context().is_valid:
            return trace.INVALID_SPAN
        return self._inner.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        span = self.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


def current_ids() -> tuple[str | None, str | None, str | None]:
    """(trace_id, span_id, traceparent) of the current span, or Nones outside a trace."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None, None, None
    trace_id = format(span_context.trace_id, "032x")
    span_id = format(span_context.span_id, "016x")
    flags = format(int(span_context.trace_flags), "02x")
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{flags}"
