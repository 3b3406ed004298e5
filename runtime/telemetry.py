"""OpenTelemetry for every rayvisor process: one trace per task, across Ray and NATS.

A task's trace: the HTTP request (`serve`) -> `task.submit` (the TaskManager, stored with
the task as `trace_context`) -> one `task.lease` per attempt (the TaskManager) ->
`agent.handle` (the agent host, from the envelope's `trace`) -> `tool.call`, `ask`,
`model.chat` (and the asked agent's `ask.handle`, from the message's headers) ->
`task.commit`. The context crosses a Ray call in the task envelope and a NATS message in
its headers (an outbox row keeps the headers of the change that wrote it), as W3C
`traceparent`/`tracestate`. A retry, even by a restarted TaskManager, starts its lease
from the stored context: every attempt is in the task's one trace.

Spans are recorded only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is
set: `setup` then installs the SDK with the OTLP/HTTP exporter (the `OTEL_*` variables
configure it, as the SDK documents). Otherwise nothing is installed and every helper here
returns at its first test of `_enabled`: tracing off costs a branch.

Every task is traced by default (the SDK's `parentbased_always_on`); a busy system samples
with the SDK's own variables, `OTEL_TRACES_SAMPLER=parentbased_traceidratio` and
`OTEL_TRACES_SAMPLER_ARG=0.1`: the decision is taken once, at the task's root span, and the
task's other spans (in every process) follow it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = [
    "SpanKind",
    "carrier",
    "configured_env",
    "enabled",
    "end_span",
    "ending",
    "event",
    "extract",
    "mark_error",
    "preload",
    "sampled",
    "setup",
    "span",
    "span_carrier",
    "start_span",
    "trace_id",
    "wanted",
]

_log = logging.getLogger(__name__)
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
_configured = False
_enabled = False
_tracer: trace.Tracer = trace.NoOpTracer()


def wanted() -> bool:
    """Whether this process's environment asks for export."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return any(os.environ.get(name) for name in _ENDPOINT_VARIABLES)


def configured_env() -> dict[str, str]:
    """The `OTEL_*` variables of this process, for the Ray workers and Serve replicas it
    starts (so they export where it does)."""
    return {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}


def setup(process: str, *, actor: str | None = None) -> None:
    """Install the tracer provider once per process; `process` is its role (`cli`,
    `ingress`, `agent-host`, ...) and `actor` its name in the tree."""
    global _configured, _enabled, _tracer
    if _configured:
        return
    _configured = True
    if not wanted():
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, Any] = {
        "service.name": os.environ.get("OTEL_SERVICE_NAME", "rayvisor"),
        "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
        "process.pid": os.getpid(),
        "rayvisor.process": process,
    }
    if actor:
        attributes["rayvisor.actor"] = actor
    attributes.update(_ray_attributes())
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("rayvisor")
    _enabled = True


def preload() -> None:
    """Import the SDK ahead (a worker setup hook), so a restarted actor does not pay it."""
    if wanted():
        for module in ("opentelemetry.sdk.trace", _EXPORTER):
            importlib.import_module(module)


def _ray_attributes() -> dict[str, str]:
    """Where this process is in Ray: its node, and its actor's name (as the dashboard
    shows it, `tm:0`, `agent:log-analysis-1`)."""
    try:
        import ray

        if not ray.is_initialized():
            return {}
        context = ray.get_runtime_context()
        found = {"ray.node.id": context.get_node_id()}
        if context.worker.mode == ray.WORKER_MODE and context.get_actor_id():
            found["ray.actor.name"] = context.get_actor_name() or ""
        return {k: v for k, v in found.items() if v}
    except Exception:
        return {}


def enabled() -> bool:
    return _enabled


def carrier(ctx: context.Context | None = None) -> dict[str, str]:
    """The current (or `ctx`'s) trace context as headers; empty when nothing is traced."""
    if not _enabled:
        return {}
    headers: dict[str, str] = {}
    propagate.inject(headers, context=ctx)
    return headers


def span_carrier(s: Span | None) -> dict[str, str]:
    """The headers that make `s` the parent of what the receiver does."""
    if s is None:
        return {}
    return carrier(trace.set_span_in_context(s))


def extract(headers: Mapping[str, str] | None) -> context.Context:
    """A context to start child spans in, from headers another process sent."""
    return propagate.extract(dict(headers or {}))


def start_span(
    name: str,
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Span | None:
    """A span to end later with `end_span`, child of the context in `parent` (headers);
    None when tracing is off or the parent's trace was not sampled (a task's spans follow
    the sampling decision taken at its root, so an unsampled task costs a string test)."""
    if not _enabled or (parent and not sampled(parent)):
        return None
    ctx = extract(parent) if parent else None
    return _tracer.start_span(name, context=ctx, kind=kind, attributes=_clean(attributes))


def end_span(s: Span | None, error: BaseException | str | None = None) -> None:
    if s is None:
        return
    if error is not None:
        mark_error(s, error)
    s.end()


def mark_error(s: Span | None, error: BaseException | str) -> None:
    """Set the span's status to ERROR with the reason (and the exception, if one)."""
    if s is None:
        return
    description = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    s.set_status(Status(StatusCode.ERROR, description[:500]))
    if isinstance(error, BaseException):
        s.record_exception(error)


@contextlib.contextmanager
def ending(spans: list[Span | None]) -> Iterator[None]:
    """End `spans` when the block ends: in error, with the exception, if it raises."""
    try:
        yield
    except Exception as exc:
        for s in spans:
            end_span(s, exc)
        raise
    for s in spans:
        end_span(s)


@contextlib.contextmanager
def span(
    name: str,
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span | None]:
    """A span around a block, current inside it (child of `parent` headers if given, else
    of the current span); an exception ends it in error. Yields None when off."""
    if not _enabled:
        yield None
        return
    ctx = extract(parent) if parent else None
    with _tracer.start_as_current_span(
        name, context=ctx, kind=kind, attributes=_clean(attributes)
    ) as current:
        yield current


def event(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """A point in time, on the current span, or as a span of its own when none is active
    (a supervision decision outside any task)."""
    if not _enabled:
        return
    current = trace.get_current_span()
    if current.get_span_context().is_valid:
        current.add_event(name, attributes=_clean(attributes))
    else:
        _tracer.start_span(name, attributes=_clean(attributes)).end()


def sampled(headers: Mapping[str, str]) -> bool:
    """Whether `traceparent` says its trace is recorded (the W3C `sampled` flag)."""
    flags = headers.get("traceparent", "")[-2:]
    try:
        return bool(int(flags, 16) & 1)
    except ValueError:
        return True  # malformed: let the SDK decide


def trace_id(headers: Mapping[str, str] | None) -> str | None:
    """The trace id (32 hex digits) in `traceparent` headers, or None."""
    parent = (headers or {}).get("traceparent", "")
    parts = parent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """OpenTelemetry takes str, bool, int, float (or lists of one): None is dropped and
    anything else is written as text."""
    if not attributes:
        return None
    return {
        k: v if isinstance(v, str | bool | int | float) else str(v)
        for k, v in attributes.items()
        if v is not None
    }
