"""What an `AgentHost` wires for `ctx` beyond tasks: its capabilities (the template's or
the class's, plus specializations), tools, the model catalog, the inbox for `ask`/`tell`
and the discovery feed.

A mixin of `AgentHost`, kept apart from the host's lifecycle and task handling: none of it
touches the state machine or a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import ray
from pydantic import ValidationError
from ray.exceptions import RayError

from actors.agent import _uuid_or_none
from actors.discovery_feed import DiscoveryFeed
from actors.messaging import Mailbox
from runtime.config import ModelSettings, ToolsSettings, format_validation_error
from runtime.errors import ConfigError
from runtime.models.events import DiscoveryShared
from runtime.models.records import AgentTemplate, Message
from runtime.store import agents as agent_store
from runtime.tools import ToolRegistry

if TYPE_CHECKING:
    import asyncpg

    from actors.agent import Agent, AgentContext
    from runtime.bus import Bus
    from runtime.config import Settings

__all__ = ["HostWiring"]

_log = logging.getLogger("actors.host")
_RETRY_S = 1.0


class HostWiring:
    agent: Agent | None
    ctx: AgentContext | None
    settings: Settings | None
    template: str | None
    tools_config: dict[str, Any] | None
    models_config: dict[str, Any] | None
    child_id: str
    namespace: str
    _pool: asyncpg.Pool | None
    _own_capabilities: list[str]
    _capabilities: list[str]
    _mailbox: Mailbox | None
    _feed: DiscoveryFeed | None

    def _bus_future(self) -> asyncio.Future[Bus]:
        raise NotImplementedError

    # ---- capabilities --------------------------------------------------------------------

    async def _resolve_template(self, pool: asyncpg.Pool) -> AgentTemplate | None:
        """The template (given as an id or a name), looked up while warming."""
        if not self.template:
            return None
        template_id = _uuid_or_none(self.template)
        if template_id is not None:
            template = await agent_store.get_template(pool, template_id)
        else:
            template = await agent_store.get_template_by_name(pool, self.template)
        if template is None:
            _log.warning("agent template %r is not registered", self.template)
        return template

    def _set_own_capabilities(self, agent: Agent, template: AgentTemplate | None) -> None:
        """A template made over the API says what its agents can do; else the class."""
        declared = template.capabilities if template and template.source == "api" else []
        self._own_capabilities = sorted(declared or agent.capabilities)
        self._capabilities = list(self._own_capabilities)

    async def _with_specializations(self, agent_id: str) -> list[str]:
        """The agent's capabilities: its own and those its specializations add."""
        assert self._pool is not None
        extra = await self._pool.fetch(
            "SELECT capability FROM agent_specializations WHERE agent_id = $1", agent_id
        )
        return sorted({*self._own_capabilities, *(row["capability"] for row in extra)})

    async def specialize(self) -> list[str]:
        """Read this agent's specializations again and have every task manager shard match
        on them at once (`POST /api/v1/agents/{id}/specializations`). The capabilities."""
        self._capabilities = await self._with_specializations(self.child_id)
        assert self._pool is not None
        await self._pool.execute(
            "UPDATE agents SET capabilities = $2, updated_at = now() WHERE id = $1",
            self.child_id,
            self._capabilities,
        )
        for shard in range(self.settings.task_shards if self.settings else 1):
            with contextlib.suppress(ValueError, RayError):
                tm = ray.get_actor(f"tm:{shard}", namespace=self.namespace)
                await tm.update_capabilities.remote(self.child_id, list(self._capabilities))
        return list(self._capabilities)

    # ---- tools and models ----------------------------------------------------------------

    def _model_catalog(self) -> dict[str, ModelSettings]:
        """The spec's catalog (the driver's rayvisor.yaml), else this worker's settings."""
        assert self.settings is not None
        if self.models_config is None:
            return dict(self.settings.models)
        return {n: ModelSettings.model_validate(m) for n, m in self.models_config.items()}

    def _tool_registry(self) -> ToolRegistry:
        """The spec's tools (the driver's rayvisor.yaml), else this worker's settings."""
        assert self.settings is not None
        if self.tools_config is None:
            return ToolRegistry.from_settings(self.settings.tools)
        try:
            return ToolRegistry.from_settings(ToolsSettings.model_validate(self.tools_config))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "tools", "tools")) from None

    # ---- inbox and discoveries -----------------------------------------------------------

    async def _open_inboxes(self) -> None:
        """Once NATS is connected: take messages (asks re-send until then), and resume the
        discoveries this agent subscribes to; tried again while NATS refuses."""
        assert self.agent is not None and self._mailbox is not None and self._feed is not None
        bus = await self._bus_future()
        await self._mailbox.open(bus)
        while True:
            try:
                await self._feed.resume(bus, self.agent.discovery_subscription)  # type: ignore[arg-type]
                return
            except Exception as exc:
                _log.warning("agent %s: discoveries not resumed yet: %r", self.child_id, exc)
                await asyncio.sleep(_RETRY_S)

    async def _close_inboxes(self) -> None:
        for inbox in (self._mailbox, self._feed):
            if inbox is not None:
                await inbox.close()

    async def _on_message(self, message: Message) -> Any:
        assert self.agent is not None and self.ctx is not None
        return await self.agent.on_message(message, self.ctx.detached())

    async def _on_discovery(self, discovery: DiscoveryShared) -> None:
        assert self.agent is not None and self.ctx is not None
        await self.agent.on_discovery(discovery, self.ctx.detached())
