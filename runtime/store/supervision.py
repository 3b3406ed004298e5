"""Supervision records: every decision a supervisor took, and its dynamic children.

Guarantees:
- `record_event` writes the decision and its events (a `SupervisorDecision`) to the outbox
  in one transaction: both are committed or neither is.
- `children` returns a supervisor's saved children in the order they were first saved, so a
  restarted supervisor starts them again in their original order; saving a child again
  replaces its spec and keeps its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runtime.models.enums import SupervisorEventKind
from runtime.models.events import Event
from runtime.models.records import SupervisorEvent
from runtime.store._tx import Conn, fetchrow_with_events

__all__ = ["children", "list_events", "record_event", "remove_child", "save_child"]


async def record_event(
    conn: Conn,
    supervisor_id: str,
    kind: SupervisorEventKind | str,
    child_id: str | None = None,
    reason: str = "",
    detail: dict[str, Any] | None = None,
    events: Sequence[Event] = (),
) -> SupervisorEvent:
    """Record one supervision decision, with its events."""
    sql = (
        "INSERT INTO supervisor_events (supervisor_id, child_id, event, reason, detail)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING *"
    )
    args = (supervisor_id, child_id, SupervisorEventKind(kind), reason, dict(detail or {}))
    return SupervisorEvent.from_row(await fetchrow_with_events(conn, sql, args, events))


async def list_events(
    conn: Conn,
    supervisor_id: str | None = None,
    child_id: str | None = None,
    limit: int = 100,
) -> list[SupervisorEvent]:
    """The latest `limit` decisions (of one supervisor and/or child), oldest first."""
    where, args = [], []
    if supervisor_id is not None:
        args.append(supervisor_id)
        where.append(f"supervisor_id = ${len(args)}")
    if child_id is not None:
        args.append(child_id)
        where.append(f"child_id = ${len(args)}")
    args.append(limit)
    rows = await conn.fetch(
        "SELECT * FROM (SELECT * FROM supervisor_events"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY id DESC LIMIT ${len(args)}) AS latest ORDER BY id",
        *args,
    )
    return [SupervisorEvent.from_row(row) for row in rows]


async def save_child(conn: Conn, supervisor_id: str, child_id: str, spec: dict[str, Any]) -> None:
    """Remember a child started at run time, so a restarted supervisor starts it again."""
    # clock_timestamp(), not now(): children saved in one transaction keep their order.
    await conn.execute(
        "INSERT INTO supervisor_children (supervisor_id, child_id, spec, created_at)"
        " VALUES ($1, $2, $3, clock_timestamp())"
        " ON CONFLICT (supervisor_id, child_id) DO UPDATE SET spec = EXCLUDED.spec",
        supervisor_id,
        child_id,
        spec,
    )


async def remove_child(conn: Conn, supervisor_id: str, child_id: str) -> bool:
    """Forget a child (it was stopped for good); False if it was not saved."""
    status = await conn.execute(
        "DELETE FROM supervisor_children WHERE supervisor_id = $1 AND child_id = $2",
        supervisor_id,
        child_id,
    )
    return status == "DELETE 1"


async def children(conn: Conn, supervisor_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(child id, spec) of each saved child, in the order they were first saved."""
    rows = await conn.fetch(
        "SELECT child_id, spec FROM supervisor_children WHERE supervisor_id = $1"
        " ORDER BY created_at, child_id",
        supervisor_id,
    )
    return [(row["child_id"], row["spec"]) for row in rows]
