"""Projects: requirements in, compiled results out.

A project's status is set only through `set_status`, whose events (e.g. `ProjectCompleted`)
are written to the outbox in the same transaction, so the change and its announcement are
committed together or not at all. Listings page by the keyset `(created_at, id)`, oldest
first, so a page never skips or repeats a row while others are inserted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from runtime.models.enums import ProjectStatus
from runtime.models.events import Event
from runtime.models.records import Project
from runtime.store._tx import Conn, fetch_page, fetchrow_with_events

__all__ = ["active", "create", "get", "list_projects", "set_status"]

_COLUMNS = (
    "id",
    "name",
    "description",
    "status",
    "requirements",
    "inputs",
    "plan",
    "result",
    "error",
    "created_at",
    "updated_at",
    "completed_at",
)
_FINISHED = (ProjectStatus.COMPLETED, ProjectStatus.FAILED, ProjectStatus.CANCELLED)


async def create(conn: Conn, project: Project) -> Project:
    """Insert `project` as given (its id and timestamps included) and return the stored row."""
    placeholders = ", ".join(f"${n}" for n in range(1, len(_COLUMNS) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO projects ({', '.join(_COLUMNS)}) VALUES ({placeholders}) RETURNING *",
        *(getattr(project, column) for column in _COLUMNS),
    )
    return Project.from_row(row)


async def get(conn: Conn, id: UUID) -> Project | None:
    row = await conn.fetchrow("SELECT * FROM projects WHERE id = $1", id)
    return Project.from_row(row) if row else None


async def list_projects(
    conn: Conn,
    status: ProjectStatus | str | None = None,
    limit: int = 50,
    after: tuple[datetime, UUID] | None = None,
) -> list[Project]:
    """One page, oldest first; pass the last item's `(created_at, id)` as `after` for the next."""
    filters = [("status = {}", ProjectStatus(status) if status is not None else None)]
    rows = await fetch_page(conn, "SELECT * FROM projects", filters, limit=limit, after=after)
    return [Project.from_row(row) for row in rows]


async def active(conn: Conn, limit: int = 1000) -> list[Project]:
    """Projects still to be driven (pending, planning, running), oldest first."""
    rows = await conn.fetch(
        "SELECT * FROM projects WHERE status IN ('pending', 'planning', 'running')"
        " ORDER BY created_at LIMIT $1",
        limit,
    )
    return [Project.from_row(row) for row in rows]


async def set_status(
    conn: Conn,
    id: UUID,
    status: ProjectStatus | str,
    result: Any = None,
    events: Sequence[Event] = (),
    *,
    only_from: Sequence[ProjectStatus] | None = None,
    plan: dict[str, Any] | None = None,
    error: str | None = None,
) -> Project | None:
    """Move a project to `status` (and store `result`, `plan`, `error` when given), with
    its events.

    `completed_at` is set when the status is completed, failed or cancelled. Given
    `only_from`, the change is made only from one of those statuses, so of two drivers
    racing to finish a project one wins and its events alone are queued. Returns None,
    writing nothing and queueing no event, when there is no such project (or it is in
    another status).
    """
    status = ProjectStatus(status)
    sql = """
        UPDATE projects
           SET status = $2,
               result = COALESCE($3, result),
               updated_at = now(),
               completed_at = CASE WHEN $4 THEN now() ELSE completed_at END,
               plan = COALESCE($6, plan),
               error = COALESCE($7, error)
         WHERE id = $1 AND ($5::text[] IS NULL OR status = ANY($5::text[]))
     RETURNING *"""
    allowed = [ProjectStatus(s).value for s in only_from] if only_from is not None else None
    args = (id, status, result, status in _FINISHED, allowed, plan, error)
    row = await fetchrow_with_events(conn, sql, args, events)
    return Project.from_row(row) if row else None
