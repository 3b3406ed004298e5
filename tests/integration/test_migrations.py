"""Migrations: applied once, whatever the number of processes or calls."""

from __future__ import annotations

import subprocess
import sys
import uuid

import asyncpg
import pytest
from helpers import with_database

from runtime.store.migrations import apply_migrations, available_migrations

pytestmark = pytest.mark.integration

EXPECTED_TABLES = {
    "projects", "tasks", "agent_templates", "agents", "agent_specializations", "agent_events",
    "supervisor_events", "supervisor_children", "tool_executions", "discoveries", "messages",
    "outbox", "api_keys", "schema_migrations", "shard_owners", "system_owner",
    "task_request_bodies",
}  # fmt: skip


@pytest.fixture
async def empty_database(services) -> str:
    name = f"mig_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(with_database(services.database_url, "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield with_database(services.database_url, name)
    admin = await asyncpg.connect(with_database(services.database_url, "postgres"))
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def schema_of(url: str) -> tuple[set[str], list[tuple[int, str]]]:
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        versions = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return {r["tablename"] for r in tables}, [(r["version"], r["name"]) for r in versions]


async def test_applied_twice_leaves_one_schema(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        first = await apply_migrations(conn)
        second = await apply_migrations(conn)
    finally:
        await conn.close()
    assert first == [m.version for m in available_migrations()]
    assert second == []
    tables, versions = await schema_of(empty_database)
    assert tables == EXPECTED_TABLES
    assert versions == [(m.version, m.name) for m in available_migrations()]


async def test_two_processes_at_once_apply_each_migration_once(empty_database: str) -> None:
    script = (
        "import asyncio, asyncpg, sys\n"
        "from runtime.store.migrations import apply_migrations\n"
        "async def main():\n"
        "    conn = await asyncpg.connect(sys.argv[1])\n"
        "    print(await apply_migrations(conn))\n"
        "    await conn.close()\n"
        "asyncio.run(main())\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, empty_database], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    everything = str([m.version for m in available_migrations()])
    assert sorted(outputs) == sorted([everything, "[]"])
    tables, versions = await schema_of(empty_database)
    assert tables == EXPECTED_TABLES
    assert len(versions) == len(available_migrations())


async def test_status_checks_refuse_bad_values(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO tasks (id, title, status) VALUES ($1, 't', 'exploded')", uuid.uuid4()
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO tasks (id, title, priority) VALUES ($1, 't', 12)", uuid.uuid4()
        )
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0
