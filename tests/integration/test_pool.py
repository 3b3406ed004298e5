"""The shared pool: JSON both ways, and a released connection carries nothing over (it is
released without asyncpg's reset query)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from helpers import wait_for

from runtime.store.pool import create_pool

pytestmark = pytest.mark.integration


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of one connection: what the next acquire gets is what the last released."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    yield pool
    await pool.close()


async def test_json_values_round_trip(pool: asyncpg.Pool) -> None:
    value = {"a": [1, 2.5, None, "x"], "b": {"c": True}}
    assert await pool.fetchval("SELECT $1::jsonb", value) == value
    assert await pool.fetchval("SELECT $1::json", [1, "two"]) == [1, "two"]


async def test_a_transaction_left_open_is_rolled_back_at_release(one_connection) -> None:
    pool = one_connection
    await pool.execute("CREATE TABLE IF NOT EXISTS pool_probe (n int)")
    conn = await pool.acquire()
    transaction = conn.transaction()
    await transaction.start()
    await conn.execute("INSERT INTO pool_probe VALUES (1)")
    await pool.release(conn)  # never committed
    async with pool.acquire() as again:  # the same (only) connection
        assert again.is_in_transaction() is False
        assert await again.fetchval("SELECT count(*) FROM pool_probe") == 0


async def test_xact_advisory_locks_end_with_their_transaction(
    one_connection, database_url: str
) -> None:
    other = await asyncpg.connect(database_url)
    try:
        async with one_connection.acquire() as conn, conn.transaction():
            assert await conn.fetchval("SELECT pg_try_advisory_xact_lock(4242)") is True
            assert await other.fetchval("SELECT pg_try_advisory_xact_lock(4242)") is False
        async with other.transaction():
            assert await other.fetchval("SELECT pg_try_advisory_xact_lock(4242)") is True
    finally:
        await other.close()


async def test_a_released_listener_gets_no_more_notifications(one_connection) -> None:
    pool = one_connection
    heard: list[str] = []
    conn = await pool.acquire()
    await conn.add_listener("pool_probe", lambda *args: heard.append(args[-1]))
    await conn.execute("NOTIFY pool_probe, 'before'")
    await wait_for(lambda: heard, timeout_s=5)  # delivered asynchronously
    assert heard == ["before"]
    await pool.release(conn)
    async with pool.acquire() as again:
        await again.execute("NOTIFY pool_probe, 'after'")
        await again.fetchval("SELECT 1")  # a round trip: a notification would be in
    assert heard == ["before"]
