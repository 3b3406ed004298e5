"""The event stream allows as many consumers as configured, not nats-server 2.15's default
of 1,000: each SSE stream on a durable subject is one consumer (bench/sse.py)."""

from __future__ import annotations

import pytest

from runtime.bus import Bus
from runtime.config import load_settings

pytestmark = pytest.mark.integration


async def test_the_stream_takes_the_configured_consumer_limit_on_create_and_update(
    bus: Bus,
) -> None:
    assert load_settings().stream_max_consumers > 1000
    await bus.ensure_stream(max_age_s=3600, max_consumers=1500)
    assert (await bus.js.stream_info(bus.stream)).config.max_consumers == 1500
    await bus.ensure_stream(max_age_s=3600, max_consumers=4000)  # a stream made before
    assert (await bus.js.stream_info(bus.stream)).config.max_consumers == 4000
