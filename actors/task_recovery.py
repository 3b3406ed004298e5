"""How a task manager shard takes over: it becomes the shard's owner (a new epoch in
PostgreSQL, which fences every older owner out), rebuilds its queue from PostgreSQL and
adopts the leases it finds (it asks each agent what it holds; only leases whose agent is
gone are handed back), and sweeps for what a dead predecessor committed late.

A mixin of `TaskManager`, kept apart because it runs once per incarnation (the sweeps a
few times after): the queue it fills is the manager's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import ray

from actors.live_task import LiveTask
from actors.registry import AgentEntry, Registry
from runtime.models.records import Task
from runtime.state_machines import TaskStatus

__all__ = ["ORPHAN_SWEEPS_S", "ShardRecovery", "shard_of"]

S = TaskStatus
_ACTIVE = (S.PENDING, S.QUEUED, S.ASSIGNED, S.RUNNING)
ORPHAN_SWEEPS_S = (2.0, 8.0, 20.0)  # after a start: what a dead predecessor wrote late


def shard_of(task_id: UUID, shards: int) -> int:
    return task_id.int % shards


class ShardRecovery:
    """Taking the shard, rebuilding the queue, adopting leases."""

    shard: int
    shards: int
    namespace: str
    pool: Any
    registry: Registry
    _started_at: datetime
    _wake: asyncio.Event

    if TYPE_CHECKING:  # the task manager's own, used here

        def _adopt(self, record: Task) -> LiveTask: ...

        def _known(self, task_id: UUID) -> bool: ...

        async def _resolve_dependencies(self, pending: list[LiveTask]) -> None: ...

        async def _discover_agents(self) -> None: ...

        def _hand_back(self, live: LiveTask, reason: str, *, died: bool = False) -> None: ...

        def _spawn(self, coro: Any) -> asyncio.Task[Any]: ...

        async def _run_batch(
            self, agent: AgentEntry, batch: list[tuple[LiveTask, int]], adopt: bool = False
        ) -> None: ...

        async def _flush_changes(self) -> None: ...

    async def _take_shard(self) -> int:
        """Become the shard's owner: a new epoch, which fences every older owner out."""
        context = ray.get_runtime_context()
        owner = f"{self.namespace}/tm:{self.shard} actor {context.get_actor_id()} pid {os.getpid()}"
        return await self.pool.fetchval(
            "INSERT INTO shard_owners (shard, epoch, owner) VALUES ($1, 1, $2)"
            " ON CONFLICT (shard) DO UPDATE SET epoch = shard_owners.epoch + 1,"
            " owner = EXCLUDED.owner, taken_at = now() RETURNING epoch",
            self.shard,
            owner,
        )

    async def _rebuild(self) -> None:
        """Load this shard's unfinished tasks and adopt the leases among them."""
        self._started_at = datetime.now(UTC)
        await self._load(await self._active_rows())

    async def _active_rows(self) -> list[Any]:
        rows = await self.pool.fetch(
            "SELECT * FROM tasks WHERE status = ANY($1::text[]) ORDER BY created_at, id",
            [s.value for s in _ACTIVE],
        )
        return [r for r in rows if shard_of(r["id"], self.shards) == self.shard]

    async def _load(self, rows: list[Any]) -> None:
        leased: dict[str, list[LiveTask]] = {}
        loaded = []
        for row in rows:
            live = self._adopt(Task.from_row(row))
            loaded.append(live)
            if live.record.status in (S.ASSIGNED, S.RUNNING):
                leased.setdefault(live.record.assigned_to or "", []).append(live)
        pending = [t for t in loaded if t.record.status is S.PENDING]
        await self._resolve_dependencies(pending)
        if leased:
            with contextlib.suppress(Exception):  # a supervisor that does not answer: later
                await asyncio.wait_for(self._discover_agents(), 10)
        for agent_id, lives in leased.items():
            agent = self.registry.get(agent_id)
            if agent is None:  # gone: nothing of its leases will come back
                for live in lives:
                    self._hand_back(live, f"agent {agent_id} is gone", died=True)
                continue
            for live in lives:
                self.registry.acquire(agent)
                live.begin_lease_span(agent_id, adopted=True)
            self._spawn(self._run_batch(agent, [(t, t.record.lease) for t in lives], adopt=True))
        await self._flush_changes()

    async def _sweep_orphans(self) -> None:
        """Adopt what a dead predecessor committed after this incarnation read the queue
        (a submit or a lease of its still in flight in PostgreSQL when it died)."""
        for delay_s in ORPHAN_SWEEPS_S:
            await asyncio.sleep(delay_s)
            with contextlib.suppress(Exception):
                rows = await self._active_rows()
                await self._load([r for r in rows if not self._known(r["id"])
                                  and r["created_at"] <= self._started_at])  # fmt: skip
                self._wake.set()
