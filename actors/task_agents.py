"""The agents a TaskManager shard leases to: registered by the agents themselves, found
again through the supervision tree, dropped on a supervisor's word (part of `TaskManager`).

An agent host registers each time it starts, so a restarted agent is registered again
under its id with its new handle; a restarted shard finds the agents that run through
`sup:agents` (and the Aggregator by its name) at once and every few seconds after.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import ray
from ray.exceptions import RayError

from actors.registry import AGGREGATOR_AGENT_ID, AGGREGATOR_NAME, Registry

__all__ = ["AgentDirectory"]


class AgentDirectory:
    """The TaskManager's agent methods; it provides the attributes below."""

    registry: Registry
    namespace: str
    _up: asyncio.Event
    _wake: asyncio.Event

    async def register_agent(
        self, agent_id: str, capabilities: list[str], handle: Any, capacity: int = 1
    ) -> None:
        """Called by an agent host each time it starts (so restarts re-register)."""
        await self._up.wait()
        self.registry.register(agent_id, capabilities, handle, capacity)
        self._wake.set()

    async def update_capabilities(self, agent_id: str, capabilities: list[str]) -> None:
        """The agent gained capabilities (a specialization): match on them from now on,
        without touching the work it holds."""
        await self._up.wait()
        entry = self.registry.get(agent_id)
        if entry is not None:
            entry.capabilities = frozenset(capabilities)
            self._wake.set()

    async def agent_down(self, agent_id: str) -> None:
        """A supervisor saw the agent die, hang or its circuit open: stop giving it work.

        The news may come after the agent's successor registered: an entry that answers
        a ping is that successor, and stays."""
        await self._up.wait()
        entry = self.registry.get(agent_id)
        if entry is None:
            return
        try:
            await asyncio.wait_for(entry.handle.rv_ping.remote(), 1.0)
        except (RayError, TimeoutError):
            self.registry.discard(entry)

    async def _discover_agents_periodically(self, every_s: float = 5.0) -> None:
        """Find live agents through the supervision tree (after a restart of this shard)."""
        while True:
            with contextlib.suppress(Exception):
                await self._discover_agents()
            await asyncio.sleep(every_s)

    async def _discover_agents(self) -> None:
        if AGGREGATOR_AGENT_ID not in self.registry:
            with contextlib.suppress(ValueError, RayError):
                aggregator = ray.get_actor(AGGREGATOR_NAME, namespace=self.namespace)
                info = await aggregator.describe.remote()
                self.registry.register(
                    AGGREGATOR_AGENT_ID, info["capabilities"], aggregator, info["prefetch"]
                )
        try:
            agents_sup = ray.get_actor("sup:agents", namespace=self.namespace)
        except ValueError:
            return
        for pool in await agents_sup.which_children.remote():
            pool_handle = await agents_sup.child_handle.remote(pool["id"])
            if pool_handle is None:
                continue
            for member in await pool_handle.which_children.remote():
                if member["state"] != "running" or member["id"] in self.registry:
                    continue
                handle = await pool_handle.child_handle.remote(member["id"])
                if handle is not None:
                    info = await handle.describe.remote()
                    self.registry.register(
                        member["id"], info["capabilities"], handle, info.get("prefetch", 1)
                    )
        self._wake.set()
