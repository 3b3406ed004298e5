"""The tool executions repository: a call is finished once, with its duration."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import pytest

from runtime.models.enums import ToolStatus
from runtime.models.records import Task, ToolExecution, utcnow
from runtime.store import tasks, tools

pytestmark = pytest.mark.integration


async def test_finish_records_outcome_and_duration_once(pool: asyncpg.Pool) -> None:
    started = utcnow() - timedelta(milliseconds=250)
    call = await tools.start(
        pool, ToolExecution(tool="grep", agent_id="a-1", input={"q": "x"}, started_at=started)
    )
    assert call.status == ToolStatus.RUNNING
    done = await tools.finish(pool, call.id, "succeeded", output={"hits": 2})
    assert done is not None
    assert (done.status, done.output, done.error) == (ToolStatus.SUCCEEDED, {"hits": 2}, None)
    assert done.finished_at is not None
    assert done.duration_ms >= 250
    assert await tools.finish(pool, call.id, "failed", error="late report") is None
    assert await tools.finish(pool, uuid.uuid4(), "failed") is None


async def test_finish_never_reports_a_negative_duration(pool: asyncpg.Pool) -> None:
    ahead = utcnow() + timedelta(seconds=5)  # a caller whose clock runs ahead
    call = await tools.start(pool, ToolExecution(tool="t", started_at=ahead))
    done = await tools.finish(pool, call.id, ToolStatus.FAILED, error="boom")
    assert (done.duration_ms, done.error) == (0, "boom")


async def test_finish_refuses_running_as_an_outcome(pool: asyncpg.Pool) -> None:
    call = await tools.start(pool, ToolExecution(tool="t"))
    with pytest.raises(ValueError):
        await tools.finish(pool, call.id, "running")


async def test_list_for_task_in_start_order(pool: asyncpg.Pool) -> None:
    task, _ = await tasks.insert(pool, Task(title="uses tools"))
    now = utcnow()
    calls = [
        ToolExecution(task_id=task.id, tool=f"t{i}", started_at=now + timedelta(seconds=i))
        for i in (2, 0, 1)
    ]
    for call in calls:
        await tools.start(pool, call)
    await tools.start(pool, ToolExecution(tool="unrelated"))
    listed = await tools.list_for_task(pool, task.id)
    assert [c.tool for c in listed] == ["t0", "t1", "t2"]
