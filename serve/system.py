"""What one ingress replica holds: its settings, PostgreSQL pool, NATS connection, and
the handles it calls (task manager shards, the root supervisor)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from actors.tasks import TaskClient
from runtime.bus import Bus
from runtime.config import Settings
from runtime.store.pool import create_pool
from serve.auth import Authenticator
from serve.batching import SubmitBatcher
from supervisors.tree import get_root

__all__ = ["System"]


@dataclass
class System:
    settings: Settings
    pool: asyncpg.Pool
    bus: Bus
    auth: Authenticator
    tasks: TaskClient
    submits: SubmitBatcher
    started_at: float = field(default_factory=time.monotonic)

    @classmethod
    async def connect(cls, settings: Settings) -> System:
        if not settings.database_dsn or not settings.nats_servers:
            raise RuntimeError("the ingress needs database_url and nats_url")
        pool = await create_pool(settings.database_dsn, min_size=2, max_size=10)
        bus = await Bus.connect(
            settings.nats_servers, name="rayvisor-http", stream=settings.stream_name
        )
        tasks = TaskClient(settings.namespace, settings.task_shards)
        return cls(
            settings=settings,
            pool=pool,
            bus=bus,
            auth=Authenticator(pool, settings.http.key_cache_s),
            tasks=tasks,
            submits=SubmitBatcher(tasks),
        )

    def root(self) -> Any | None:
        """The root supervisor's handle, or None when no tree runs in the namespace."""
        return get_root(self.settings.namespace)

    async def close(self) -> None:
        await self.bus.close()
        await self.pool.close()
