"""Retention: records older than a configured age are purged, in small batches.

What goes, once older than the cutoff: agent and supervisor events, outbox rows already
published, discoveries, messages, tool executions and finished tasks (a task's attempts and
result live in its row; the request bodies of its idempotency key go with it).

What never goes, whatever its age:
- an unfinished task (`pending`, `queued`, `assigned`, `running`), or a finished one it
  references: a dependency, its parent, a sibling under that parent (the reduce reads
  them), an ancestor (deleting one would cascade to it);
- a task of a project still `pending`, `planning` or `running` (the project compiles them);
- a finished task with a descendant that must stay: a task is purged with its whole
  subtree of children, or not at all (`parent_id` cascades);
- a discovery or tool execution of an unfinished task, and a `question` not routed yet;
- an outbox row not published yet.

Every statement deletes at most `batch_size` rows (plus, for a task, its children) and
commits on its own, with `pause_s` between batches, so no lock is held for long and the
system's own writes interleave. Tasks are walked by keyset (status, created_at, id), so
rows that must stay never hold the walk up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

__all__ = ["FINISHED", "UNFINISHED", "PurgeReport", "purge"]

FINISHED = ("completed", "failed", "cancelled", "timed_out")
UNFINISHED = ("pending", "queued", "assigned", "running")
_ACTIVE_PROJECT = ("pending", "planning", "running")


@dataclass
class PurgeReport:
    """Rows purged per table by one `purge` run, and how many statements it took."""

    purged: dict[str, int] = field(default_factory=dict)
    batches: int = 0

    def add(self, table: str, rows: int) -> None:
        self.purged[table] = self.purged.get(table, 0) + rows
        self.batches += 1

    @property
    def total(self) -> int:
        return sum(self.purged.values())


# Tables keyed by a bigserial (walked by key) and what keeps an old row of them.
_BY_KEY = {
    "agent_events": ("id", "TRUE"),
    "supervisor_events": ("id", "TRUE"),
    "outbox": ("seq", "sent_at IS NOT NULL"),
}

# One batch of a bigserial-keyed table: the next `$2` rows by key after `$3` (never more
# are read); those older than the cutoff go, unless `keep` holds them (an outbox row not
# published yet). Keys follow time, so the walk ends at the first young row it meets.
_BY_KEY_BATCH = """
WITH head AS (
    SELECT {key} AS key, created_at, {keep} AS may FROM {table}
     WHERE {key} > $3 ORDER BY {key} LIMIT $2
), gone AS (
    DELETE FROM {table} WHERE {key} IN (SELECT key FROM head WHERE created_at < $1 AND may)
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS purged, (SELECT max(key) FROM head) AS last,
       (SELECT count(*) FROM head) AS seen, (SELECT bool_or(created_at >= $1) FROM head) AS young
"""

_UNFINISHED_TASK = "SELECT 1 FROM tasks u WHERE u.id = {col} AND u.status = ANY($3::text[])"

# Tables keyed by a uuid: walked by their time column (indexed by migration 008).
_BY_TIME = {
    "discoveries": (
        "created_at",
        "NOT (type = 'question' AND routed_task_id IS NULL AND route_error IS NULL)"
        f" AND NOT EXISTS ({_UNFINISHED_TASK.format(col='d.task_id')})",
    ),
    "messages": ("created_at", "TRUE"),
    "tool_executions": (
        "started_at",
        f"NOT EXISTS ({_UNFINISHED_TASK.format(col='d.task_id')})",
    ),
}

# One batch of finished tasks of one status: candidates by keyset, each with its subtree;
# a candidate is purged with its subtree unless some task in it must stay.
_TASKS = """
WITH RECURSIVE candidates AS (
    SELECT id, created_at FROM tasks
     WHERE status = $1 AND created_at < $2 AND (created_at, id) > ($3, $4)
     ORDER BY created_at, id
     LIMIT $5
), subtree (root, id) AS (
    SELECT id, id FROM candidates
    UNION
    SELECT s.root, t.id FROM tasks t JOIN subtree s ON t.parent_id = s.id
), kept AS (
    SELECT DISTINCT s.root FROM subtree s JOIN tasks t ON t.id = s.id
     WHERE t.status <> ALL($6::text[])
        OR coalesce(t.finished_at, t.updated_at) >= $2
        OR EXISTS (SELECT 1 FROM projects p
                    WHERE p.id = t.project_id AND p.status = ANY($8::text[]))
        OR EXISTS (SELECT 1 FROM tasks p
                    WHERE p.id = t.parent_id AND p.status = ANY($7::text[]))
        OR EXISTS (SELECT 1 FROM tasks u
                    WHERE u.dependencies @> ARRAY[t.id] AND u.status = ANY($7::text[]))
), purged AS (
    DELETE FROM tasks
     WHERE id IN (SELECT id FROM subtree WHERE root NOT IN (SELECT root FROM kept))
    RETURNING id
), last AS (
    SELECT created_at, id FROM candidates ORDER BY created_at DESC, id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM purged) AS purged, last.created_at, last.id FROM last
"""

_TASK_STATUS_ARGS = (list(FINISHED), list(UNFINISHED), list(_ACTIVE_PROJECT))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NIL = UUID(int=0)


async def purge(
    pool: asyncpg.Pool,
    older_than: timedelta,
    *,
    batch_size: int = 1000,
    pause_s: float = 0.1,
    max_batches: int = 100_000,
) -> PurgeReport:
    """Purge what is older than `older_than` (on the database's clock), batch by batch.

    At most `max_batches` statements in all, so one run is bounded even on a table that
    keeps growing; whatever is left is the next run's."""
    if older_than <= timedelta(0):
        raise ValueError(f"older_than must be positive, got {older_than}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    report = PurgeReport()
    cutoff: datetime = await pool.fetchval("SELECT now() - $1::interval", older_than)

    async def run(statement: str, *args: Any) -> asyncpg.Record | None:
        if report.batches >= max_batches:
            return None
        if report.batches:
            await asyncio.sleep(pause_s)
        return await pool.fetchrow(statement, *args)

    # tasks first: their tool executions and discoveries are then free to go
    for status in FINISHED:
        after: tuple[datetime, UUID] = (_EPOCH, _NIL)
        while True:
            args = (status, cutoff, *after, batch_size, *_TASK_STATUS_ARGS)
            row = await run(_TASKS, *args)
            if row is None:
                break
            report.add("tasks", row["purged"])
            after = (row["created_at"], row["id"])
    if await pool.fetchval("SELECT to_regclass('task_request_bodies') IS NOT NULL"):
        statement = (
            "DELETE FROM task_request_bodies WHERE idempotency_key IN ("
            " SELECT b.idempotency_key FROM task_request_bodies b WHERE b.created_at < $1"
            " AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.idempotency_key = b.idempotency_key)"
            " ORDER BY b.created_at LIMIT $2)"
        )
        await _drain(run, report, "task_request_bodies", statement, cutoff, batch_size)
    for table, (column, keep) in _BY_TIME.items():
        statement = (
            f"DELETE FROM {table} WHERE id IN (SELECT d.id FROM {table} d"
            f" WHERE d.{column} < $1 AND {keep} ORDER BY d.{column} LIMIT $2)"
        )
        unfinished = [list(UNFINISHED)] if "$3" in keep else []
        await _drain(run, report, table, statement, cutoff, batch_size, *unfinished)
    for table, (key, keep) in _BY_KEY.items():
        after = 0
        while True:
            row = await run(_BY_KEY_BATCH.format(table=table, key=key, keep=keep),
                            cutoff, batch_size, after)  # fmt: skip
            if row is None or row["last"] is None:
                break
            report.add(table, row["purged"])
            if row["seen"] < batch_size or row["young"]:
                break
            after = row["last"]
    return report


async def _drain(run: Any, report: PurgeReport, table: str, statement: str, *args: Any) -> None:
    """Run one batch statement until a batch purges fewer rows than the batch size."""
    batch_size = args[1]
    while True:
        counted = f"WITH gone AS ({statement} RETURNING 1) SELECT count(*) FROM gone"
        row = await run(counted, *args)
        if row is None:
            return
        report.add(table, row[0])
        if row[0] < batch_size:
            return
