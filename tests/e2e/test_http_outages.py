"""The API through a NATS or a PostgreSQL outage. Without NATS, PostgreSQL is the record,
so work goes on, readiness says what is down, and the events written meanwhile arrive once
NATS is back. Without PostgreSQL, nothing can be recorded: submits are refused with 503
and `Retry-After`, and what was in flight completes once it is back."""

from __future__ import annotations

import json

import pytest
from helpers import Listener, wait_until

pytestmark = pytest.mark.integration

READY_AGAIN_S = 15
"""The bound on /readyz turning green after a store is back (~0.3-1 s measured; the rest
is room for a loaded 2-core machine)."""


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
        # the client retries every 0.25 s: ready again within READY_AGAIN_S
        wait_until(lambda: rv.ready()[0], timeout_s=READY_AGAIN_S, interval_s=0.2)
        listener = Listener(
            rv, "/api/v1/events/stream", subject=f"tasks.{task['id']}.>", last_event_id="0"
        )
        events = listener.take(2, timeout_s=60)
    assert [e.event.rsplit(".", 1)[1] for e in events] == ["assignment", "result"]
    assert json.loads(events[1].data)["status"] == "completed"


def test_postgres_down_answers_503_and_loses_no_task(http_system, services) -> None:
    """While PostgreSQL is down a submit is refused with 503 + Retry-After (never a 500 or
    a hang), readiness names PostgreSQL, and a task running when it went down completes
    exactly once after it is back."""
    assert services.postgres is not None, "this test stops the embedded PostgreSQL"
    with http_system.client("write") as rv, http_system.raw() as raw:
        # a key no request of this module used: not cached, so each request looks it up
        auth = {"Authorization": f"Bearer {http_system.keys['unlimited']}"}
        running = rv.submit_task(
            {"title": "in flight", "required_capabilities": ["echo"],
             "parameters": {"sleep_s": 3}},
        )  # fmt: skip
        wait_until(lambda: rv.get_task(running["id"])["status"] == "running", timeout_s=30)
        services.postgres.stop()
        try:
            wait_until(lambda: not rv.ready()[0], timeout_s=15)
            _, body = rv.ready()
            assert body["checks"]["postgres"].startswith("unreachable")

            # more than the bad-key burst (20): a lookup PostgreSQL could not answer is no
            # sign of a bad key, so the client is not locked out with 429s either
            answers = [
                raw.post(
                    "/api/v1/tasks",
                    json={"title": "during the outage", "required_capabilities": ["echo"]},
                    headers={**auth, "Idempotency-Key": "pg-outage-1"},
                )
                for _ in range(25)
            ]
            assert [r.status_code for r in answers] == [503] * 25, answers[-1].text
            assert {r.headers.get("Retry-After") for r in answers} == {"1"}
            assert {r.headers["content-type"] for r in answers} == {"application/problem+json"}
        finally:
            services.postgres.start()
        # ready again within READY_AGAIN_S of PostgreSQL's return (the pool reconnects at
        # its next acquire)
        wait_until(lambda: rv.ready()[0], timeout_s=READY_AGAIN_S, interval_s=0.2)
        done = rv.wait_task(running["id"], timeout_s=60)
        assert done["status"] == "completed"
        assert done["attempt"] == 1, "the task in flight ran again"
        # the same key once PostgreSQL is back: accepted once
        again = rv.submit_task(
            {"title": "during the outage", "required_capabilities": ["echo"]},
            idempotency_key="pg-outage-1",
        )
        assert rv.wait_task(again["id"], timeout_s=60)["status"] == "completed"
