"""OpenTelemetry for every rayvisor process, and trace context across NATS.

Context crosses a NATS message in its headers (an outbox row keeps the headers of the
transaction that wrote it) as W3C `traceparent`/`tracestate` strings. Not carried yet:
the task envelope across Ray calls, so the HTTP request, the TaskManager and the agent
are not one trace. Spans are exported over OTLP only when `OTEL_EXPORTER_OTLP_ENDPOINT`
is set (and the exporter is installed).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import context, propagate, trace

__all__ = ["carrier", "extract", "setup_tracing", "tracer"]

_log = logging.getLogger(__name__)
_configured = False


def setup_tracing(service_name: str = "rayvisor") -> None:
    """Install a tracer provider once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    # the SDK loads here, not at import: processes that never set tracing up (a restarted
    # agent host) skip it
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            _log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is missing")
        else:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def carrier() -> dict[str, str]:
    """The current trace context as headers (empty when no span is active)."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> context.Context:
    """A context to start child spans in, from headers another process sent."""
    return propagate.extract(dict(headers or {}))
