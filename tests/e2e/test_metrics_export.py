"""rayvisor's metrics on Ray's own Prometheus export, scraped as Prometheus would: each
metric of `runtime.metrics` is there with its labels, and moves as tasks are queued, held,
cancelled, completed and failed, and as an agent is SIGKILLed and restarted.

The session's Ray reports every 2 s (`metrics_report_interval_ms` in tests/conftest.py) and
rayvisor's processes hand their counts to Ray every second: conditions are polled with a
deadline. Every series is selected by this system's `namespace`, so what other systems of
the session exported does not count.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import ray
from helpers import wait_until
from prometheus_client.parser import text_string_to_metric_families

from runtime import metrics as m

pytestmark = pytest.mark.integration

SCRAPE_TIMEOUT_S = 90  # Ray's metrics agent exports late on a loaded machine
POOL = {"supervisor": "pool-echo"}


class Scrape:
    """One scrape of the export, read by exported name and labels."""

    def __init__(self, text: str) -> None:
        self.samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def value(self, name: str, **labels: str) -> float | None:
        """The sum over the series of `name` that carry `labels`; None if there is none."""
        found = [s.value for s in self.samples
                 if s.name == name and labels.items() <= s.labels.items()]  # fmt: skip
        return sum(found) if found else None

    def labels_of(self, name: str, **labels: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples
                if s.name == name and labels.items() <= s.labels.items()]  # fmt: skip


_RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "otel_scope_name",
               "otel_scope_schema_url", "otel_scope_version"}  # fmt: skip


def _export_url() -> str:
    """The metrics export of the session's (one) node, as `ray.nodes()` gives it."""
    node = next(n for n in ray.nodes() if n["Alive"])
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


def _scrape_until(
    condition: Callable[[Scrape], object], namespace: str, timeout_s: float = SCRAPE_TIMEOUT_S
):
    url = _export_url()
    last: list[Scrape] = []

    def check() -> Scrape | None:
        scrape = Scrape(httpx.get(url, timeout=10).text)
        last[:] = [scrape]
        return scrape if condition(scrape) else None

    try:
        return wait_until(check, timeout_s=timeout_s, interval_s=0.5)
    except AssertionError:  # say what the export held
        held = [(s.name, {k: v for k, v in s.labels.items() if k not in _RAY_LABELS}, s.value)
                for s in last[0].samples
                if "rayvisor" in s.name and not s.name.endswith("_bucket")
                and s.labels.get("namespace") == namespace]  # fmt: skip
        raise AssertionError(f"not exported within {timeout_s}s; held: {held!s:.4000}") from None


def _submit(rv: Any, capability: str, **parameters: Any) -> str:
    task = {"title": "metrics", "required_capabilities": [capability], "parameters": parameters}
    return rv.submit_task(task)["id"]


def _at_least(value: float | None, wanted: float) -> bool:
    return value is not None and value >= wanted


def test_task_metrics_move_as_tasks_are_held_queued_cancelled_and_finished(http_system) -> None:
    ns = {"namespace": http_system.settings.namespace}
    shard = {**ns, "shard": "0"}
    nowhere = f"nowhere-{uuid.uuid4().hex[:6]}"  # no agent offers it: its tasks stay queued
    # the session's database holds what other modules' systems left queued (capabilities
    # no agent here offers), and this shard took it over: the depth moves from there
    idle = _scrape_until(
        lambda s: (
            s.value(m.QUEUE_DEPTH.exported, **shard) is not None
            and s.value(m.LEASES_IN_FLIGHT.exported, **shard) == 0
        ),
        ns["namespace"],
    )
    base = idle.value(m.QUEUE_DEPTH.exported, **shard)
    with http_system.client() as rv:
        held = [_submit(rv, "echo", sleep_s=60) for _ in range(2)]  # held by the agents
        stuck = [_submit(rv, nowhere) for _ in range(3)]
        _scrape_until(
            lambda s: (
                s.value(m.QUEUE_DEPTH.exported, **shard) == base + 3
                and s.value(m.LEASES_IN_FLIGHT.exported, **shard) == 2
            ),
            ns["namespace"],
        )
        for task_id in held + stuck:
            rv.cancel_task(task_id)
        finished = m.TASKS_FINISHED.exported
        _scrape_until(
            lambda s: (
                s.value(m.QUEUE_DEPTH.exported, **shard) == base
                and s.value(m.LEASES_IN_FLIGHT.exported, **shard) == 0
                and s.value(finished, **ns, capability=nowhere, status="cancelled") == 3
                and s.value(finished, **ns, capability="echo", status="cancelled") == 2
            ),
            ns["namespace"],
        )

        done = [_submit(rv, "echo", n=i) for i in range(4)]
        failing = _submit(rv, "echo", fail="logical")
        assert {rv.wait_task(t, timeout_s=60)["status"] for t in done} == {"completed"}
        assert rv.wait_task(failing, timeout_s=60)["status"] == "failed"

    echo = {**ns, "capability": "echo"}
    latency = m.TASK_LATENCY.exported.removesuffix("_bucket")
    tasks_route = {**ns, "route": "/api/v1/tasks", "method": "POST", "status": "201"}
    one_task = {**ns, "route": "/api/v1/tasks/{task_id}", "method": "GET", "status": "200"}
    scrape = _scrape_until(
        lambda s: (
            s.value(m.TASKS_SUBMITTED.exported, **echo) == 7
            and s.value(m.TASKS_SUBMITTED.exported, **ns, capability=nowhere) == 3
            and s.value(finished, **echo, status="completed") == 4
            and s.value(finished, **echo, status="failed") == 1
            and s.value(f"{latency}_count", **echo, status="completed") == 4
            and _at_least(s.value(m.EVENTS_PUBLISHED.exported, **ns, topic="tasks"), 10)
            and s.value(m.RELAY_LAG.exported, **ns) is not None
            and _at_least(s.value(m.HTTP_REQUESTS.exported, **tasks_route), 10)
            and _at_least(s.value(m.HTTP_REQUESTS.exported, **one_task), 5)
        ),
        ns["namespace"],
    )
    # every echo task took well under a minute from submit to completed
    assert scrape.value(m.TASK_LATENCY.exported, **echo, status="completed", le="60.0") == 4
    assert scrape.value(m.TASK_LATENCY.exported, **echo, status="completed", le="+Inf") == 4
    assert scrape.value(f"{latency}_count", **echo, status="cancelled") == 2
    durations = m.HTTP_DURATION.exported.removesuffix("_bucket")
    assert _at_least(scrape.value(f"{durations}_count", **tasks_route), 10)
    # routes are templates, never raw paths
    routes = {labels["route"] for labels in scrape.labels_of(m.HTTP_REQUESTS.exported, **ns)}
    assert "/api/v1/tasks/{task_id}/cancel" in routes, routes
    assert not any(task_id in route for route in routes for task_id in done), routes


def _agent_pid(rv: Any, actor_name: str) -> int | None:
    def find(node: dict[str, Any]) -> dict[str, Any] | None:
        if node.get("actor_name") == actor_name:
            return node
        return next(filter(None, (find(c) for c in node.get("children", []))), None)

    node = find(rv.tree())
    return node["pid"] if node and node["state"] == "running" else None


def test_a_sigkilled_agent_counts_as_a_restart_of_its_pool(http_system) -> None:
    ns = {"namespace": http_system.settings.namespace}
    child = {**ns, **POOL, "child": "echo-1"}
    running = {**ns, **POOL, "state": "running"}
    before = _scrape_until(
        lambda s: (
            s.value(m.AGENTS.exported, **running) == 2
            and s.value(m.BREAKER_OPEN.exported, **child) == 0
        ),
        ns["namespace"],
    )
    restarts = before.value(m.RESTARTS.exported, **child) or 0
    with http_system.client() as rv:
        pid = wait_until(lambda: _agent_pid(rv, "agent:echo-1"), timeout_s=30)
        os.kill(pid, signal.SIGKILL)
        after = _scrape_until(
            lambda s: (
                s.value(m.RESTARTS.exported, **child) == restarts + 1
                and s.value(m.AGENTS.exported, **running) == 2
            ),
            ns["namespace"],
        )
        new_pid = wait_until(lambda: _agent_pid(rv, "agent:echo-1"), timeout_s=30)
    assert new_pid != pid
    assert after.value(m.BREAKER_OPEN.exported, **child) == 0
    # its sibling was not restarted
    sibling = {**ns, **POOL, "child": "echo-2"}
    assert after.value(m.RESTARTS.exported, **sibling) == before.value(
        m.RESTARTS.exported, **sibling
    )
