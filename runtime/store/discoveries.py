"""Discoveries agents share: stored, then announced on `discoveries.{agent_id}.{type}`.

Guarantees:
- `add` writes the discovery and its events (a `DiscoveryShared`) to the outbox in one
  transaction: both are committed or neither is.
- Listings page by the keyset `(created_at, id)`, oldest first: every row once, in order.
- `confidence` (a `real` column) is read back as the value written (0.9, not its float32
  image 0.8999999761...), and `min_confidence` compares in the column's own precision, so a
  discovery at exactly `min_confidence` is included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from uuid import UUID

from runtime.models.events import Event
from runtime.models.records import Discovery
from runtime.store._tx import Conn, fetch_page, fetchrow_with_events

__all__ = ["add", "get", "list_discoveries", "mark_routed", "unrouted_questions"]

_COLUMNS = (
    "id",
    "agent_id",
    "type",
    "content",
    "confidence",
    "data",
    "task_id",
    "project_id",
    "created_at",
)
# real -> text -> float8: the shortest decimal that is this float32, i.e. the value written.
_SELECT = ", ".join(
    "confidence::text::float8 AS confidence" if column == "confidence" else column
    for column in (*_COLUMNS, "routed_task_id", "route_error")
)


async def add(conn: Conn, discovery: Discovery, events: Sequence[Event] = ()) -> Discovery:
    """Store a discovery as given (id and timestamp included), with its events."""
    sql = (
        f"INSERT INTO discoveries ({', '.join(_COLUMNS)})"
        f" VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))})"
        f" RETURNING {_SELECT}"
    )
    args = [getattr(discovery, column) for column in _COLUMNS]
    return Discovery.from_row(await fetchrow_with_events(conn, sql, args, events))


async def get(conn: Conn, id: UUID) -> Discovery | None:
    row = await conn.fetchrow(f"SELECT {_SELECT} FROM discoveries WHERE id = $1", id)
    return Discovery.from_row(row) if row else None


async def list_discoveries(
    conn: Conn,
    types: Iterable[str] | None = None,
    min_confidence: float | None = None,
    agent_id: str | None = None,
    limit: int = 100,
    after: tuple[datetime, UUID] | None = None,
) -> list[Discovery]:
    """One page, oldest first; pass the last item's `(created_at, id)` as `after` for the next.

    `types` keeps discoveries of any of those types; `min_confidence` those at least that sure.
    """
    filters = [
        ("type = ANY({}::text[])", list(types) if types is not None else None),
        ("confidence >= {}::real", min_confidence),
        ("agent_id = {}", agent_id),
    ]
    rows = await fetch_page(
        conn, f"SELECT {_SELECT} FROM discoveries", filters, limit=limit, after=after
    )
    return [Discovery.from_row(row) for row in rows]


async def unrouted_questions(conn: Conn, limit: int = 100) -> list[Discovery]:
    """Questions that have not become a task yet, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_SELECT} FROM discoveries WHERE type = 'question'"
        " AND routed_task_id IS NULL AND route_error IS NULL ORDER BY created_at LIMIT $1",
        limit,
    )
    return [Discovery.from_row(row) for row in rows]


async def mark_routed(conn: Conn, id: UUID, task_id: UUID | None, error: str | None = None) -> None:
    """Record the task a question became, or why it could not become one."""
    await conn.execute(
        "UPDATE discoveries SET routed_task_id = $2, route_error = $3 WHERE id = $1",
        id,
        task_id,
        error,
    )
