"""Group commit: task state changes from many callers written in one statement.

A caller hands its rows (full task states) and events to `write()` and waits. The
committer gathers everything that arrives while the batch before is still being written,
and under load also within `window_s` of the first item (`FlushPolicy`: a lone write on an
idle committer goes at once, so one task alone never waits the window), and writes it with
one statement: the rows' UPDATE and the events' outbox INSERT as data-modifying CTEs over
`unnest`ed arrays, plus the outbox NOTIFY, which PostgreSQL runs as one transaction. One
round trip per batch, however many rows; then it wakes all the callers.

Guarantees:
- A change is acknowledged only after it is durable. While PostgreSQL cannot be reached
  the batch is retried (backoff up to `max_retry_delay_s`) until it answers: nothing is
  dropped and nothing is reported before it is written. A retry after a commit whose
  answer was lost writes the same state again and no event twice (`ON CONFLICT`).
- Fencing in PostgreSQL: a row carries the lease it expects the task to hold; a task that
  holds another lease is left alone, and its events are not queued (`write` returns it).
  With an owner `(shard, epoch)`, nothing is written unless `shard_owners` still names
  that epoch (read `FOR SHARE`, so an owner change waits for a batch in flight and every
  batch after it fails): `Fenced` is raised, and the shard's manager must stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from runtime import telemetry
from runtime.errors import TransientError
from runtime.models.events import Event
from runtime.store.outbox import NOTIFY_CHANNEL

_log = logging.getLogger(__name__)

__all__ = ["TASK_STATE_COLUMNS", "Fenced", "FlushPolicy", "GroupCommitter"]

# The mutable part of a task row, written whole by its one writer (the TaskManager shard).
TASK_STATE_COLUMNS: tuple[str, ...] = (
    "status",
    "attempt",
    "lease",
    "assigned_to",
    "result",
    "error",
    "attempt_errors",
    "not_before",
    "started_at",
    "finished_at",
)
# A row is (id, expected lease, *TASK_STATE_COLUMNS), sent as arrays; jsonb goes as text (a
# list value would otherwise be taken for a nested array) and is cast back in SQL.
_ROW_TYPES = ("uuid", "bigint", "text", "int", "bigint", "text", "text", "text", "text",
              "timestamptz", "timestamptz", "timestamptz")  # fmt: skip
_JSON_COLUMNS = frozenset({"result", "error", "attempt_errors"})
_JSON_INDEXES = frozenset(
    i for i, c in enumerate(TASK_STATE_COLUMNS, start=2) if c in _JSON_COLUMNS
)
_N = len(_ROW_TYPES)
_SETS = ", ".join(
    f"{c} = v.{c}::jsonb" if c in _JSON_COLUMNS else f"{c} = v.{c}" for c in TASK_STATE_COLUMNS
)
_ARRAYS = ", ".join(f"${i}::{t}[]" for i, t in enumerate(_ROW_TYPES, start=1))

_COMMIT = f"""
WITH owner AS (
    SELECT 1 FROM shard_owners WHERE shard = ${_N + 7}::int AND epoch = ${_N + 8}::bigint
    FOR SHARE
), owned AS (
    SELECT ${_N + 7}::int IS NULL OR EXISTS (SELECT 1 FROM owner) AS ok
), changed AS (
    UPDATE tasks AS t SET {_SETS}, updated_at = now()
    FROM unnest({_ARRAYS}) AS v(id, expect, {", ".join(TASK_STATE_COLUMNS)})
    WHERE t.id = v.id AND t.lease IN (v.expect, v.lease) AND (SELECT ok FROM owned)
    RETURNING t.id
), queued AS (
    INSERT INTO outbox (id, subject, payload, headers)
    SELECT e.id, e.subject, e.payload::jsonb, e.headers::jsonb
    FROM unnest(${_N + 1}::uuid[], ${_N + 2}::text[], ${_N + 3}::text[], ${_N + 4}::uuid[],
                ${_N + 6}::text[])
        AS e(id, subject, payload, task_id, headers)
    WHERE e.task_id IN (SELECT id FROM changed)
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT ok FROM owned) AS owned, ARRAY(SELECT id FROM changed) AS written,
       CASE WHEN ${_N + 5}::int > 0 AND EXISTS (SELECT 1 FROM queued)
            THEN pg_notify('{NOTIFY_CHANNEL}', '') END AS notified
"""

# PostgreSQL cannot be reached (or is restarting), or the connection broke under a
# statement (asyncpg's InternalClientError when a terminated backend's notice arrives
# mid-operation): retry the batch, on a new connection
_UNREACHABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    TimeoutError,
)


class Fenced(TransientError):
    """The shard is owned by a newer epoch: this manager is stale and must stop."""


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class FlushPolicy:
    """How long a new batch stays open before it is written: a pure decision.

    The window pays off only when other writes are coming: then one statement carries
    them all. An idle committer (no statement in flight) whose last batch held one write
    sees no such traffic, so it writes at once: a lone task's writes (its lease, then its
    start and result) would otherwise each wait the whole window. Under load (a statement
    in flight, or the last batch gathered several writes) the window holds as before, and
    a batch always waits for the one in flight, which is where most batching comes from.
    """

    window_s: float = 0.005
    """The longest a batch waits for more writes under load (`batch_window_ms`)."""

    def delay_s(self, committing: bool, last_batch_writes: int) -> float:
        """Seconds to hold a batch just opened, given whether a statement is in flight
        and how many `write` calls the last batch carried (0: none yet)."""
        if self.window_s <= 0 or (not committing and last_batch_writes <= 1):
            return 0.0
        return self.window_s


@dataclass
class _Batch:
    rows: dict[Any, tuple[Any, ...]] = field(default_factory=dict)  # task id -> latest state
    events: list[Event] = field(default_factory=list)
    writes: int = 0  # `write` calls that joined it
    headers: list[str] = field(default_factory=list)  # each event's trace headers, as JSON
    done: asyncio.Future[frozenset[Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def add(self, row: tuple[Any, ...]) -> None:
        """The latest state of a task wins within a batch; the expected lease is the one
        the first of its rows expected (what the row holds before this batch)."""
        earlier = self.rows.get(row[0])
        self.rows[row[0]] = row if earlier is None else (row[0], earlier[1], *row[2:])

    def arguments(self, owner: tuple[int, int] | None) -> list[Any]:
        """The statement's parameters: one array per column, then the events', the owner."""
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
            [getattr(e, "task_id", None) for e in events],
            len(events),
            self.headers,
            owner[0] if owner else None,
            owner[1] if owner else None,
        ]


class GroupCommitter:
    """Batches task state rows and their events into one statement per window.

    It keeps one connection of the pool for itself (no acquire and reset per batch) and
    gives it back when a statement fails, taking a fresh one for the next try.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        window_s: float = 0.005,
        owner: tuple[int, int] | None = None,
        max_retry_delay_s: float = 1.0,
    ) -> None:
        self.pool = pool
        self.window_s = window_s
        self.policy = FlushPolicy(window_s)
        self.owner = owner
        self.max_retry_delay_s = max_retry_delay_s
        self.transactions = 0
        self.rows_written = 0
        self.retries = 0
        self.immediate = 0
        """Batches written without waiting the window (the committer was idle)."""
        self._last_writes = 0  # `write` calls in the batch last formed
        self._batch: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._order = asyncio.Lock()  # batches commit in the order they were formed
        self._conn: asyncpg.Connection | None = None

    @property
    def committing(self) -> bool:
        """A statement is in flight (a batch formed now waits for it)."""
        return self._order.locked()

    async def write(
        self,
        rows: Sequence[tuple[Any, ...]],
        events: Sequence[Event] = (),
        headers: Sequence[Mapping[str, str] | None] | None = None,
    ) -> frozenset[Any]:
        """Durably write `rows` ((id, expected lease, *TASK_STATE_COLUMNS) tuples) and the
        `events` of their tasks, each published with its `headers` (its task's trace
        context; default: the caller's); the ids of the rows refused for holding another
        lease."""
        if not rows and not events:
            return frozenset()
        if self._batch is None:
            self._batch = _Batch()
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())
        batch = self._batch
        batch.writes += 1
        for row in rows:
            batch.add(row)
        batch.events.extend(events)
        if headers is None:
            headers = [telemetry.carrier()] * len(events)
        if len(headers) != len(events):
            raise ValueError(f"{len(events)} events but {len(headers)} headers")
        batch.headers.extend(_json(h) if h else "{}" for h in headers)  # type: ignore[misc]
        written = await asyncio.shield(batch.done)
        return frozenset(row[0] for row in rows if row[0] not in written)

    async def _flush_later(self) -> None:
        delay_s = self.policy.delay_s(self.committing, self._last_writes)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        else:  # writes made in this turn of the loop still join
            self.immediate += 1
        async with self._order:
            # the batch stays open while the one before it commits: under load, each
            # statement carries everything that arrived meanwhile
            batch, self._batch = self._batch, None
            assert batch is not None
            self._last_writes = batch.writes
            await self._commit(batch)

    async def _commit(self, batch: _Batch) -> None:
        try:
            written = await self._execute_until_answered(batch.arguments(self.owner))
        except BaseException as exc:
            batch.done.set_exception(exc)
            with contextlib.suppress(BaseException):
                batch.done.exception()  # retrieved: callers get it from write()
            if not isinstance(exc, Exception):
                raise
            return
        self.transactions += 1
        self.rows_written += len(written)
        batch.done.set_result(written)

    async def _execute_until_answered(self, arguments: list[Any]) -> frozenset[Any]:
        delay_s = 0.05
        while True:
            try:
                return await self._execute(arguments)
            except _UNREACHABLE as exc:
                self.retries += 1
                if self.retries in (1, 10) or self.retries % 100 == 0:
                    _log.warning("group commit: PostgreSQL unreachable, retrying: %r", exc)
                await asyncio.sleep(delay_s)
                delay_s = min(self.max_retry_delay_s, delay_s * 2)

    async def _execute(self, arguments: list[Any]) -> frozenset[Any]:
        if self._conn is None:
            self._conn = await self.pool.acquire(timeout=10)
        try:
            row = await self._conn.fetchrow(_COMMIT, *arguments)
        except BaseException:
            await self._give_back()
            raise
        assert row is not None
        if not row["owned"]:
            raise Fenced(f"shard {self.owner[0] if self.owner else '?'} has a newer owner "
                         f"than epoch {self.owner[1] if self.owner else '?'}")  # fmt: skip
        return frozenset(row["written"])

    async def _give_back(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.release(conn), 5)

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        await self._give_back()
