"""Agent-to-agent messages (`ctx.ask`, `ctx.tell`), kept for audit and replay.

The sender writes every row of an exchange: the request or notification as it goes out,
its end (`finish`: answered, delivered, failed, timed out) and the response as it comes
back, each with its event in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from runtime.models.enums import MessageStatus
from runtime.models.events import Event
from runtime.models.records import Message
from runtime.store import outbox

__all__ = ["add", "by_correlation", "finish"]

_COLUMNS = (
    "id",
    "correlation_id",
    "sender",
    "recipient",
    "kind",
    "payload",
    "status",
    "error",
    "created_at",
    "finished_at",
    "duration_ms",
)

Conn = asyncpg.Connection | asyncpg.Pool


async def add(conn: Conn, message: Message, events: Sequence[Event] = ()) -> Message:
    """Store a message as given (id and timestamp included), with its events."""
    if events and isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as held, held.transaction():
            return await add(held, message, events)
    row = await conn.fetchrow(
        f"INSERT INTO messages ({', '.join(_COLUMNS)})"
        f" VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))}) RETURNING *",
        *(getattr(message, column) for column in _COLUMNS),
    )
    if events:
        await outbox.add(conn, list(events))
    return Message.from_row(row)


async def finish(
    conn: Conn,
    id: UUID,
    status: MessageStatus | str,
    error: str | None = None,
    events: Sequence[Event] = (),
) -> Message | None:
    """End a message still `sent`; None if it had ended. The duration is the database's
    clock now minus `created_at`."""
    if events and isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as held, held.transaction():
            return await finish(held, id, status, error, events)
    row = await conn.fetchrow(
        """
        UPDATE messages
           SET status = $2, error = $3, finished_at = clock_timestamp(),
               duration_ms = greatest(0, extract(epoch FROM clock_timestamp() - created_at) * 1000)
         WHERE id = $1 AND status = 'sent'
     RETURNING *""",
        id,
        MessageStatus(status),
        error,
    )
    if row is None:
        return None
    if events:
        await outbox.add(conn, list(events))
    return Message.from_row(row)


async def by_correlation(conn: Conn, correlation_id: UUID) -> list[Message]:
    """One conversation in order: the messages carrying `correlation_id`, and the message
    whose own id it is (a request that started the exchange without carrying one)."""
    rows = await conn.fetch(
        "SELECT * FROM messages WHERE correlation_id = $1 OR id = $1 ORDER BY created_at, id",
        correlation_id,
    )
    return [Message.from_row(row) for row in rows]
