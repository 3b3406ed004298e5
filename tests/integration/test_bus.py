"""The bus: durable events deduplicated by id, bad payloads counted and skipped."""

from __future__ import annotations

import pytest
from helpers import wait_for
from nats.errors import Error as NatsError

from runtime import telemetry
from runtime.bus import Bus, subject_matches
from runtime.models.events import AgentHeartbeat, DiscoveryShared

pytestmark = pytest.mark.integration


def discovery(**overrides) -> DiscoveryShared:
    fields = {
        "discovery_id": "7b0d1b7e-9a52-4bd2-9b67-1ea7d1f0a9c1",
        "agent_id": "log_analysis-1",
        "type": "pattern",
        "content": "burst of failed logins from 173.234.31.186",
        "confidence": 0.9,
    }
    return DiscoveryShared(**{**fields, **overrides})


async def test_durable_event_is_stored_once_even_if_published_twice(bus: Bus) -> None:
    event = discovery()
    await bus.publish(event)
    await bus.publish(event)  # a retry after a lost ack
    info = await bus.js.stream_info(bus.stream)
    assert info.state.messages == 1
    stored = await bus.js.get_msg(bus.stream, info.state.last_seq)
    assert stored.subject == "discoveries.log_analysis-1.pattern"
    assert stored.headers["Nats-Msg-Id"] == str(event.event_id)
    assert DiscoveryShared.from_json(stored.data).content == event.content


async def test_heartbeats_are_not_kept_in_the_stream(bus: Bus) -> None:
    received = []

    async def collect(event, msg) -> None:
        received.append(event)

    await bus.subscribe("agents.*.heartbeat", collect)
    await bus.publish(AgentHeartbeat(agent_id="a-1", state="idle", loop_lag_ms=1.0))
    await wait_for(lambda: received, timeout_s=10)
    info = await bus.js.stream_info(bus.stream)
    assert info.state.messages == 0
    assert received[0].agent_id == "a-1"


async def test_invalid_payload_is_counted_and_the_subscriber_keeps_going(bus: Bus) -> None:
    received: list[DiscoveryShared] = []

    async def collect(event, msg) -> None:
        received.append(event)

    await bus.subscribe("discoveries.>", collect)
    await bus.nc.publish("discoveries.a-1.pattern", b"{not json")
    await bus.nc.publish("discoveries.a-1.pattern", b'{"schema": 1, "confidence": 7}')
    good = discovery(agent_id="a-1")
    await bus.publish(good)
    await wait_for(lambda: received, timeout_s=10)
    assert bus.invalid_payloads == 2
    assert [e.event_id for e in received] == [good.event_id]


async def test_trace_context_travels_in_headers(bus: Bus, otlp: object) -> None:
    telemetry.setup("pytest")  # the session exports to `otlp`: tracing is on
    with telemetry.span("submit") as span:
        assert span is not None
        await bus.publish(discovery(type="trace_check"))
        trace_id = format(span.get_span_context().trace_id, "032x")
    info = await bus.js.stream_info(bus.stream)
    stored = await bus.js.get_msg(bus.stream, info.state.last_seq)
    assert trace_id in stored.headers["traceparent"]


def test_subject_matching() -> None:
    assert subject_matches("tasks.>", "tasks.1.result")
    assert subject_matches("tasks.*.result", "tasks.1.result")
    assert not subject_matches("tasks.*.result", "tasks.1.progress")
    assert not subject_matches("tasks.>", "tasks")
    assert not subject_matches("agents.*.status", "agents.a.b.status")


async def test_publish_many_keeps_order_and_reports_each_ack(bus: Bus) -> None:
    events = [discovery(content=f"finding {n}") for n in range(20)]
    messages = [(e.subject(), e.to_json(), str(e.event_id), None) for e in events]

    assert await bus.publish_many(messages) == [None] * 20
    assert await bus.publish_many(messages[:5]) == [None] * 5  # repeats: acked, deduplicated

    info = await bus.js.stream_info(bus.stream)
    stored = [await bus.js.get_msg(bus.stream, seq) for seq in range(1, info.state.last_seq + 1)]
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [str(e.event_id) for e in events]


async def test_publish_many_stops_at_a_message_it_cannot_send(bus: Bus) -> None:
    closed = await Bus.connect(bus.nc.connected_url.geturl(), stream=bus.stream)
    await closed.nc.close()
    events = [discovery(content=f"lost {n}") for n in range(3)]
    outcomes = await closed.publish_many([(e.subject(), e.to_json(), str(e.event_id), None)
                                          for e in events])  # fmt: skip
    assert len(outcomes) == 1 and isinstance(outcomes[0], NatsError)
