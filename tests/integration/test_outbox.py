"""The outbox relay under a NATS outage: every event reaches the stream once, in order."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from helpers import wait_for

from runtime.bus import Bus, OutboxRelay
from runtime.models.enums import SupervisorEventKind
from runtime.models.events import SupervisorDecision
from runtime.services import EmbeddedNats
from runtime.store import outbox

pytestmark = pytest.mark.integration

EVENTS = 1000


def decision(n: int) -> SupervisorDecision:
    return SupervisorDecision(
        supervisor_id="sup-outbox",
        child_id=f"child-{n}",
        event=SupervisorEventKind.RESTARTED,
        reason=f"event {n}",
    )


async def stream_ids(bus: Bus) -> list[str]:
    info = await bus.js.stream_info(bus.stream)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(bus.stream, seq)
        ids.append(msg.headers["Nats-Msg-Id"])
    return ids


@pytest.fixture
async def own_nats(tmp_path: Path):
    """A nats-server of this test's own, so stopping it disturbs no other test."""
    server = EmbeddedNats(tmp_path)
    url = server.start()
    yield server, url
    server.stop()


async def test_outage_loses_nothing_and_duplicates_nothing(
    pool: asyncpg.Pool, own_nats: tuple[EmbeddedNats, str]
) -> None:
    server, url = own_nats
    bus = await Bus.connect(url, stream="OUTBOX_TEST")
    await bus.ensure_stream(max_age_s=3600)
    relay = OutboxRelay(pool, bus, batch_size=50, poll_s=0.05, publish_timeout_s=0.5)
    stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    written: list[str] = []

    async def write(first: int, last: int) -> None:
        for start in range(first, last, 10):
            events = [decision(n) for n in range(start, min(start + 10, last))]
            async with pool.acquire() as conn, conn.transaction():
                await outbox.add(conn, events)
            written.extend(str(e.event_id) for e in events)

    try:
        await write(0, 300)
        await wait_for(lambda: relay.published >= 100, timeout_s=30)
        await asyncio.to_thread(server.stop)
        await write(300, 700)  # written while NATS is down: must wait in the outbox
        await wait_for(lambda: relay.failures > 0, timeout_s=30)
        assert await outbox.pending_count(pool) > 0
        await asyncio.to_thread(server.start)
        await write(700, EVENTS)
        await wait_for(lambda: _pending_is_zero(pool), timeout_s=60)
        ids = await stream_ids(bus)
    finally:
        stop.set()
        relay.wake()
        await relay_task
        await bus.js.delete_stream("OUTBOX_TEST")
        await bus.close()

    assert len(ids) == EVENTS
    assert ids == written  # exactly those ids, in the order they were written


async def _pending_is_zero(pool: asyncpg.Pool) -> bool:
    return await outbox.pending_count(pool) == 0


async def test_event_is_published_with_its_id_and_fields(pool: asyncpg.Pool, bus: Bus) -> None:
    received: list[SupervisorDecision] = []

    async def collect(event, msg) -> None:
        received.append(event)

    await bus.subscribe("supervisors.*.events", collect)
    relay = OutboxRelay(pool, bus)
    event = decision(42)
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, [event])
    assert await relay.publish_pending() == 1
    await wait_for(lambda: received, timeout_s=10)
    got = received[0]
    assert got.event_id == event.event_id
    assert got.child_id == "child-42"
    assert got.event == SupervisorEventKind.RESTARTED
    assert got.subject() == "supervisors.sup-outbox.events"


async def test_rolled_back_change_publishes_nothing(pool: asyncpg.Pool, bus: Bus) -> None:
    before = await pool.fetchval("SELECT count(*) FROM outbox")
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, [decision(uuid.uuid4().int % 1000)])
            raise RuntimeError("the state change failed")
    assert await pool.fetchval("SELECT count(*) FROM outbox") == before
