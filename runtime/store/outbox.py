"""The outbox: events written in the transaction of the state change they describe."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from runtime import telemetry
from runtime.models.events import Event

__all__ = ["NOTIFY_CHANNEL", "add", "oldest_pending_age_s", "pending_count"]

NOTIFY_CHANNEL = "rayvisor_outbox"


async def add(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """Queue events for the relay; call inside the transaction of the change."""
    if not events:
        return
    headers = telemetry.carrier()
    await conn.executemany(
        "INSERT INTO outbox (id, subject, payload, headers) VALUES ($1, $2, $3, $4)",
        [
            (e.event_id, e.subject(), e.model_dump(mode="json", by_alias=True), headers)
            for e in events
        ],
    )
    await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)


async def pending_count(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")


async def oldest_pending_age_s(conn: asyncpg.Connection | asyncpg.Pool) -> float:
    """Seconds since the oldest unpublished row was written, on the server's clock (0 when
    none is left): how far the relay is behind."""
    age = await conn.fetchval(
        "SELECT extract(epoch FROM clock_timestamp() - created_at) FROM outbox"
        " WHERE sent_at IS NULL ORDER BY seq LIMIT 1"
    )
    return float(age or 0.0)
