"""Tool calls agents make (`ctx.tool`): started, then finished once, with their duration.

`finish` takes effect only on a call still running, so a late or repeated report cannot
overwrite how a call ended. `duration_ms` is measured by the database from `started_at`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from runtime.models.enums import ToolStatus
from runtime.models.records import ToolExecution

__all__ = ["finish", "list_for_task", "refuse", "start"]

_COLUMNS = (
    "id",
    "task_id",
    "agent_id",
    "tool",
    "input",
    "output",
    "status",
    "error",
    "started_at",
    "finished_at",
    "duration_ms",
)

Conn = asyncpg.Connection | asyncpg.Pool


async def start(conn: Conn, execution: ToolExecution) -> ToolExecution:
    """Record a call as it starts (status `running` unless the record says otherwise)."""
    row = await conn.fetchrow(
        f"INSERT INTO tool_executions ({', '.join(_COLUMNS)})"
        f" VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))}) RETURNING *",
        *(getattr(execution, column) for column in _COLUMNS),
    )
    return ToolExecution.from_row(row)


async def refuse(conn: Conn, execution: ToolExecution, reason: str) -> ToolExecution:
    """Record a call refused before it ran: `rejected`, ended as it started."""
    refused = execution.model_copy(
        update={
            "status": ToolStatus.REJECTED,
            "error": reason[:2000],
            "finished_at": execution.started_at,
            "duration_ms": 0.0,
        }
    )
    return await start(conn, refused)


async def finish(
    conn: Conn,
    id: UUID,
    status: ToolStatus | str,
    output: Any = None,
    error: str | None = None,
) -> ToolExecution | None:
    """End a running call as succeeded, failed or rejected; None if it is not running.

    The duration is the database clock now minus `started_at`, never below zero.
    """
    status = ToolStatus(status)
    if status == ToolStatus.RUNNING:
        raise ValueError("status: a finished call cannot be 'running'")
    row = await conn.fetchrow(
        """
        UPDATE tool_executions
           SET status = $2, output = $3, error = $4, finished_at = clock_timestamp(),
               duration_ms = greatest(0, extract(epoch FROM clock_timestamp() - started_at) * 1000)
         WHERE id = $1 AND status = 'running'
     RETURNING *""",
        id,
        status,
        output,
        error,
    )
    return ToolExecution.from_row(row) if row else None


async def list_for_task(conn: Conn, task_id: UUID) -> list[ToolExecution]:
    """The calls made for a task, in the order they started."""
    rows = await conn.fetch(
        "SELECT * FROM tool_executions WHERE task_id = $1 ORDER BY started_at, id", task_id
    )
    return [ToolExecution.from_row(row) for row in rows]
