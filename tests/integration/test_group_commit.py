"""The group committer: one statement per batch, latest state wins, all or nothing; fenced
by each task's lease and by the shard owner's epoch, in PostgreSQL itself; retried while
its connection is gone."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from helpers import wait_for

from runtime.models.events import TaskAssigned
from runtime.models.records import Task
from runtime.store import tasks
from runtime.store.group_commit import Fenced, GroupCommitter

pytestmark = pytest.mark.integration


def state(
    task_id: uuid.UUID, status: str, expect: int = 0, lease: int = 0, **fields: Any
) -> tuple[Any, ...]:
    """(id, expected lease, status, attempt, lease, assigned_to, result, error,
    attempt_errors, not_before, started_at, finished_at)"""
    values = {"assigned_to": "agent-gc", "result": None, "error": None,
              "attempt_errors": [], "not_before": None, "started_at": datetime.now(UTC),
              "finished_at": None, **fields}  # fmt: skip
    return (task_id, expect, status, fields.pop("attempt", 1), lease, *values.values())


async def new_tasks(pool: asyncpg.Pool, n: int) -> list[uuid.UUID]:
    stored = await tasks.insert_many(pool, [Task(title=f"gc{i}") for i in range(n)])
    return [task.id for task, _ in stored]


async def test_concurrent_writes_share_statements_and_the_latest_state_wins(
    pool: asyncpg.Pool,
) -> None:
    ids = await new_tasks(pool, 50)
    committer = GroupCommitter(pool, window_s=0.005)
    try:
        running = [committer.write([state(i, "running")]) for i in ids]
        finished = [
            committer.write(
                [state(i, "completed", result=[1, {"n": n}], attempt_errors=[{"a": 1}])],
                [TaskAssigned(task_id=i, agent_id="agent-gc", attempt=1)],
            )
            for n, i in enumerate(ids)
        ]
        await asyncio.gather(*running, *finished)
    finally:
        await committer.close()
    assert committer.transactions < len(ids)  # batched
    rows = await pool.fetch("SELECT * FROM tasks WHERE id = ANY($1::uuid[])", ids)
    by_id = {row["id"]: row for row in rows}
    for n, task_id in enumerate(ids):
        assert by_id[task_id]["status"] == "completed"
        assert by_id[task_id]["result"] == [1, {"n": n}]  # a list stays a jsonb list
        assert by_id[task_id]["attempt_errors"] == [{"a": 1}]
        assert by_id[task_id]["error"] is None
    assert await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE subject = ANY($1::text[])",
        [f"tasks.{i}.assignment" for i in ids],
    ) == len(ids)  # fmt: skip


async def test_a_failed_batch_fails_every_caller_and_writes_nothing(pool: asyncpg.Pool) -> None:
    (task_id,) = await new_tasks(pool, 1)
    committer = GroupCommitter(pool, window_s=0.005)
    event = TaskAssigned(task_id=task_id, agent_id="agent-gc", attempt=1)
    try:
        results = await asyncio.gather(
            committer.write([state(task_id, "running")], [event]),
            committer.write([state(task_id, "exploded")]),  # refused by the status CHECK
            return_exceptions=True,
        )
        assert all(isinstance(r, asyncpg.CheckViolationError) for r in results)
        assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", task_id) == "pending"
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", event.event_id) == 0
        await committer.write([state(task_id, "running")])  # a fresh connection, and on
    finally:
        await committer.close()
    assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", task_id) == "running"


async def test_a_write_of_a_stale_lease_is_refused_by_postgresql(pool: asyncpg.Pool) -> None:
    """Issued straight at the store: the task holds lease 2, a result of lease 1 changes
    nothing and queues no event, and the committer names it."""
    (task_id,) = await new_tasks(pool, 1)
    committer = GroupCommitter(pool, window_s=0)
    try:
        assert not await committer.write([state(task_id, "assigned", expect=0, lease=1)])
        assert not await committer.write([state(task_id, "assigned", expect=1, lease=2)])
        stale = TaskAssigned(task_id=task_id, agent_id="agent-gc", attempt=1, lease=1)
        refused = await committer.write(
            [state(task_id, "completed", expect=1, lease=1, result="late")], [stale]
        )
    finally:
        await committer.close()
    assert refused == {task_id}
    row = await pool.fetchrow("SELECT status, lease, result FROM tasks WHERE id = $1", task_id)
    assert (row["status"], row["lease"], row["result"]) == ("assigned", 2, None)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", stale.event_id) == 0
    assert await tasks.update(pool, task_id, expect_lease=1, status="completed") is None


async def test_an_older_owner_of_the_shard_cannot_commit(pool: asyncpg.Pool) -> None:
    (task_id,) = await new_tasks(pool, 1)
    shard = 900 + uuid.uuid4().int % 1000
    take = (
        "INSERT INTO shard_owners (shard, epoch, owner) VALUES ($1, 1, 'test')"
        " ON CONFLICT (shard) DO UPDATE SET epoch = shard_owners.epoch + 1 RETURNING epoch"
    )
    old_epoch = await pool.fetchval(take, shard)
    new_epoch = await pool.fetchval(take, shard)
    old = GroupCommitter(pool, window_s=0, owner=(shard, old_epoch))
    new = GroupCommitter(pool, window_s=0, owner=(shard, new_epoch))
    try:
        event = TaskAssigned(task_id=task_id, agent_id="agent-gc", attempt=1, lease=1)
        with pytest.raises(Fenced):
            await old.write([state(task_id, "assigned", lease=1)], [event])
        assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", task_id) == "pending"
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", event.event_id) == 0
        assert not await new.write([state(task_id, "assigned", lease=1)])
    finally:
        await old.close()
        await new.close()
    assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", task_id) == "assigned"


async def test_a_batch_whose_connection_dies_is_written_on_a_new_one(pool: asyncpg.Pool) -> None:
    ids = await new_tasks(pool, 2)
    committer = GroupCommitter(pool, window_s=0)
    try:
        await committer.write([state(ids[0], "queued")])
        pid = committer._conn.get_server_pid()  # the connection the committer keeps
        await pool.execute("SELECT pg_terminate_backend($1)", pid)
        await wait_for(lambda: _backend_gone(pool, pid), timeout_s=10)
        await committer.write([state(ids[1], "queued")])
    finally:
        await committer.close()
    assert committer.retries >= 1
    statuses = await pool.fetch("SELECT status FROM tasks WHERE id = ANY($1::uuid[])", ids)
    assert [r["status"] for r in statuses] == ["queued", "queued"]


async def _backend_gone(pool: asyncpg.Pool, pid: int) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
