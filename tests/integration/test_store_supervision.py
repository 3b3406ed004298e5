"""The supervision repository: decisions with their events, dynamic children in order."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from runtime.models.enums import SupervisorEventKind
from runtime.models.events import SupervisorDecision
from runtime.store import supervision

pytestmark = pytest.mark.integration


def new_supervisor() -> str:
    return f"sup-{uuid.uuid4().hex[:10]}"


async def in_outbox(pool: asyncpg.Pool, event_id: uuid.UUID) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", event_id)


async def test_record_event_writes_the_decision_and_its_event(pool: asyncpg.Pool) -> None:
    sup = new_supervisor()
    decision = SupervisorDecision(
        supervisor_id=sup, child_id="c1", event=SupervisorEventKind.RESTARTED, reason="crash"
    )
    recorded = await supervision.record_event(
        pool, sup, "restarted", child_id="c1", reason="crash", detail={"n": 1}, events=[decision]
    )
    assert recorded.id is not None
    assert (recorded.event, recorded.child_id, recorded.detail) == (
        SupervisorEventKind.RESTARTED,
        "c1",
        {"n": 1},
    )
    assert await in_outbox(pool, decision.event_id) == 1
    with pytest.raises(ValueError):
        await supervision.record_event(pool, sup, "exploded")


async def test_rolled_back_decision_leaves_neither_row_nor_event(pool: asyncpg.Pool) -> None:
    sup = new_supervisor()
    decision = SupervisorDecision(supervisor_id=sup, event=SupervisorEventKind.ESCALATED)
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await supervision.record_event(conn, sup, "escalated", events=[decision])
            raise RuntimeError("the caller's transaction fails")
    assert await supervision.list_events(pool, supervisor_id=sup) == []
    assert await in_outbox(pool, decision.event_id) == 0


async def test_list_events_filters_and_keeps_the_latest_in_order(pool: asyncpg.Pool) -> None:
    sup, other = new_supervisor(), new_supervisor()
    kinds = ["child_started", "child_exited", "restart_scheduled", "restarted"]
    for kind in kinds:
        await supervision.record_event(pool, sup, kind, child_id="c1")
    await supervision.record_event(pool, sup, "child_started", child_id="c2")
    await supervision.record_event(pool, other, "child_started", child_id="c1")
    c1 = await supervision.list_events(pool, supervisor_id=sup, child_id="c1")
    assert [e.event for e in c1] == kinds
    latest = await supervision.list_events(pool, supervisor_id=sup, limit=2)
    assert [(e.event, e.child_id) for e in latest] == [("restarted", "c1"), ("child_started", "c2")]
    assert len(await supervision.list_events(pool, supervisor_id=other)) == 1


async def test_children_saved_removed_and_listed_in_order(pool: asyncpg.Pool) -> None:
    sup = new_supervisor()
    async with pool.acquire() as conn, conn.transaction():  # one now(): order must still hold
        for child in ["w-3", "w-1", "w-2"]:
            await supervision.save_child(conn, sup, child, {"template": "t", "name": child})
    await supervision.save_child(pool, sup, "w-0", {"template": "t"})
    await supervision.save_child(pool, sup, "w-1", {"template": "t", "v": 2})  # keeps its place
    assert await supervision.children(pool, sup) == [
        ("w-3", {"template": "t", "name": "w-3"}),
        ("w-1", {"template": "t", "v": 2}),
        ("w-2", {"template": "t", "name": "w-2"}),
        ("w-0", {"template": "t"}),
    ]
    assert await supervision.remove_child(pool, sup, "w-1")
    assert not await supervision.remove_child(pool, sup, "w-1")
    assert [c for c, _ in await supervision.children(pool, sup)] == ["w-3", "w-2", "w-0"]
    assert await supervision.children(pool, new_supervisor()) == []
