"""Group commit: task state changes from many callers written in one transaction.

A caller hands its rows (full task states) and events to `write()` and waits. The
committer gathers everything that arrives within `window_s` of the first item, writes
it with one `executemany` and one outbox insert in a single transaction, then wakes all
the callers. A change is acknowledged only after it is durable; throughput no longer
stops at one transaction per change. If the transaction fails, every caller in the
batch gets the exception and nothing of the batch is written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from runtime.models.events import Event
from runtime.store import outbox

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

_UPDATE = (
    "UPDATE tasks SET "
    + ", ".join(f"{name} = ${i}" for i, name in enumerate(TASK_STATE_COLUMNS, start=2))
    + ", updated_at = now() WHERE id = $1"
)


@dataclass
class _Batch:
    rows: dict[Any, tuple[Any, ...]] = field(default_factory=dict)  # task id -> latest state
    events: list[Event] = field(default_factory=list)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommitter:
    """Batches task state rows and their events into one transaction per window."""

    def __init__(self, pool: asyncpg.Pool, window_s: float = 0.005) -> None:
        self.pool = pool
        self.window_s = window_s
        self.transactions = 0
        self.rows_written = 0
        self._batch: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._order = asyncio.Lock()  # batches commit in the order they were formed

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
        batch, self._batch = self._batch, None
        assert batch is not None
        try:
            async with self._order, self.pool.acquire() as conn, conn.transaction():
                if batch.rows:
                    await conn.executemany(_UPDATE, list(batch.rows.values()))
                await outbox.add(conn, batch.events)
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

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
