"""Agent-to-agent messages (`ctx.ask`), kept for audit and replay."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from runtime.models.records import Message

__all__ = ["add", "by_correlation"]

_COLUMNS = ("id", "correlation_id", "sender", "recipient", "kind", "payload", "created_at")

Conn = asyncpg.Connection | asyncpg.Pool


async def add(conn: Conn, message: Message) -> Message:
    """Store a message as given (id and timestamp included)."""
    row = await conn.fetchrow(
        f"INSERT INTO messages ({', '.join(_COLUMNS)})"
        f" VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))}) RETURNING *",
        *(getattr(message, column) for column in _COLUMNS),
    )
    return Message.from_row(row)


async def by_correlation(conn: Conn, correlation_id: UUID) -> list[Message]:
    """One conversation in order: the messages carrying `correlation_id`, and the message
    whose own id it is (a request that started the exchange without carrying one)."""
    rows = await conn.fetch(
        "SELECT * FROM messages WHERE correlation_id = $1 OR id = $1 ORDER BY created_at, id",
        correlation_id,
    )
    return [Message.from_row(row) for row in rows]
