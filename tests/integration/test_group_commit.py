"""The group committer: one statement per batch, latest state wins, all or nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from runtime.models.events import TaskAssigned
from runtime.models.records import Task
from runtime.store import tasks
from runtime.store.group_commit import GroupCommitter

pytestmark = pytest.mark.integration


def state(task_id: uuid.UUID, status: str, **fields: Any) -> tuple[Any, ...]:
    """(id, status, attempt, assigned_to, result, error, attempt_errors, not_before,
    started_at, finished_at)"""
    values = {"attempt": 1, "assigned_to": "agent-gc", "result": None, "error": None,
              "attempt_errors": [], "not_before": None, "started_at": datetime.now(UTC),
              "finished_at": None, **fields}  # fmt: skip
    return (task_id, status, *values.values())


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
