"""Bad NATS messages on every subject rayvisor subscribes to: each one is dropped, counted in
`rayvisor_bad_messages` by its kind and logged without its payload; nothing crashes, and the
good message that follows is handled. The subscribers, from the code (`grep subscribe`):

- `inbox.{stream}.{agent}`: `actors.messaging.Mailbox` (ask, tell); kind `inbox`
- the sender's `_INBOX.*` reply subject: `actors.messaging._send_until_done`; `reply`
- `discoveries.*.{type}`, a JetStream consumer: `actors.discovery_feed.DiscoveryFeed`;
  `discoveries`
- `$KV.{bucket}.{scope}.>`, a key-value watch and get: `runtime.memory.SharedMemory`;
  `memory`
- any event subject: `runtime.bus.Bus.subscribe`; the subject's first token

The SSE routes (`serve/routes/events.py`, `serve/routes/discoveries.py`, over
`serve.streams.subject_stream`) read through the same `runtime.bus.decode`; see
tests/e2e/shared_http/test_http_streams.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import pytest
from helpers import wait_for

from actors.discovery_feed import DiscoveryFeed, DiscoverySubscription
from actors.messaging import Envelope, Mailbox, Reply, _send_until_done, inbox_subject
from runtime import bus as bus_module
from runtime import metrics
from runtime.memory import SharedMemory, bucket_name
from runtime.models.enums import AgentState, MessageKind
from runtime.models.events import AgentHeartbeat, DiscoveryShared
from runtime.models.records import Message

pytestmark = pytest.mark.integration

MARKER = "PAYLOAD-MARKER-7f3a"
LIMIT = 4096  # the subscribers' size limit for this test (MAX_MESSAGE_BYTES is 1 MiB)


def bad_payloads(good: dict[str, Any], *, strict: bool = True) -> list[bytes]:
    """Not JSON, not UTF-8, JSON of the wrong type, right keys with wrong types, a valid
    message past the size limit and (`strict`: envelopes; events ignore keys they do not
    know, so a newer sender's event still reads) an unknown key; each carries MARKER."""
    bad = [
        f"not json {MARKER}".encode(),
        b"\xff\xfe" + MARKER.encode(),
        json.dumps([MARKER, 1]).encode(),
        json.dumps({k: [MARKER] for k in good}).encode(),
        json.dumps({**good, "padding": MARKER * (LIMIT // len(MARKER))}).encode(),
    ]
    return [*bad, json.dumps({**good, MARKER: 1}).encode()] if strict else bad


@pytest.fixture(autouse=True)
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus_module, "MAX_MESSAGE_BYTES", LIMIT)


def dropped(kind: str, before: dict[str, int]) -> int:
    return metrics.bad_messages().get(kind, 0) - before.get(kind, 0)


def no_payload_logged(caplog: pytest.LogCaptureFixture) -> None:
    lines = [r.getMessage() for r in caplog.records if "dropped a bad message" in r.getMessage()]
    assert lines, "no drop was logged"
    assert not any(MARKER in line for line in lines)


async def test_the_inbox_drops_bad_envelopes_and_answers_the_next_ask(
    bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "runtime.bus")
    handled: list[dict[str, Any]] = []

    async def handler(message: Message) -> dict[str, Any]:
        handled.append(message.payload)
        return {"ok": True}

    mailbox = Mailbox("agent-bad-inbox", handler)
    await mailbox.open(bus)
    subject = inbox_subject(bus.stream, "agent-bad-inbox")
    good = Envelope(id=uuid.uuid4(), kind="ask", sender="a", recipient="agent-bad-inbox",
                    payload={"q": 1}, deadline_s=10)  # fmt: skip
    before = metrics.bad_messages()
    try:
        for payload in bad_payloads(good.model_dump(mode="json")):
            await bus.nc.publish(subject, payload)
        answer = await bus.nc.request(subject, good.model_dump_json().encode(), timeout=10)
        assert Reply.model_validate_json(answer.data).status == "received"
        await wait_for(lambda: handled, timeout_s=10)
    finally:
        await mailbox.close()
    assert handled == [{"q": 1}]
    assert dropped("inbox", before) == 6 and mailbox.invalid == 6
    no_payload_logged(caplog)


async def test_a_sender_drops_bad_replies_and_takes_the_good_one(bus) -> None:
    message = Message(sender="a", recipient="agent-bad-reply", kind=MessageKind.REQUEST,
                      payload={"q": 1})  # fmt: skip
    good = Reply(id=message.id, status="answered", payload={"a": 2})

    async def bad_target(msg: Any) -> None:  # answers every send with junk, then the answer
        for payload in bad_payloads(good.model_dump(mode="json")):
            await bus.nc.publish(msg.reply, payload)
        await bus.nc.publish(msg.reply, good.model_dump_json().encode())

    target = await bus.nc.subscribe(inbox_subject(bus.stream, "agent-bad-reply"), cb=bad_target)
    before = metrics.bad_messages()
    try:
        reply = await _send_until_done(bus, message, "ask", time.monotonic() + 10)
    finally:
        await target.unsubscribe()
    assert reply is not None and reply.payload == {"a": 2}
    assert dropped("reply", before) >= 6


async def test_the_discovery_feed_drops_bad_discoveries_and_delivers_the_next(bus) -> None:
    received: list[DiscoveryShared] = []

    async def on_discovery(discovery: DiscoveryShared) -> None:
        received.append(discovery)

    feed = DiscoveryFeed("agent-bad-feed", on_discovery)
    await feed.subscribe(DiscoverySubscription(types=["pattern"]), bus)
    good = DiscoveryShared(agent_id="agent-other", type="pattern", content="burst", confidence=0.9)
    before = metrics.bad_messages()
    try:
        for n, payload in enumerate(bad_payloads(good.model_dump(mode="json"), strict=False)):
            await bus.js.publish(good.subject(), payload, stream=bus.stream,
                                 headers={"Nats-Msg-Id": f"bad-{n}-{uuid.uuid4()}"})  # fmt: skip
        await bus.publish(good)
        await wait_for(lambda: received, timeout_s=15)
        await wait_for(lambda: feed.dropped == 5, timeout_s=10)
    finally:
        await feed.unsubscribe(bus)
    assert [d.discovery_id for d in received] == [good.discovery_id]
    assert dropped("discoveries", before) == 5


async def test_shared_memory_skips_bad_values_in_a_watch_and_writes_over_one(bus) -> None:
    memory = SharedMemory(bus, "team", max_value_bytes=LIMIT)
    await memory.put("seed", 0)  # makes the bucket
    kv = await bus.js.key_value(bucket_name(bus.stream))
    seen: list[tuple[str, Any]] = []

    async def watch() -> None:
        async for change in memory.watch():
            seen.append((change.key, change.value))

    watching = asyncio.get_running_loop().create_task(watch())
    before = metrics.bad_messages()
    try:
        await wait_for(lambda: seen, timeout_s=10)  # the current value came
        # not JSON, not UTF-8, and JSON over the scope's limit (the bucket takes 1 KiB more)
        for payload in [*bad_payloads({"v": 1})[:2], json.dumps(MARKER * 250).encode()]:
            await kv.put("team.bad", payload)
        await memory.put("good", {"v": 1})
        await wait_for(lambda: ("good", {"v": 1}) in seen, timeout_s=10)
        bad = await memory.get("bad")
        assert bad is not None and bad.value is None  # read as nothing, at its revision
        written = await memory.update("bad", lambda old: {"fixed": old is None})
        assert (await memory.get("bad")).value == {"fixed": True}
        assert written.revision > bad.revision
        await wait_for(lambda: ("bad", {"fixed": True}) in seen, timeout_s=10)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    assert [key for key, _ in seen] == ["seed", "good", "bad"]
    assert dropped("memory", before) == 3 + 2  # three in the watch; get, and update's get


async def test_bus_subscribers_drop_bad_events_and_take_the_next(bus) -> None:
    got: list[AgentHeartbeat] = []

    async def on_heartbeat(event: Any, _msg: Any) -> None:
        got.append(event)

    subscription = await bus.subscribe("agents.*.heartbeat", on_heartbeat)
    good = AgentHeartbeat(agent_id="agent-beat", state=AgentState.IDLE)
    before = metrics.bad_messages()
    try:
        for payload in bad_payloads(good.model_dump(mode="json"), strict=False):
            await bus.nc.publish(good.subject(), payload)
        await bus.publish(good)
        await wait_for(lambda: got, timeout_s=10)
    finally:
        await subscription.unsubscribe()
    assert [e.event_id for e in got] == [good.event_id]
    assert dropped("agents", before) == 5 and bus.invalid_payloads == 5
