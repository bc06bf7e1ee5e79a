"""OpenTelemetry: one tracer provider per process, exporter chosen by the OTEL_* variables."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

_configured = False


def configure_tracing(service_name: str = "ledger") -> TracerProvider | None:
    """Tracing is always on (ids for logs and events); spans leave the process only when
    OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_ENDPOINT ask for an exporter."""
    global _configured
    if _configured:
        return None
    _configured = True
    name = os.environ.get("OTEL_SERVICE_NAME", service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    exporter = _exporter_from_env()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def _exporter_from_env() -> SpanExporter | None:
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if choice in ("", "none"):
        if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            return None
        choice = "otlp"
    if choice == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if choice == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError:
            return None
        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    return None


def current_ids() -> tuple[str | None, str | None, str | None]:
    """(trace_id, span_id, traceparent) of the current span, or Nones outside a trace."""
    span = trace.get_current_span()
    context = span.get_span_context()
    if not context.is_valid:
        return None, None, None
    trace_id = format(context.trace_id, "032x")
    span_id = format(context.span_id, "016x")
    flags = format(int(context.trace_flags), "02x")
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{flags}"
