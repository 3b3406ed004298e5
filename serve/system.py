"""What one ingress replica holds: its settings, PostgreSQL pool, NATS connection (and the
NATS server's monitoring, when its URL is known), and the actors it calls (task manager
shards, supervisors) by name: each is a `NamedActor`, found again after its supervisor (or
Ray, for the root) restarts it."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from actors.tasks import RESTART_WAIT_S, NamedActor, TaskClient
from runtime.bus import Bus
from runtime.config import Settings
from runtime.store.pool import create_pool
from runtime.tools import ToolRegistry
from serve.auth import Authenticator
from serve.batching import SubmitBatcher
from serve.nats_monitor import NatsMonitor
from supervisors.tree import ROOT_NAME, get_root

__all__ = ["System"]


@dataclass
class System:
    settings: Settings
    pool: asyncpg.Pool
    bus: Bus
    auth: Authenticator
    tasks: TaskClient
    submits: SubmitBatcher
    nats_monitor: NatsMonitor | None = None
    """nats-server's `/varz`; None when no monitoring URL is configured."""
    started_at: float = field(default_factory=time.monotonic)
    restart_wait_s: float = RESTART_WAIT_S
    _named: dict[str, NamedActor] = field(default_factory=dict)
    _tools: ToolRegistry | None = None

    @classmethod
    async def connect(cls, settings: Settings) -> System:
        if not settings.database_dsn or not settings.nats_servers:
            raise RuntimeError("the ingress needs database_url and nats_url")
        pool = await create_pool(settings.database_dsn, min_size=2, max_size=10)
        bus = await Bus.connect(
            settings.nats_servers, name="rayvisor-http", stream=settings.stream_name
        )
        tasks = TaskClient(settings.namespace, settings.task_shards)
        monitor = None
        if settings.nats_monitor_url is not None:
            monitor = NatsMonitor(str(settings.nats_monitor_url))
            with contextlib.suppress(httpx.HTTPError):  # the first interval starts here
                await monitor.figures()
        return cls(
            settings=settings,
            pool=pool,
            bus=bus,
            auth=Authenticator.from_settings(pool, settings, bus),
            tasks=tasks,
            submits=SubmitBatcher(tasks),
            nats_monitor=monitor,
        )

    def tools(self) -> ToolRegistry:
        """The tools as configured (custom ones imported here on first use)."""
        if self._tools is None:
            self._tools = ToolRegistry.from_settings(self.settings.tools)
        return self._tools

    def root(self) -> Any | None:
        """The root supervisor's handle now, or None when no tree runs in the namespace."""
        return get_root(self.settings.namespace)

    def named(self, name: str) -> NamedActor:
        """The actor `name` of the tree's namespace, waited for while it is restarted."""
        actor = self._named.get(name)
        if actor is None:
            actor = self._named[name] = NamedActor(
                name, self.settings.namespace, self.restart_wait_s
            )
        return actor

    @property
    def root_actor(self) -> NamedActor:
        return self.named(ROOT_NAME)

    async def close(self) -> None:
        await self.auth.close()
        if self.nats_monitor is not None:
            await self.nats_monitor.close()
        await self.bus.close()
        await self.pool.close()
