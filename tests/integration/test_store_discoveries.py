"""The discoveries repository: stored with their events, filtered, paged."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from runtime.models.events import DiscoveryShared
from runtime.models.records import Discovery
from runtime.store import discoveries

pytestmark = pytest.mark.integration


def new_agent() -> str:
    return f"agent-{uuid.uuid4().hex[:10]}"


async def in_outbox(pool: asyncpg.Pool, event_id: uuid.UUID) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", event_id)


async def test_add_writes_the_discovery_and_its_event(pool: asyncpg.Pool) -> None:
    agent = new_agent()
    found = Discovery(
        agent_id=agent, type="pattern", content="burst of logins", confidence=0.9, data={"n": 3}
    )
    event = DiscoveryShared(
        discovery_id=found.id, agent_id=agent, type="pattern", content=found.content, confidence=0.9
    )
    stored = await discoveries.add(pool, found, events=[event])
    assert stored == found  # confidence reads back as 0.9, not its float32 image
    assert await discoveries.get(pool, found.id) == found
    assert await in_outbox(pool, event.event_id) == 1
    subject = await pool.fetchval("SELECT subject FROM outbox WHERE id = $1", event.event_id)
    assert subject == f"discoveries.{agent}.pattern"


async def test_rolled_back_add_leaves_neither_row_nor_event(pool: asyncpg.Pool) -> None:
    found = Discovery(agent_id=new_agent(), type="pattern", content="c", confidence=0.5)
    event = DiscoveryShared(agent_id=found.agent_id, type="pattern", content="c", confidence=0.5)
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await discoveries.add(conn, found, events=[event])
            raise RuntimeError("the caller's transaction fails")
    assert await discoveries.get(pool, found.id) is None
    assert await in_outbox(pool, event.event_id) == 0


async def test_filters_by_types_and_min_confidence(pool: asyncpg.Pool) -> None:
    agent = new_agent()
    made = {}
    for type_, confidence in [("pattern", 0.9), ("pattern", 0.5), ("anomaly", 0.95), ("note", 1)]:
        d = Discovery(
            agent_id=agent, type=type_, content=f"{type_} {confidence}", confidence=confidence
        )
        made[(type_, confidence)] = (await discoveries.add(pool, d)).id

    async def ids(**filters) -> set[uuid.UUID]:
        return {d.id for d in await discoveries.list_discoveries(pool, agent_id=agent, **filters)}

    assert await ids() == set(made.values())
    assert await ids(types=["pattern", "anomaly"]) == {
        made[("pattern", 0.9)],
        made[("pattern", 0.5)],
        made[("anomaly", 0.95)],
    }
    # 0.9 is stored as a float32: a discovery at exactly the threshold is still included.
    assert await ids(min_confidence=0.9) == {
        made[("pattern", 0.9)],
        made[("anomaly", 0.95)],
        made[("note", 1)],
    }
    assert await ids(types=["pattern"], min_confidence=0.9) == {made[("pattern", 0.9)]}
    assert await ids(types=[]) == set()


async def test_keyset_pages_visit_every_row_once_in_order(pool: asyncpg.Pool) -> None:
    agent = new_agent()
    made = [
        await discoveries.add(
            pool, Discovery(agent_id=agent, type="note", content=str(i), confidence=0.5)
        )
        for i in range(7)
    ]
    seen: list[Discovery] = []
    after = None
    while page := await discoveries.list_discoveries(pool, agent_id=agent, limit=3, after=after):
        seen.extend(page)
        after = (page[-1].created_at, page[-1].id)
    assert seen == sorted(made, key=lambda d: (d.created_at, d.id))


async def test_confidence_reads_back_as_written(pool: asyncpg.Pool) -> None:
    for confidence in (0.1234567, 0.7, 1e-7, 0.0, 1.0):
        found = Discovery(agent_id=new_agent(), type="note", content="c", confidence=confidence)
        assert (await discoveries.add(pool, found)).confidence == confidence
