"""rayvisor's metrics, on Ray's own metrics export (`ray.util.metrics`).

Every metric is defined here, once: name, kind, description, label keys, buckets. Ray
exports them in Prometheus text on each node's metrics export port (`MetricsExportPort` in
`ray.nodes()`) and to the Ray dashboard, each named `ray_<name>`: a counter as
`ray_<name>_total`, a histogram as `ray_<name>_bucket` / `_sum` / `_count` (Ray estimates
`_sum` from bucket midpoints: quantiles come from the buckets). `deploy/grafana/rayvisor.json`
charts them all.

Every series carries `namespace`, the tree's Ray namespace (`set_namespace`, once per
process), so systems that share a Ray cluster stay apart.

Recording is cheap where it is hot: task counts and latencies, and published events, go
to this process's dicts and reach Ray at `flush()`, which the loop of `reporter` runs every
`REPORT_EVERY_S` after the caller's gauge update. Of the latencies of a flush, at most
`OBSERVED_PER_FLUSH` per label set are observed, evenly spread (Ray takes ~3 us for each):
the latency histogram's quantiles hold, its `_count` is a sample past that rate, and task
counts come from `rayvisor_tasks_finished`. A gauge is set again at each round: Ray's
export forgets a gauge that is not refreshed within two report intervals (which is also
how a dead process's gauges go away).

Ray's metric objects are made on first use in each process: importing this module loads
nothing of Ray, and recording in a process without Ray exports nothing and fails nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "DEFINITIONS",
    "EXPORT_PREFIX",
    "LATENCY_BUCKETS_S",
    "OBSERVED_PER_FLUSH",
    "REPORT_EVERY_S",
    "MetricDef",
    "agents_by_state",
    "bad_message",
    "bad_messages",
    "breaker_open",
    "capability_label",
    "child_restarted",
    "events_published",
    "flush",
    "http_request",
    "relay_lag",
    "reporter",
    "set_namespace",
    "shard_load",
    "task_finished",
    "tasks_submitted",
]

_log = logging.getLogger(__name__)

EXPORT_PREFIX = "ray_"  # what Ray's Prometheus export puts before a user metric's name
REPORT_EVERY_S = 1.0
# 1 ms .. 10 min, about 2.5x apart: a no-op task, an HTTP call, an LLM step, a long job
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
# a histogram observation costs ~3 us (Ray's C++ side), a task's whole way through a shard
# ~0.5 ms: a shard observes at most this many latencies per flush and label set
OBSERVED_PER_FLUSH = 200
_MAX_PENDING_SAMPLES = 50_000  # latencies kept between flushes; past it only counted


@dataclass(frozen=True)
class MetricDef:
    """One metric as Ray is told of it."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    description: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def exported(self) -> str:
        """The name to query in Prometheus (a histogram's: its buckets)."""
        suffix = {"counter": "_total", "histogram": "_bucket"}.get(self.kind, "")
        return f"{EXPORT_PREFIX}{self.name}{suffix}"


NS = "namespace"
TASKS_SUBMITTED = MetricDef(
    "rayvisor_tasks_submitted", "counter",
    "Tasks stored by a submit, by required capabilities", (NS, "capability"),
)  # fmt: skip
TASKS_FINISHED = MetricDef(
    "rayvisor_tasks_finished", "counter",
    "Tasks that reached a terminal status, by status and required capabilities",
    (NS, "capability", "status"),
)  # fmt: skip
TASK_LATENCY = MetricDef(
    "rayvisor_task_latency_seconds", "histogram",
    "From a task's submit to its terminal status (past 200 a second, an even sample: count"
    " tasks with rayvisor_tasks_finished)", (NS, "capability", "status"), LATENCY_BUCKETS_S,
)  # fmt: skip
QUEUE_DEPTH = MetricDef(
    "rayvisor_queue_depth", "gauge",
    "Tasks queued in a shard: ready, or waiting out a retry backoff", (NS, "shard"),
)  # fmt: skip
LEASES_IN_FLIGHT = MetricDef(
    "rayvisor_leases_in_flight", "gauge",
    "Tasks of a shard leased to an agent (assigned or running)", (NS, "shard"),
)  # fmt: skip
RESTARTS = MetricDef(
    "rayvisor_restarts", "counter",
    "Children restarted, by supervisor and child", (NS, "supervisor", "child"),
)  # fmt: skip
BREAKER_OPEN = MetricDef(
    "rayvisor_breaker_open", "gauge",
    "1 while a child's circuit is open or half-open", (NS, "supervisor", "child"),
)  # fmt: skip
AGENTS = MetricDef(
    "rayvisor_agents", "gauge",
    "Agent children of a supervisor, by their state there", (NS, "supervisor", "state"),
)  # fmt: skip
EVENTS_PUBLISHED = MetricDef(
    "rayvisor_events_published", "counter",
    "Outbox events the relay published to JetStream, by the subject's first token",
    (NS, "topic"),
)  # fmt: skip
RELAY_LAG = MetricDef(
    "rayvisor_relay_lag_seconds", "gauge",
    "Age of the oldest outbox row not yet published (0 when the relay is caught up)", (NS,),
)  # fmt: skip
HTTP_REQUESTS = MetricDef(
    "rayvisor_http_requests", "counter",
    "HTTP requests answered, by route template, method and status",
    (NS, "route", "method", "status"),
)  # fmt: skip
HTTP_DURATION = MetricDef(
    "rayvisor_http_request_duration_seconds", "histogram",
    "From a request's arrival to the end of its response (an event stream: its whole life)",
    (NS, "route", "method", "status"), LATENCY_BUCKETS_S,
)  # fmt: skip

BAD_MESSAGES = MetricDef(
    "rayvisor_bad_messages", "counter",
    "NATS messages a subscriber dropped (malformed, oversized or of the wrong shape), by"
    " the kind of subject", (NS, "kind"),
)  # fmt: skip

DEFINITIONS: tuple[MetricDef, ...] = (
    TASKS_SUBMITTED, TASKS_FINISHED, TASK_LATENCY, QUEUE_DEPTH, LEASES_IN_FLIGHT, RESTARTS,
    BREAKER_OPEN, AGENTS, EVENTS_PUBLISHED, RELAY_LAG, HTTP_REQUESTS, HTTP_DURATION,
    BAD_MESSAGES,
)  # fmt: skip

# ---- this process's state ------------------------------------------------------------

_namespace = ""
_made: dict[str, Any] = {}
_capabilities: dict[frozenset[str], str] = {}
_submitted: dict[str, int] = {}  # capability -> count
_finished: dict[tuple[str, str], list[tuple[datetime, datetime]]] = {}  # (capability, status)
_unsampled: dict[tuple[str, str], int] = {}  # finished past _MAX_PENDING_SAMPLES
_published: dict[str, int] = {}  # topic -> count
_agent_states: dict[str, set[str]] = {}  # supervisor -> states it has reported
_bad_messages: dict[str, int] = {}  # subject kind -> dropped in this process, ever


def set_namespace(namespace: str) -> None:
    """The tree namespace this process belongs to: the `namespace` label of its series."""
    global _namespace
    _namespace = namespace


def _metric(definition: MetricDef) -> Any:
    """The Ray metric object, made on first use (ray.util.metrics loads here)."""
    made = _made.get(definition.name)
    if made is None:
        from ray.util.metrics import Counter, Gauge, Histogram

        if definition.kind == "counter":
            made = Counter(definition.name, definition.description, definition.labels)
        elif definition.kind == "gauge":
            made = Gauge(definition.name, definition.description, definition.labels)
        else:
            made = Histogram(
                definition.name, definition.description, list(definition.buckets),
                definition.labels,
            )  # fmt: skip
        _made[definition.name] = made
    return made


def capability_label(required: frozenset[str]) -> str:
    """A task's required capabilities as a label: sorted, joined by ",", or "any"."""
    label = _capabilities.get(required)
    if label is None:
        label = ",".join(sorted(required)) or "any"
        if len(_capabilities) < 10_000:
            _capabilities[required] = label
    return label


# ---- tasks (hot: counted here, sent by flush) ---------------------------------------


def tasks_submitted(required: Iterable[frozenset[str]]) -> None:
    """Tasks stored by a submit, each given by its required capabilities."""
    for capabilities in required:
        label = capability_label(capabilities)
        _submitted[label] = _submitted.get(label, 0) + 1


def task_finished(
    required: frozenset[str], status: str, submitted_at: datetime, finished_at: datetime
) -> None:
    """A task reached `status` (terminal); its latency is worked out at `flush`."""
    key = (capability_label(required), status)
    samples = _finished.get(key)
    if samples is None:
        _finished[key] = [(submitted_at, finished_at)]
    elif len(samples) < _MAX_PENDING_SAMPLES:
        samples.append((submitted_at, finished_at))
    else:
        _unsampled[key] = _unsampled.get(key, 0) + 1


def shard_load(shard: int, by_status: Mapping[str, int]) -> None:
    """Queue depth and leases in flight of a shard, from its count of tasks by status."""
    queued = by_status.get("queued", 0)
    leased = by_status.get("assigned", 0) + by_status.get("running", 0)
    tags = {NS: _namespace, "shard": str(shard)}
    _metric(QUEUE_DEPTH).set(queued, tags)
    _metric(LEASES_IN_FLIGHT).set(leased, tags)


# ---- supervision (rare: recorded at once) -------------------------------------------


def child_restarted(supervisor: str, child: str) -> None:
    _metric(RESTARTS).inc(1, {NS: _namespace, "supervisor": supervisor, "child": child})


def breaker_open(supervisor: str, child: str, is_open: bool) -> None:
    tags = {NS: _namespace, "supervisor": supervisor, "child": child}
    _metric(BREAKER_OPEN).set(1 if is_open else 0, tags)


def agents_by_state(supervisor: str, states: Iterable[str]) -> None:
    """Count a supervisor's agent children by state; a state it reported before and no
    child has now goes back to 0 (a gauge not set again would keep its last value)."""
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    seen = _agent_states.setdefault(supervisor, set())
    seen.update(counts)
    gauge = _metric(AGENTS)
    for state in seen:
        gauge.set(counts.get(state, 0), {NS: _namespace, "supervisor": supervisor, "state": state})


# ---- the outbox relay ---------------------------------------------------------------


def events_published(subjects: Iterable[str]) -> None:
    for subject in subjects:
        topic = subject.partition(".")[0]
        _published[topic] = _published.get(topic, 0) + 1


def relay_lag(seconds: float) -> None:
    _metric(RELAY_LAG).set(max(0.0, seconds), {NS: _namespace})


# ---- bad NATS messages (rare: recorded at once) -------------------------------------


def bad_message(kind: str) -> None:
    """A subscriber dropped a message on a subject of `kind` (`inbox`, `discoveries`, ...)."""
    _bad_messages[kind] = _bad_messages.get(kind, 0) + 1
    _metric(BAD_MESSAGES).inc(1, {NS: _namespace, "kind": kind})


def bad_messages() -> dict[str, int]:
    """This process's dropped messages by subject kind, since it started."""
    return dict(_bad_messages)


# ---- HTTP (per request, recorded at once: a request costs far more) ------------------


def http_request(route: str, method: str, status: int, seconds: float) -> None:
    tags = {NS: _namespace, "route": route, "method": method, "status": str(status)}
    _metric(HTTP_REQUESTS).inc(1, tags)
    _metric(HTTP_DURATION).observe(seconds, tags)


# ---- sending what was counted -------------------------------------------------------


def flush() -> None:
    """Hand what was counted since the last flush to Ray."""
    global _submitted, _finished, _unsampled, _published
    submitted, _submitted = _submitted, {}
    finished, _finished = _finished, {}
    unsampled, _unsampled = _unsampled, {}
    published, _published = _published, {}
    for label, count in submitted.items():
        _metric(TASKS_SUBMITTED).inc(count, {NS: _namespace, "capability": label})
    for (label, status), samples in finished.items():
        tags = {NS: _namespace, "capability": label, "status": str(status)}
        _metric(TASKS_FINISHED).inc(len(samples) + unsampled.pop((label, status), 0), tags)
        histogram = _metric(TASK_LATENCY)
        step = -(-len(samples) // OBSERVED_PER_FLUSH)  # an even spread, at most that many
        for submitted_at, finished_at in samples[::step]:
            histogram.observe(max(0.0, (finished_at - submitted_at).total_seconds()), tags)
    for topic, count in published.items():
        _metric(EVENTS_PUBLISHED).inc(count, {NS: _namespace, "topic": topic})


def reporter(
    namespace: str,
    update: Callable[[], Awaitable[None] | None] | None = None,
    every_s: float = REPORT_EVERY_S,
) -> Coroutine[Any, Any, None]:
    """Label this process's series with `namespace` (at once), and return the loop to
    spawn on the actor's event loop: `update` (the caller's gauges), then `flush`, every
    `every_s`. A failing round is logged and the loop goes on."""
    set_namespace(namespace)
    return _report(update, every_s)


async def _report(update: Callable[[], Awaitable[None] | None] | None, every_s: float) -> None:
    warned_at = 0.0
    while True:
        try:
            if update is not None:
                pending = update()
                if pending is not None:
                    await pending
            flush()
        except asyncio.CancelledError:
            raise
        except Exception:
            if time.monotonic() - warned_at > 60:  # a database outage: once a minute
                warned_at = time.monotonic()
                _log.warning("metrics: a report round failed", exc_info=True)
        await asyncio.sleep(every_s)
