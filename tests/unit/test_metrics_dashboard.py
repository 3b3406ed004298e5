"""The metric definitions and the Grafana dashboard agree: every metric `runtime.metrics`
defines is charted, under the name Ray's Prometheus export gives it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "rayvisor.json"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]


def test_every_metric_is_charted_under_its_exported_name() -> None:
    expressions = _expressions()
    for definition in metrics.DEFINITIONS:
        token = re.compile(rf"(?<![\w:]){re.escape(definition.exported)}(?![\w:])")
        assert any(token.search(e) for e in expressions), definition.exported


def test_the_dashboard_asks_for_a_prometheus_data_source_and_a_namespace() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    for expression in _expressions():
        assert 'namespace=~"$namespace"' in expression, expression


def test_names_are_unique_and_every_series_names_its_namespace() -> None:
    names = [d.name for d in metrics.DEFINITIONS]
    assert len(names) == len(set(names))
    for definition in metrics.DEFINITIONS:
        assert definition.labels[0] == "namespace", definition.name
        assert definition.name.startswith("rayvisor_"), definition.name
        assert (definition.kind == "histogram") == bool(definition.buckets), definition.name
    assert metrics.RESTARTS.exported == "ray_rayvisor_restarts_total"
    assert metrics.TASK_LATENCY.exported == "ray_rayvisor_task_latency_seconds_bucket"
    assert metrics.QUEUE_DEPTH.exported == "ray_rayvisor_queue_depth"


def test_latency_buckets_cover_a_millisecond_to_ten_minutes() -> None:
    buckets = metrics.LATENCY_BUCKETS_S
    assert list(buckets) == sorted(set(buckets))
    assert buckets[0] == 0.001 and buckets[-1] == 600.0


def test_a_capability_label_is_the_sorted_capabilities_or_any() -> None:
    assert metrics.capability_label(frozenset({"summarize", "echo"})) == "echo,summarize"
    assert metrics.capability_label(frozenset()) == "any"


def test_importing_the_metrics_module_loads_nothing_of_ray() -> None:
    code = "import sys, runtime.metrics; print(any(m.split('.')[0] == 'ray' for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
