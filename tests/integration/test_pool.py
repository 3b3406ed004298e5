"""The shared pool: JSON both ways, and a released connection carries nothing over (it is
released without asyncpg's reset query)."""

from __future__ import annotations

import asyncpg
import pytest
from helpers import wait_for

from runtime.store.pool import create_pool

pytestmark = pytest.mark.integration


async def test_json_values_round_trip(pool: asyncpg.Pool) -> None:
    value = {"a": [1, 2.5, None, "x"], "b": {"c": True}}
    assert await pool.fetchval("SELECT $1::jsonb", value) == value
    assert await pool.fetchval("SELECT $1::json", [1, "two"]) == [1, "two"]


async def test_a_transaction_left_open_is_rolled_back_at_release(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        await pool.execute("CREATE TABLE IF NOT EXISTS pool_probe (n int)")
        conn = await pool.acquire()
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("INSERT INTO pool_probe VALUES (1)")
        await pool.release(conn)  # never committed
        async with pool.acquire() as again:  # the same (only) connection
            assert again.is_in_transaction() is False
            assert await again.fetchval("SELECT count(*) FROM pool_probe") == 0
    finally:
        await pool.close()


async def test_xact_advisory_locks_end_with_their_transaction(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    other = await asyncpg.connect(database_url)
    try:
        async with pool.acquire() as conn, conn.transaction():
            assert await conn.fetchval("SELECT pg_try_advisory_xact_lock(4242)") is True
            assert await other.fetchval("SELECT pg_try_advisory_xact_lock(4242)") is False
        async with other.transaction():
            assert await other.fetchval("SELECT pg_try_advisory_xact_lock(4242)") is True
    finally:
        await other.close()
        await pool.close()


async def test_a_released_listener_gets_no_more_notifications(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    heard: list[str] = []
    try:
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
    finally:
        await pool.close()
