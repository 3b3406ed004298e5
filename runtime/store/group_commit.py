"""Group commit: task state changes from many callers written in one statement.

A caller hands its rows (full task states) and events to `write()` and waits. The
committer gathers everything that arrives within `window_s` of the first item (and for as
long as the batch before is still being written) and writes it with one statement: the
rows' UPDATE and the events' outbox INSERT as data-modifying CTEs over `unnest`ed arrays,
plus the outbox NOTIFY, which PostgreSQL runs as one transaction. One round trip per
batch, however many rows; then it wakes all the callers.
A change is acknowledged only after it is durable; throughput no longer stops at one
transaction per change. If the statement fails, every caller in the batch gets the
exception and nothing of the batch is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from runtime import telemetry
from runtime.models.events import Event
from runtime.store.outbox import NOTIFY_CHANNEL

__all__ = ["TASK_STATE_COLUMNS", "GroupCommitter"]

# The mutable part of a task row, written whole by its one writer (the TaskManager shard).
TASK_STATE_COLUMNS: tuple[str, ...] = (
    "status",
    "attempt",
    "assigned_to",
    "result",
    "error",
    "attempt_errors",
    "not_before",
    "started_at",
    "finished_at",
)
# (id, *TASK_STATE_COLUMNS) as arrays; jsonb goes as text (a list value would otherwise be
# taken for a nested array) and is cast back in SQL.
_ROW_TYPES = ("uuid", "text", "int", "text", "text", "text", "text", "timestamptz",
              "timestamptz", "timestamptz")  # fmt: skip
_JSON_COLUMNS = frozenset({"result", "error", "attempt_errors"})
_JSON_INDEXES = frozenset(
    i for i, c in enumerate(TASK_STATE_COLUMNS, start=1) if c in _JSON_COLUMNS
)

_COMMIT = f"""
WITH changed AS (
    UPDATE tasks AS t SET {
    ", ".join(
        f"{c} = v.{c}::jsonb" if c in _JSON_COLUMNS else f"{c} = v.{c}" for c in TASK_STATE_COLUMNS
    )
}, updated_at = now()
    FROM unnest({", ".join(f"${i}::{t}[]" for i, t in enumerate(_ROW_TYPES, start=1))})
        AS v(id, {", ".join(TASK_STATE_COLUMNS)})
    WHERE t.id = v.id
    RETURNING 1
), queued AS (
    INSERT INTO outbox (id, subject, payload, headers)
    SELECT id, subject, payload::jsonb, $15::jsonb
    FROM unnest($11::uuid[], $12::text[], $13::text[]) AS e(id, subject, payload)
    RETURNING 1
)
SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE $14::int > 0
"""


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


@dataclass
class _Batch:
    rows: dict[Any, tuple[Any, ...]] = field(default_factory=dict)  # task id -> latest state
    events: list[Event] = field(default_factory=list)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def arguments(self) -> list[Any]:
        """The statement's parameters: one array per column, then the events'."""
        columns: list[list[Any]] = [[] for _ in _ROW_TYPES]
        for row in self.rows.values():
            for i, value in enumerate(row):
                columns[i].append(_json(value) if i in _JSON_INDEXES else value)
        events = self.events
        return [
            *columns,
            [e.event_id for e in events],
            [e.subject() for e in events],
            [e.model_dump_json(by_alias=True) for e in events],
            len(events),
            telemetry.carrier(),
        ]


class GroupCommitter:
    """Batches task state rows and their events into one statement per window.

    It keeps one connection of the pool for itself (no acquire and reset per batch) and
    gives it back when a statement fails, taking a fresh one for the next batch.
    """

    def __init__(self, pool: asyncpg.Pool, window_s: float = 0.005) -> None:
        self.pool = pool
        self.window_s = window_s
        self.transactions = 0
        self.rows_written = 0
        self._batch: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._order = asyncio.Lock()  # batches commit in the order they were formed
        self._conn: asyncpg.Connection | None = None

    async def write(self, rows: Sequence[tuple[Any, ...]], events: Sequence[Event] = ()) -> None:
        """Durably write `rows` ((id, *TASK_STATE_COLUMNS) tuples) and `events`."""
        if not rows and not events:
            return
        if self._batch is None:
            self._batch = _Batch()
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())
        batch = self._batch
        for row in rows:
            batch.rows[row[0]] = row  # the latest state of a task wins within a batch
        batch.events.extend(events)
        await asyncio.shield(batch.done)

    async def _flush_later(self) -> None:
        if self.window_s > 0:
            await asyncio.sleep(self.window_s)
        async with self._order:
            # the batch stays open while the one before it commits: under load, each
            # statement carries everything that arrived meanwhile
            batch, self._batch = self._batch, None
            assert batch is not None
            await self._commit(batch)

    async def _commit(self, batch: _Batch) -> None:
        try:
            await self._execute(batch.arguments())
        except BaseException as exc:
            batch.done.set_exception(exc)
            with contextlib.suppress(BaseException):
                batch.done.exception()  # retrieved: callers get it from write()
            if not isinstance(exc, Exception):
                raise
            return
        self.transactions += 1
        self.rows_written += len(batch.rows)
        batch.done.set_result(None)

    async def _execute(self, arguments: list[Any]) -> None:
        if self._conn is None:
            self._conn = await self.pool.acquire()
        try:
            await self._conn.execute(_COMMIT, *arguments)
        except BaseException:
            await self._give_back()
            raise

    async def _give_back(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self.pool.release(conn)

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        await self._give_back()
