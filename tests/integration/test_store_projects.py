"""The projects repository: round trips, keyset pages, status changes with their events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from runtime.models.enums import ProjectStatus
from runtime.models.events import ProjectCompleted
from runtime.models.records import Project
from runtime.store import projects

pytestmark = pytest.mark.integration


async def in_outbox(pool: asyncpg.Pool, event_id: uuid.UUID) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", event_id)


async def test_create_and_get_round_trip(pool: asyncpg.Pool) -> None:
    project = Project(name="audit", requirements=["parse logs", {"step": "report"}])
    stored = await projects.create(pool, project)
    assert stored == project
    assert await projects.get(pool, project.id) == project
    assert await projects.get(pool, uuid.uuid4()) is None


async def test_keyset_pages_visit_every_row_once_in_order(pool: asyncpg.Pool) -> None:
    base = datetime(2020, 1, 1, tzinfo=UTC)
    # Pairs share a created_at, so the id must break the tie.
    mine = [
        await projects.create(pool, Project(name=f"p{i}", created_at=base + timedelta(i // 2)))
        for i in range(9)
    ]
    seen: list[Project] = []
    after = None
    while page := await projects.list_projects(pool, limit=4, after=after):
        seen.extend(page)
        after = (page[-1].created_at, page[-1].id)
    keys = [(p.created_at, p.id) for p in seen]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    mine_seen = [p for p in seen if p.id in {m.id for m in mine}]
    assert mine_seen == sorted(mine, key=lambda p: (p.created_at, p.id))


async def test_list_by_status(pool: asyncpg.Pool) -> None:
    project = await projects.create(pool, Project(name="planned", status=ProjectStatus.PLANNING))
    planning = await projects.list_projects(pool, status="planning", limit=1000)
    assert project.id in {p.id for p in planning}
    assert all(p.status == ProjectStatus.PLANNING for p in planning)


async def test_set_status_writes_result_and_event_together(pool: asyncpg.Pool) -> None:
    project = await projects.create(pool, Project(name="done soon"))
    event = ProjectCompleted(project_id=project.id, result={"tasks": 3})
    done = await projects.set_status(
        pool, project.id, ProjectStatus.COMPLETED, result={"tasks": 3}, events=[event]
    )
    assert done is not None
    assert done.status == ProjectStatus.COMPLETED
    assert done.result == {"tasks": 3}
    assert done.completed_at is not None
    assert await in_outbox(pool, event.event_id) == 1
    row = await pool.fetchrow("SELECT subject, payload FROM outbox WHERE id = $1", event.event_id)
    assert row["subject"] == f"projects.{project.id}.completed"
    assert row["payload"]["result"] == {"tasks": 3}


async def test_set_status_without_result_keeps_the_result(pool: asyncpg.Pool) -> None:
    project = await projects.create(pool, Project(name="kept", result={"partial": True}))
    running = await projects.set_status(pool, project.id, "running")
    assert running is not None
    assert running.result == {"partial": True}
    assert running.completed_at is None


async def test_rolled_back_status_change_leaves_neither_row_nor_event(pool: asyncpg.Pool) -> None:
    project = await projects.create(pool, Project(name="rolled back"))
    event = ProjectCompleted(project_id=project.id)
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await projects.set_status(conn, project.id, "completed", events=[event])
            raise RuntimeError("the caller's transaction fails")
    assert (await projects.get(pool, project.id)).status == ProjectStatus.PENDING
    assert await in_outbox(pool, event.event_id) == 0


async def test_missing_project_changes_nothing_and_queues_nothing(pool: asyncpg.Pool) -> None:
    missing = uuid.uuid4()
    event = ProjectCompleted(project_id=missing)
    assert await projects.set_status(pool, missing, "completed", events=[event]) is None
    assert await in_outbox(pool, event.event_id) == 0
