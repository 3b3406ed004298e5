"""Tasks: the durable queue's rows.

Guarantees:
- `insert` is idempotent by `idempotency_key`: a second submit with the same key writes
  nothing and returns the first task. `claim_request_body` keeps a hash of the body a key
  first came with over HTTP, so the route can refuse the key with another body.
- `update` is fenced: given `expect_attempt`, it changes the row only while that attempt is
  still the current one, so a result of a stale lease is refused and changes nothing.
- Events passed to `update` reach the outbox in the transaction of the change, and only when
  the change was made.
- A task naming a parent or project that does not exist is refused with a LogicalError
  naming the field, and nothing of its batch is written.
- Listings page by the keyset `(created_at, id)`, oldest first: every row once, in order.

The state machine itself (`runtime.state_machines.TASK_TRANSITIONS`) is the TaskManager's to
apply; this module stores whatever it is told.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from runtime.errors import LogicalError
from runtime.models.enums import TaskStatus
from runtime.models.events import Event
from runtime.models.records import Task
from runtime.store._tx import Conn, fetch_page, fetchrow_with_events

__all__ = [
    "COLUMNS",
    "claim_request_bodies",
    "claim_request_body",
    "counts_by_status",
    "dependents",
    "get",
    "insert",
    "insert_many",
    "leased_by",
    "list_tasks",
    "update",
]

COLUMNS: tuple[str, ...] = (
    "id",
    "project_id",
    "parent_id",
    "title",
    "description",
    "required_capabilities",
    "parameters",
    "priority",
    "dependencies",
    "deadline",
    "attempt_timeout_s",
    "max_attempts",
    "idempotency_key",
    "fan_out",
    "status",
    "attempt",
    "lease",
    "assigned_to",
    "result",
    "error",
    "attempt_errors",
    "not_before",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "trace_context",
)
"""The columns of `tasks`: what `insert` writes; all but `id` are what `update` may set."""
_UPDATABLE = frozenset(COLUMNS) - {"id"}

_INSERT = (
    f"INSERT INTO tasks ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join(f'${n}' for n in range(1, len(COLUMNS) + 1))})"
    " ON CONFLICT (idempotency_key) DO NOTHING"
)
_INSERT_ANY = _INSERT.replace("ON CONFLICT (idempotency_key)", "ON CONFLICT")


def _values(task: Task) -> tuple[Any, ...]:
    return tuple(getattr(task, column) for column in COLUMNS)


async def insert(conn: Conn, task: Task) -> tuple[Task, bool]:
    """Store `task` unless its idempotency key is taken: (stored task, whether it is new).

    On a key already used, the first task is returned with False and nothing is written.
    """
    for _ in range(3):
        row = await conn.fetchrow(_INSERT + " RETURNING *", *_values(task))
        if row is not None:
            return Task.from_row(row), True
        row = await conn.fetchrow(
            "SELECT * FROM tasks WHERE idempotency_key = $1", task.idempotency_key
        )
        if row is not None:
            return Task.from_row(row), False
        # The conflicting task was deleted between the two statements: try again.
    raise RuntimeError(f"idempotency key {task.idempotency_key!r} kept changing hands")


async def claim_request_body(conn: Conn, idempotency_key: str, body_sha256: str) -> str:
    """Record `body_sha256` as what `idempotency_key` was first sent with, unless one is
    recorded already; returns the recorded hash (the first sender's), to compare."""
    recorded = await conn.fetchval(
        "INSERT INTO task_request_bodies (idempotency_key, body_sha256) VALUES ($1, $2)"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING body_sha256",
        idempotency_key,
        body_sha256,
    )
    if recorded is None:
        recorded = await conn.fetchval(
            "SELECT body_sha256 FROM task_request_bodies WHERE idempotency_key = $1",
            idempotency_key,
        )
    return recorded or body_sha256


async def claim_request_bodies(conn: Conn, claims: dict[str, str]) -> dict[str, str]:
    """`claim_request_body` for many keys in one statement: {key: the recorded hash}."""
    if not claims:
        return {}
    keys, hashes = list(claims), list(claims.values())
    rows = await conn.fetch(
        "INSERT INTO task_request_bodies (idempotency_key, body_sha256)"
        " SELECT * FROM unnest($1::text[], $2::text[])"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key, body_sha256",
        keys,
        hashes,
    )
    recorded = {row["idempotency_key"]: row["body_sha256"] for row in rows}
    taken = [key for key in keys if key not in recorded]
    if taken:  # claimed before (or by a concurrent claim that committed meanwhile)
        rows = await conn.fetch(
            "SELECT idempotency_key, body_sha256 FROM task_request_bodies"
            " WHERE idempotency_key = ANY($1::text[])",
            taken,
        )
        recorded |= {row["idempotency_key"]: row["body_sha256"] for row in rows}
    return {key: recorded.get(key, digest) for key, digest in claims.items()}


_FOREIGN_KEYS = {"tasks_parent_id_fkey": "parent_id", "tasks_project_id_fkey": "project_id"}


async def insert_many(conn: Conn, tasks: Sequence[Task]) -> list[tuple[Task, bool]]:
    """Bulk `insert`: one pipelined, atomic batch, then one lookup of what was there.

    Returns (stored task, whether it is new) for each input, in input order. A task whose
    key was already used (before, or earlier in the same batch) maps to the first task; a
    task whose id is stored already (a submit retried after its answer was lost) maps to
    the stored one.
    """
    if not tasks:
        return []
    try:
        rows = await conn.fetchmany(_INSERT_ANY + " RETURNING id", [_values(t) for t in tasks])
    except asyncpg.ForeignKeyViolationError as exc:  # an unknown parent or project
        field = _FOREIGN_KEYS.get(exc.constraint_name or "", exc.constraint_name)
        raise LogicalError(f"{field}: {exc.detail or 'no such row'}") from None
    inserted = {row["id"] for row in rows}
    others = [t for t in tasks if t.id not in inserted]
    by_key: dict[str, Task] = {}
    by_id: dict[UUID, Task] = {}
    if others:
        rows = await conn.fetch(
            "SELECT * FROM tasks WHERE idempotency_key = ANY($1::text[]) OR id = ANY($2::uuid[])",
            [t.idempotency_key for t in others if t.idempotency_key],
            [t.id for t in others],
        )
        for row in rows:
            stored = Task.from_row(row)
            by_id[stored.id] = stored
            if stored.idempotency_key:
                by_key[stored.idempotency_key] = stored
    return [
        (task, True)
        if task.id in inserted
        else (by_key.get(task.idempotency_key or "") or by_id[task.id], False)
        for task in tasks
    ]


async def get(conn: Conn, id: UUID) -> Task | None:
    row = await conn.fetchrow("SELECT * FROM tasks WHERE id = $1", id)
    return Task.from_row(row) if row else None


async def list_tasks(
    conn: Conn,
    status: TaskStatus | str | None = None,
    capability: str | None = None,
    project_id: UUID | None = None,
    limit: int = 50,
    after: tuple[datetime, UUID] | None = None,
    newest_first: bool = False,
) -> list[Task]:
    """One page, oldest first (or newest first); pass the last item's `(created_at, id)` as
    `after` for the next.

    `capability` keeps tasks that require it (among others).
    """
    filters = [
        ("status = {}", TaskStatus(status) if status is not None else None),
        ("required_capabilities @> ARRAY[{}]::text[]", capability),
        ("project_id = {}", project_id),
    ]
    rows = await fetch_page(
        conn, "SELECT * FROM tasks", filters, limit=limit, after=after, newest_first=newest_first
    )
    return [Task.from_row(row) for row in rows]


async def dependents(conn: Conn, task_id: UUID) -> list[Task]:
    """The tasks that wait on `task_id`: the ones to re-check when it ends."""
    rows = await conn.fetch(
        "SELECT * FROM tasks WHERE dependencies @> ARRAY[$1]::uuid[] ORDER BY created_at, id",
        task_id,
    )
    return [Task.from_row(row) for row in rows]


async def leased_by(conn: Conn, agent_id: str) -> list[Task]:
    """The tasks `agent_id` holds a lease on: the ones to re-queue when it dies."""
    rows = await conn.fetch(
        "SELECT * FROM tasks WHERE assigned_to = $1 AND status IN ('assigned', 'running')"
        " ORDER BY created_at, id",
        agent_id,
    )
    return [Task.from_row(row) for row in rows]


async def counts_by_status(conn: Conn) -> dict[str, int]:
    """How many tasks are in each status; every status is present, zero included."""
    counts = {status.value: 0 for status in TaskStatus}
    rows = await conn.fetch("SELECT status, count(*) AS n FROM tasks GROUP BY status")
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


async def update(
    conn: Conn,
    task_id: UUID,
    *,
    expect_attempt: int | None = None,
    expect_lease: int | None = None,
    events: Sequence[Event] = (),
    **fields: Any,
) -> Task | None:
    """Set `fields` (column names) on a task and return it, with its events.

    `updated_at` is set to now unless given. With `expect_lease` (or `expect_attempt`), the
    change is made only while the row's `lease` (`attempt`) equals it (fencing). Returns
    None, changing nothing and queueing no event, when the task is missing or stale. An
    unknown field raises ValueError before anything is sent.
    """
    # Names are checked against the columns before they are put into the SQL text.
    unknown = sorted(set(fields) - _UPDATABLE)
    if unknown:
        raise ValueError(f"fields: not updatable task columns: {unknown}")
    if not fields:
        raise ValueError("fields: nothing to update")
    fields.setdefault("updated_at", None)
    args: list[Any] = [task_id]
    sets = []
    for name, value in fields.items():
        if name == "updated_at" and value is None:
            sets.append("updated_at = now()")
            continue
        args.append(value)
        sets.append(f"{name} = ${len(args)}")
    sql = f"UPDATE tasks SET {', '.join(sets)} WHERE id = $1"
    if expect_attempt is not None:
        args.append(expect_attempt)
        sql += f" AND attempt = ${len(args)}"
    if expect_lease is not None:
        args.append(expect_lease)
        sql += f" AND lease = ${len(args)}"
    sql += " RETURNING *"
    row = await fetchrow_with_events(conn, sql, args, events)
    return Task.from_row(row) if row else None
