"""What the repository modules share: a transaction, a write with its events, a page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from runtime.models.events import Event
from runtime.store import outbox

__all__ = ["Conn", "atomic", "fetch_page", "fetchrow_with_events"]

Conn = asyncpg.Connection | asyncpg.Pool


@asynccontextmanager
async def atomic(conn: Conn) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction: the caller's own if one is open, else a new one."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as acquired, acquired.transaction():
            yield acquired
    elif conn.is_in_transaction():
        yield conn
    else:
        async with conn.transaction():
            yield conn


async def fetchrow_with_events(
    conn: Conn, sql: str, args: Sequence[Any], events: Sequence[Event]
) -> asyncpg.Record | None:
    """Run one statement and queue its events in the same transaction; when the statement
    touches no row, nothing is queued (a change that did not happen has no event)."""
    if not events:
        return await conn.fetchrow(sql, *args)
    async with atomic(conn) as tx:
        row = await tx.fetchrow(sql, *args)
        if row is not None:
            await outbox.add(tx, events)
    return row


async def fetch_page(
    conn: Conn,
    select: str,
    filters: Sequence[tuple[str, Any]],
    *,
    limit: int,
    after: tuple[datetime, UUID] | None,
    newest_first: bool = False,
) -> list[asyncpg.Record]:
    """One keyset page on `(created_at, id)`.

    `filters` are `(condition, value)` pairs whose condition holds `{}` where the value
    goes; a pair whose value is None is left out. Pass the last row's `(created_at, id)`
    as `after` for the next page.
    """
    where, args = [], []
    for condition, value in filters:
        if value is not None:
            args.append(value)
            where.append(condition.format(f"${len(args)}"))
    if after is not None:
        args.extend(after)
        beyond = "<" if newest_first else ">"
        where.append(f"(created_at, id) {beyond} (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    order = "created_at DESC, id DESC" if newest_first else "created_at, id"
    return await conn.fetch(
        select
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY {order} LIMIT ${len(args)}",
        *args,
    )
