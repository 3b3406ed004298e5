"""Retention on real PostgreSQL and Ray: what is older than the age goes, batch by batch;
younger rows, unfinished tasks and what they reference stay; the job runs supervised under
the root and purges again after it is killed and restarted."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from helpers import wait_for

from runtime.config import load_settings
from runtime.store.retention import purge
from supervisors.tree import retention_child

pytestmark = pytest.mark.integration

AGE = timedelta(days=30)
OLD = timedelta(days=40)
YOUNG = timedelta(days=1)


async def add_task(
    conn: Any,
    status: str,
    created: timedelta,
    finished: timedelta | None = None,
    *,
    parent: UUID | None = None,
    project: UUID | None = None,
    dependencies: list[UUID] | None = None,
) -> UUID:
    """A task created `created` ago, finished `finished` ago when its status is final."""
    task_id = uuid.uuid4()
    final = status in ("completed", "failed", "cancelled", "timed_out")
    await conn.execute(
        "INSERT INTO tasks (id, title, status, parent_id, project_id, dependencies, result,"
        " created_at, finished_at) VALUES ($1, 't', $2, $3, $4, $5, $6, now() - $7::interval,"
        " CASE WHEN $8 THEN now() - $9::interval END)",
        task_id, status, parent, project, dependencies or [], {"ok": 1}, created, final,
        finished if finished is not None else created,
    )  # fmt: skip
    return task_id


async def add_project(conn: Any, status: str) -> UUID:
    project_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO projects (id, name, status, created_at)"
        " VALUES ($1, 'p', $2, now() - $3::interval)",
        project_id, status, OLD,
    )  # fmt: skip
    return project_id


async def add_discovery(
    conn: Any, age: timedelta, *, kind: str = "finding", task: UUID | None = None
) -> UUID:
    discovery_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO discoveries (id, agent_id, type, content, confidence, task_id, created_at)"
        " VALUES ($1, 'a', $2, 'c', 0.5, $3, now() - $4::interval)",
        discovery_id, kind, task, age,
    )  # fmt: skip
    return discovery_id


async def add_tool_execution(conn: Any, age: timedelta, task: UUID | None) -> UUID:
    execution_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO tool_executions (id, task_id, tool, status, started_at)"
        " VALUES ($1, $2, 'read_file', 'succeeded', now() - $3::interval)",
        execution_id, task, age,
    )  # fmt: skip
    return execution_id


async def add_message(conn: Any, age: timedelta) -> UUID:
    message_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO messages (id, sender, recipient, kind, created_at)"
        " VALUES ($1, 'a', 'b', 'notification', now() - $2::interval)",
        message_id, age,
    )  # fmt: skip
    return message_id


async def add_outbox(conn: Any, age: timedelta, sent: bool) -> UUID:
    event_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO outbox (id, subject, payload, created_at, sent_at)"
        " VALUES ($1, 's', '{}', now() - $2::interval, CASE WHEN $3 THEN now() END)",
        event_id, age, sent,
    )  # fmt: skip
    return event_id


async def add_events(conn: Any, agent_id: str, age: timedelta, count: int) -> None:
    await conn.execute(
        "INSERT INTO agents (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", agent_id
    )
    await conn.executemany(
        "INSERT INTO agent_events (agent_id, to_state, created_at)"
        " VALUES ($1, 'idle', now() - $2::interval)",
        [(agent_id, age)] * count,
    )
    await conn.executemany(
        "INSERT INTO supervisor_events (supervisor_id, event, created_at)"
        " VALUES ($1, 'restarted', now() - $2::interval)",
        [(agent_id, age)] * count,
    )


async def remaining(conn: Any, table: str, ids: list[UUID]) -> set[UUID]:
    rows = await conn.fetch(f"SELECT id FROM {table} WHERE id = ANY($1)", ids)
    return {row["id"] for row in rows}


async def test_old_records_go_young_and_referenced_ones_stay(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        # kept, whatever their age (created first, so the batches' walk must pass them)
        dependency = await add_task(conn, "completed", OLD + YOUNG)
        running = await add_task(conn, "running", OLD, dependencies=[dependency])
        waiting_parent = await add_task(conn, "completed", OLD)
        waiting_child = await add_task(conn, "pending", OLD, parent=waiting_parent)
        reduced_parent = await add_task(conn, "running", OLD)
        reduced_chunk = await add_task(conn, "completed", OLD, parent=reduced_parent)
        late_parent = await add_task(conn, "completed", OLD)
        late_child = await add_task(conn, "completed", OLD, YOUNG, parent=late_parent)
        live_project = await add_project(conn, "running")
        project_step = await add_task(conn, "completed", OLD, project=live_project)
        finished_late = await add_task(conn, "failed", OLD, YOUNG)
        young = await add_task(conn, "completed", YOUNG)
        kept = [
            dependency, running, waiting_parent, waiting_child, reduced_parent, reduced_chunk,
            late_parent, late_child, project_step, finished_late, young,
        ]  # fmt: skip
        # purged: old and finished, with their whole finished subtree
        done = await add_task(conn, "completed", OLD)
        tree_root = await add_task(conn, "completed", OLD)
        tree_children = [
            await add_task(conn, status, OLD, parent=tree_root)
            for status in ("completed", "failed", "cancelled")
        ]
        timed_out = await add_task(conn, "timed_out", OLD)
        ended_project = await add_project(conn, "completed")
        ended_step = await add_task(conn, "cancelled", OLD, project=ended_project)
        purged = [done, tree_root, *tree_children, timed_out, ended_step]

        discoveries_kept = [
            await add_discovery(conn, YOUNG),
            await add_discovery(conn, OLD, kind="question"),  # not routed yet
            await add_discovery(conn, OLD, task=running),
        ]
        discoveries_purged = [await add_discovery(conn, OLD, task=done) for _ in range(3)]
        tools_kept = [await add_tool_execution(conn, YOUNG, None)]
        tools_kept.append(await add_tool_execution(conn, OLD, running))
        tools_purged = [await add_tool_execution(conn, OLD, done) for _ in range(3)]
        messages_kept = [await add_message(conn, YOUNG)]
        messages_purged = [await add_message(conn, OLD) for _ in range(5)]
        outbox_kept = [await add_outbox(conn, OLD, sent=False)]  # not published yet
        outbox_purged = [await add_outbox(conn, OLD, sent=True) for _ in range(3)]
        outbox_kept.append(await add_outbox(conn, YOUNG, sent=True))
        await add_events(conn, "retained-agent", OLD, 5)
        await add_events(conn, "retained-agent", YOUNG, 2)

    report = await purge(pool, AGE, batch_size=2, pause_s=0)

    async with pool.acquire() as conn:
        assert await remaining(conn, "tasks", kept) == set(kept)
        assert await remaining(conn, "tasks", purged) == set()
        assert await remaining(conn, "discoveries", discoveries_kept) == set(discoveries_kept)
        assert await remaining(conn, "discoveries", discoveries_purged) == set()
        assert await remaining(conn, "tool_executions", tools_kept) == set(tools_kept)
        assert await remaining(conn, "tool_executions", tools_purged) == set()
        assert await remaining(conn, "messages", messages_kept) == set(messages_kept)
        assert await remaining(conn, "messages", messages_purged) == set()
        outbox = await conn.fetch(
            "SELECT id FROM outbox WHERE id = ANY($1)", outbox_kept + outbox_purged
        )
        assert {r["id"] for r in outbox} == set(outbox_kept)
        for table, column in (("agent_events", "agent_id"), ("supervisor_events", "supervisor_id")):
            ages = await conn.fetch(
                f"SELECT now() - created_at AS age FROM {table} WHERE {column} = 'retained-agent'"
            )
            assert sorted(r["age"] < AGE for r in ages) == [True, True], table
    assert report.purged["tasks"] == len(purged)
    for table, rows in (("messages", 5), ("agent_events", 5), ("discoveries", 3)):
        assert report.purged[table] == rows, table
    # never more than 2 rows a statement: 5 rows took 3 batches at least
    assert report.batches >= 3 * 3
    again = await purge(pool, AGE, batch_size=1000, pause_s=0)
    assert again.total == 0


async def test_a_purge_run_is_bounded_in_statements(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        ids = [await add_message(conn, OLD) for _ in range(6)]
    first = await purge(pool, AGE, batch_size=2, pause_s=0, max_batches=1)
    async with pool.acquire() as conn:
        assert first.batches == 1
        assert len(await remaining(conn, "messages", ids)) == 6 - first.purged.get("messages", 0)
    await purge(pool, AGE, batch_size=2, pause_s=0)
    async with pool.acquire() as conn:
        assert await remaining(conn, "messages", ids) == set()


def test_the_job_is_in_the_tree_with_the_configured_age_and_none_when_kept_forever() -> None:
    settings = load_settings(retention={"days": 7, "interval_s": 60, "batch_size": 500})
    child = retention_child(settings)
    assert child is not None and child.actor == "actors.retention:RetentionActor"
    assert child.kwargs == {"days": 7, "interval_s": 60, "batch_size": 500, "pause_s": 0.1}
    assert child.circuit_breaker  # parked if it keeps failing, never escalated
    for forever in (0, None):
        assert retention_child(load_settings(retention={"days": forever})) is None


async def test_the_supervised_job_purges_and_is_restarted_when_killed(
    tree: Any, system_pool: asyncpg.Pool
) -> None:
    """Under a root, with the age and interval it is given: it purges an old row, is
    SIGKILLed, comes back under its supervisor and purges the next old row."""
    child = retention_child(load_settings(retention={"days": 30, "interval_s": 0.5}))
    assert child is not None
    root = await tree.start(
        {
            "id": tree.uid("retention-root"),
            "children": [child.model_dump()],
            "backoff": {"min_s": 0, "max_s": 0},
        }
    )
    async with system_pool.acquire() as conn:
        first = await add_message(conn, OLD)
        young = await add_message(conn, YOUNG)

    async def gone(message: UUID) -> bool:
        async with system_pool.acquire() as conn:
            return not await remaining(conn, "messages", [message])

    await wait_for(lambda: gone(first), timeout_s=30, interval_s=0.1)
    before = await running_pid(root)
    os.kill(before, signal.SIGKILL)

    async def restarted() -> int | None:
        pid = await running_pid(root)
        return pid if pid not in (None, before) else None

    await wait_for(restarted, timeout_s=60, interval_s=0.1)
    async with system_pool.acquire() as conn:
        second = await add_message(conn, OLD)
    await wait_for(lambda: gone(second), timeout_s=30, interval_s=0.1)
    async with system_pool.acquire() as conn:
        assert await remaining(conn, "messages", [young]) == {young}
    handle = await root.child_handle.remote("retention")

    async def counted() -> dict[str, Any] | None:  # a run counts once it has ended
        stats = await handle.statistics.remote()
        return stats if stats["runs"] and stats["purged"].get("messages") else None

    stats = await wait_for(counted, timeout_s=30, interval_s=0.1)
    assert stats["failures"] == 0


async def running_pid(root: Any) -> int | None:
    children = {c["id"]: c for c in await root.which_children.remote()}
    child = children["retention"]
    return child["pid"] if child["state"] == "running" else None
