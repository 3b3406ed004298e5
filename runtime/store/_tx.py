"""The store's transaction helper, shared by the modules that write with events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

__all__ = ["Conn", "atomic"]

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
