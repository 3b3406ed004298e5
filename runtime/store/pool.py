"""The asyncpg pool every process uses: json/jsonb decoded to Python values both ways."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg

from runtime.errors import ServiceError
from runtime.tls import server_of, tls_failure

__all__ = ["create_pool", "init_connection"]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


async def init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=_dumps, decoder=json.loads, schema="pg_catalog")


async def keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET
    ALL): one more round trip per release, for session state nothing here leaves. Locks
    are transaction-scoped, no SET outlives its transaction, the relay UNLISTENs before it
    releases; asyncpg still rolls back an open transaction and drops listener callbacks."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections speak JSON natively; fails fast if the server is down.

    TLS is what the URL asks (`sslmode`, `sslrootcert`: asyncpg reads libpq's parameters);
    a certificate that does not verify is a ServiceError naming the server and the CA."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=init_connection,
            reset=keep_session,
            command_timeout=60,
            timeout=10,
        )
    except Exception as exc:
        if (failure := tls_failure(exc)) is None:
            raise
        ca = dict(parse_qsl(urlsplit(dsn).query)).get("sslrootcert", "~/.postgresql/root.crt")
        raise ServiceError(
            f"PostgreSQL at {server_of(dsn)}: TLS certificate not trusted "
            f"({failure.verify_message}); check sslrootcert ({ca})"
        ) from exc
    assert pool is not None
    return pool
