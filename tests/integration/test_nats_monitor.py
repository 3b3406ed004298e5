"""`serve.nats_monitor` against a real nats-server's `/varz`, and what the metrics route says
when it has no monitoring endpoint or the endpoint does not answer."""

from __future__ import annotations

import dataclasses
from typing import Any

import nats
import pytest
from helpers import free_port

from runtime.config import load_settings
from serve.nats_monitor import NatsMonitor, NatsSample, rates_between
from serve.routes.metrics import NO_MONITOR, _nats
from serve.system import System

pytestmark = pytest.mark.integration


async def test_rates_are_the_servers_counts_over_the_interval(services: Any) -> None:
    monitor = NatsMonitor(services.nats_monitor_url, min_interval_s=0)
    nc = await nats.connect(services.nats_url)
    try:
        first, rates = await monitor.figures()
        assert rates is None  # one sample: no interval yet
        for _ in range(500):
            await nc.publish("rayvisor.test.monitor", b"y" * 10)
        await nc.flush()
        second, rates = await monitor.figures()
    finally:
        await nc.close()
        await monitor.close()
    assert second.in_msgs - first.in_msgs >= 500
    assert rates is not None and rates.interval_s > 0
    assert rates.in_msgs_per_s * (second.at - first.at) == pytest.approx(
        second.in_msgs - first.in_msgs, rel=1e-3
    )


def test_no_rates_across_a_server_restart() -> None:
    earlier = NatsSample(10.0, "A", 100, 50, 1000, 500, 3)
    later = dataclasses.replace(earlier, at=12.0, in_msgs=300, in_bytes=3000)
    rates = rates_between(earlier, later)
    assert rates is not None
    assert (rates.interval_s, rates.in_msgs_per_s, rates.in_bytes_per_s) == (2.0, 100.0, 1000.0)
    assert rates.out_msgs_per_s == 0.0
    assert rates_between(earlier, dataclasses.replace(later, server_id="B")) is None
    assert rates_between(earlier, dataclasses.replace(later, in_msgs=5)) is None


async def test_the_route_says_why_the_server_figures_are_missing(
    services: Any, database_url: str
) -> None:
    base = {"database_url": database_url, "nats_url": services.nats_url, "home": services.home}
    unset = await System.connect(load_settings(**base))
    try:
        figures = await _nats(unset)
    finally:
        await unset.close()
    assert figures.connected and figures.monitor_url is None
    assert figures.monitor_error == NO_MONITOR
    assert figures.in_msgs is None and figures.in_msgs_per_s is None

    nowhere = f"http://127.0.0.1:{free_port()}"
    silent = await System.connect(load_settings(**base, nats_monitor_url=nowhere))
    try:
        figures = await _nats(silent)
    finally:
        await silent.close()
    assert figures.monitor_url == nowhere
    assert figures.monitor_error is not None and f"{nowhere}/varz" in figures.monitor_error
    assert figures.in_msgs is None and figures.interval_s is None
