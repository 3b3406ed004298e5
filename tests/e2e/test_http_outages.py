"""The API through a NATS outage: PostgreSQL is the record, so work goes on, readiness
says what is down, and the events written meanwhile arrive once NATS is back."""

from __future__ import annotations

import json

import pytest
from helpers import Listener, wait_until

pytestmark = pytest.mark.integration


def test_nats_down_loses_no_task_and_no_event(http_system, services) -> None:
    assert services.nats is not None, "this test stops the embedded nats-server"
    with http_system.client("write") as rv:
        services.nats.stop()
        try:
            wait_until(lambda: not rv.ready()[0], timeout_s=15)
            _, body = rv.ready()
            assert body["checks"]["nats"] == "not connected"
            assert body["checks"]["postgres"] == "ok"
            task = rv.submit_task({"title": "during the outage", "required_capabilities": ["echo"]})
            done = rv.wait_task(task["id"], timeout_s=60)
            assert done["status"] == "completed"
        finally:
            services.nats.start()
        wait_until(lambda: rv.ready()[0], timeout_s=60, interval_s=0.2)
        listener = Listener(
            rv, "/api/v1/events/stream", subject=f"tasks.{task['id']}.>", last_event_id="0"
        )
        events = listener.take(2, timeout_s=60)
    assert [e.event.rsplit(".", 1)[1] for e in events] == ["assignment", "result"]
    assert json.loads(events[1].data)["status"] == "completed"
