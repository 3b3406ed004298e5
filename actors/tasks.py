"""`TaskClient`: the Python API to the task queue for code in the cluster.

It routes each task to its TaskManager shard by id (`id.int % shards`), so a task's
every call goes to the one actor that owns it.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import ray

from actors.task_manager import shard_of, task_manager_name

__all__ = ["TaskClient"]


class TaskClient:
    def __init__(self, namespace: str, shards: int = 1) -> None:
        self.namespace = namespace
        self.shards = shards
        self._handles: dict[int, Any] = {}

    def _tm(self, shard: int) -> Any:
        if shard not in self._handles:
            self._handles[shard] = ray.get_actor(task_manager_name(shard), self.namespace)
        return self._handles[shard]

    def _owner(self, task_id: str | UUID) -> Any:
        return self._tm(shard_of(UUID(str(task_id)), self.shards))

    async def submit(self, **task: Any) -> dict[str, Any]:
        """Submit one task (the fields of TaskCreate); returns it as stored."""
        return (await self.submit_many([task]))[0]

    async def submit_many(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Submit many tasks, one call per shard; results in the order given."""
        by_shard: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        for index, task in enumerate(tasks):
            item = {**task, "id": str(task.get("id") or uuid4())}
            by_shard.setdefault(shard_of(UUID(item["id"]), self.shards), []).append((index, item))
        answers = await asyncio.gather(
            *(
                self._tm(s).submit_many.remote([i for _, i in items])
                for s, items in by_shard.items()
            )
        )
        out: list[dict[str, Any]] = [{} for _ in tasks]
        for (_, items), stored in zip(by_shard.items(), answers, strict=True):
            for (index, _), task in zip(items, stored, strict=True):
                out[index] = task
        return out

    async def get(self, task_id: str | UUID) -> dict[str, Any]:
        return await self._owner(task_id).get.remote(str(task_id))

    async def wait(self, task_id: str | UUID, timeout_s: float = 60) -> dict[str, Any]:
        """The task once it has ended (completed, failed, cancelled, timed_out)."""
        return await self._owner(task_id).wait.remote(str(task_id), timeout_s)

    async def cancel(self, task_id: str | UUID) -> dict[str, Any]:
        return await self._owner(task_id).cancel.remote(str(task_id))

    async def list(
        self,
        status: str | None = None,
        capability: str | None = None,
        limit: int = 50,
        after: tuple[str, str] | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        return await self._tm(0).list_tasks.remote(status, capability, limit, after, newest_first)

    async def statistics(self) -> list[dict[str, Any]]:
        return await asyncio.gather(*(self._tm(s).statistics.remote() for s in range(self.shards)))
