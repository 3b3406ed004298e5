"""What a TaskManager shard answers about tasks (part of `TaskManager`): reads come from
PostgreSQL, the record, since memory may be ahead of what is committed; `wait` is answered
from memory when the task ends."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from actors.live_task import LiveTask
from actors.registry import Registry
from runtime.errors import NotFound
from runtime.models.records import Task
from runtime.state_machines import TaskStatus
from runtime.store import tasks as task_store
from runtime.store.group_commit import GroupCommitter

__all__ = ["TaskReads"]


class TaskReads:
    """The TaskManager's reading methods; it provides the attributes below."""

    shard: int
    pool: asyncpg.Pool
    registry: Registry
    committer: GroupCommitter
    counters: dict[str, int]
    tasks: dict[UUID, LiveTask]
    by_status: Counter[TaskStatus]
    _waiters: dict[UUID, list[asyncio.Future[dict[str, Any]]]]
    _up: asyncio.Event

    async def get(self, task_id: str) -> dict[str, Any]:
        """The task as PostgreSQL holds it: memory may be ahead of what is committed."""
        await self._up.wait()
        tid = UUID(task_id)
        record = await task_store.get(self.pool, tid)
        if record is None:
            raise NotFound(f"no task {task_id}")
        return record.model_dump(mode="json")

    async def wait(self, task_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """The task once it has ended; TimeoutError if it has not within `timeout_s`."""
        await self._up.wait()
        tid = UUID(task_id)
        if tid not in self.tasks:
            return await self.get(task_id)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tid, []).append(future)
        return await asyncio.wait_for(future, timeout_s)

    async def list_tasks(
        self,
        status: str | None = None,
        capability: str | None = None,
        limit: int = 50,
        after: tuple[str, str] | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Tasks of every shard from the record, oldest first, `after` a (created_at, id)."""
        await self._up.wait()
        cursor = (datetime.fromisoformat(after[0]), UUID(after[1])) if after else None
        found = await task_store.list_tasks(
            self.pool, status=status, capability=capability, limit=limit, after=cursor,
            newest_first=newest_first,
        )  # fmt: skip
        return [t.model_dump(mode="json") for t in found]

    @staticmethod
    def _view(record: Task | LiveTask) -> dict[str, Any]:
        record = record.record if isinstance(record, LiveTask) else record
        return record.model_dump(mode="json")

    async def statistics(self) -> dict[str, Any]:
        await self._up.wait()
        return {
            "shard": self.shard,
            "active": {s.value: n for s, n in self.by_status.items() if n},
            "agents": len(self.registry),
            "commits": self.committer.transactions,
            **self.counters,
        }
