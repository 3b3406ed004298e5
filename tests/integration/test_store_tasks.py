"""The tasks repository: idempotent submits, keyset pages, fenced updates, leases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from runtime.errors import LogicalError
from runtime.models.enums import TaskStatus
from runtime.models.events import TaskAssigned, TaskResult
from runtime.models.records import Project, Task
from runtime.store import projects, tasks

pytestmark = pytest.mark.integration


async def in_outbox(pool: asyncpg.Pool, event_id: uuid.UUID) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", event_id)


async def new_project(pool: asyncpg.Pool) -> uuid.UUID:
    return (await projects.create(pool, Project(name="scope"))).id


async def test_insert_with_a_used_key_returns_the_first_task(pool: asyncpg.Pool) -> None:
    key = f"submit-{uuid.uuid4()}"
    first, created = await tasks.insert(pool, Task(title="first", idempotency_key=key))
    assert created
    again, created_again = await tasks.insert(pool, Task(title="second", idempotency_key=key))
    assert not created_again
    assert again == first
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE idempotency_key = $1", key) == 1


async def test_insert_many_is_idempotent_per_key(pool: asyncpg.Pool) -> None:
    used = f"used-{uuid.uuid4()}"
    twice = f"twice-{uuid.uuid4()}"
    existing, _ = await tasks.insert(pool, Task(title="existing", idempotency_key=used))
    batch = [
        Task(title="plain"),
        Task(title="dup of existing", idempotency_key=used),
        Task(title="first of two", idempotency_key=twice),
        Task(title="second of two", idempotency_key=twice),
    ]
    results = await tasks.insert_many(pool, batch)
    assert [created for _, created in results] == [True, False, True, False]
    assert results[0][0] == batch[0]
    assert results[1][0] == existing
    assert results[2][0] == batch[2]
    assert results[3][0].id == batch[2].id
    ids = [t.id for t in batch]
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE id = ANY($1)", ids) == 2
    assert await tasks.get(pool, batch[0].id) == batch[0]
    assert await tasks.insert_many(pool, []) == []


async def test_keyset_pages_visit_every_row_once_in_order(pool: asyncpg.Pool) -> None:
    project_id = await new_project(pool)
    base = datetime(2021, 6, 1, tzinfo=UTC)
    # Triples share a created_at, so the id must break the tie.
    batch = [
        Task(title=f"t{i}", project_id=project_id, created_at=base + timedelta(seconds=i // 3))
        for i in range(25)
    ]
    await tasks.insert_many(pool, batch)
    seen: list[Task] = []
    after = None
    while page := await tasks.list_tasks(pool, project_id=project_id, limit=4, after=after):
        seen.extend(page)
        after = (page[-1].created_at, page[-1].id)
    assert [t.id for t in seen] == [t.id for t in sorted(batch, key=lambda t: (t.created_at, t.id))]

    newest: list[Task] = []
    after = None
    while page := await tasks.list_tasks(
        pool, project_id=project_id, limit=4, after=after, newest_first=True
    ):
        newest.extend(page)
        after = (page[-1].created_at, page[-1].id)
    assert [t.id for t in newest] == [t.id for t in reversed(seen)]


async def test_list_filters_by_status_and_capability(pool: asyncpg.Pool) -> None:
    project_id = await new_project(pool)
    logs = Task(title="logs", project_id=project_id, required_capabilities=["log_analysis", "x"])
    queued = Task(title="queued", project_id=project_id, status=TaskStatus.QUEUED)
    await tasks.insert_many(pool, [logs, queued])
    by_cap = await tasks.list_tasks(pool, capability="log_analysis", project_id=project_id)
    assert [t.id for t in by_cap] == [logs.id]
    by_status = await tasks.list_tasks(pool, status="queued", project_id=project_id)
    assert [t.id for t in by_status] == [queued.id]


async def test_dependents_and_leases(pool: asyncpg.Pool) -> None:
    parent = Task(title="parent")
    child = Task(title="child", dependencies=[parent.id])
    other = Task(title="other", dependencies=[uuid.uuid4()])
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    leased = Task(title="leased", status=TaskStatus.RUNNING, attempt=1, assigned_to=agent)
    done = Task(title="done", status=TaskStatus.COMPLETED, attempt=1, assigned_to=agent)
    await tasks.insert_many(pool, [parent, child, other, leased, done])
    assert [t.id for t in await tasks.dependents(pool, parent.id)] == [child.id]
    assert [t.id for t in await tasks.leased_by(pool, agent)] == [leased.id]


async def test_counts_by_status_names_every_status(pool: asyncpg.Pool) -> None:
    before = await tasks.counts_by_status(pool)
    assert set(before) == {s.value for s in TaskStatus}
    await tasks.insert_many(pool, [Task(title="t", status=TaskStatus.CANCELLED) for _ in range(3)])
    after = await tasks.counts_by_status(pool)
    assert after["cancelled"] == before["cancelled"] + 3
    assert after["pending"] == before["pending"]


async def test_fenced_update_refuses_a_stale_attempt_and_changes_nothing(
    pool: asyncpg.Pool,
) -> None:
    task, _ = await tasks.insert(
        pool, Task(title="leased", status=TaskStatus.RUNNING, attempt=2, assigned_to="a-1")
    )
    stale_event = TaskResult(task_id=task.id, status=TaskStatus.COMPLETED, attempt=1)
    refused = await tasks.update(
        pool,
        task.id,
        expect_attempt=1,
        events=[stale_event],
        status=TaskStatus.COMPLETED,
        result={"late": True},
    )
    assert refused is None
    assert await tasks.get(pool, task.id) == task
    assert await in_outbox(pool, stale_event.event_id) == 0

    event = TaskResult(task_id=task.id, status=TaskStatus.COMPLETED, attempt=2, result=[1])
    done = await tasks.update(
        pool, task.id, expect_attempt=2, events=[event], status="completed", result=[1]
    )
    assert done is not None
    assert (done.status, done.result) == (TaskStatus.COMPLETED, [1])
    assert done.updated_at > task.updated_at
    assert await in_outbox(pool, event.event_id) == 1


async def test_update_sets_json_and_array_columns(pool: asyncpg.Pool) -> None:
    task, _ = await tasks.insert(pool, Task(title="retry me"))
    errors = [{"category": "transient", "reason": "timeout"}]
    updated = await tasks.update(
        pool,
        task.id,
        status=TaskStatus.QUEUED,
        attempt_errors=errors,
        error={"reason": "timeout"},
        required_capabilities=["a", "b"],
    )
    assert updated is not None
    assert updated.attempt_errors == errors
    assert updated.error == {"reason": "timeout"}
    assert updated.required_capabilities == ["a", "b"]
    assert await tasks.update(pool, uuid.uuid4(), status="queued") is None


async def test_update_refuses_unknown_fields(pool: asyncpg.Pool) -> None:
    task, _ = await tasks.insert(pool, Task(title="t"))
    with pytest.raises(ValueError, match="colour"):
        await tasks.update(pool, task.id, colour="red")
    with pytest.raises(ValueError, match="id"):
        await tasks.update(pool, task.id, id=uuid.uuid4())
    with pytest.raises(ValueError):
        await tasks.update(pool, task.id)


async def test_rolled_back_update_leaves_neither_row_nor_event(pool: asyncpg.Pool) -> None:
    task, _ = await tasks.insert(pool, Task(title="t", status=TaskStatus.QUEUED))
    event = TaskAssigned(task_id=task.id, agent_id="a-2", attempt=1)
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            updated = await tasks.update(
                conn, task.id, events=[event], status="assigned", attempt=1, assigned_to="a-2"
            )
            assert updated is not None
            assert await conn.fetchval("SELECT count(*) FROM outbox WHERE id = $1", event.event_id)
            raise RuntimeError("the batch fails")
    assert await tasks.get(pool, task.id) == task
    assert await in_outbox(pool, event.event_id) == 0


async def test_insert_many_is_all_or_nothing(pool: asyncpg.Pool) -> None:
    good = Task(title="good")
    orphan = Task(title="unknown parent", parent_id=uuid.uuid4())
    with pytest.raises(LogicalError, match="parent_id"):
        await tasks.insert_many(pool, [good, orphan])
    assert await tasks.get(pool, good.id) is None


async def test_a_task_id_submitted_again_returns_the_stored_task(pool: asyncpg.Pool) -> None:
    """A submit retried after its answer was lost: the stored task, not a second one."""
    ((first, created),) = await tasks.insert_many(pool, [Task(title="first")])
    assert created
    again = Task(title="sent again", id=first.id)
    fresh = Task(title="fresh")
    answers = await tasks.insert_many(pool, [again, fresh])
    assert [(t.id, t.title, new) for t, new in answers] == [
        (first.id, "first", False),
        (fresh.id, "fresh", True),
    ]


async def test_an_unknown_parent_or_project_is_refused_naming_the_field(pool) -> None:
    for field in ("parent_id", "project_id"):
        task = Task(title="orphan", **{field: uuid.uuid4()})
        with pytest.raises(LogicalError, match=field):
            await tasks.insert_many(pool, [Task(title="sibling"), task])
        assert await tasks.get(pool, task.id) is None
