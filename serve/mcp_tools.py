"""The MCP server's own tools: what each does (the function its REST route calls), the
scope it needs and its arguments (the REST API's pydantic models, or one of the query's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import mcp_types as types
from pydantic import BaseModel, ConfigDict, Field

from runtime.models.api import DiscoveryCreate, ProjectCreate, TaskCreate
from runtime.models.common import AGENT_ID_PATTERN, TYPE_NAME_PATTERN
from runtime.models.enums import AgentState, Scope
from runtime.models.records import ApiKey, Task
from runtime.store import agents as agent_store
from runtime.store import discoveries as discovery_store
from serve.deps import decode_cursor, page_of
from serve.routes import discoveries, projects, supervisors, tasks
from serve.system import System

__all__ = ["TOOLS", "McpTool"]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GetDiscoveries(_Args):
    """`GET /api/v1/discoveries`'s query."""

    types: list[Annotated[str, Field(pattern=TYPE_NAME_PATTERN)]] | None = None
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)
    agent_id: str | None = Field(None, pattern=AGENT_ID_PATTERN)
    limit: int = Field(100, ge=1, le=500)
    cursor: str | None = Field(None, max_length=200)


class TaskRef(_Args):
    task_id: UUID


class ProjectRef(_Args):
    project_id: UUID


class ListAgents(_Args):
    """`GET /api/v1/agents`'s query."""

    state: AgentState | None = None
    capability: str | None = Field(None, min_length=1, max_length=100)


class NoArguments(_Args):
    pass


Handler = Callable[[System, Any, ApiKey], Awaitable[Any]]


@dataclass(frozen=True)
class McpTool:
    name: str
    description: str
    arguments: type[BaseModel]
    scope: Scope
    run: Handler

    def listing(self) -> types.Tool:
        return types.Tool(
            name=self.name,
            description=f"{self.description} (scope: {self.scope.value})",
            input_schema=self.arguments.model_json_schema(),
        )


async def _share(system: System, body: DiscoveryCreate, key: ApiKey) -> Any:
    return await discoveries.share(system, body, key)


async def _get_discoveries(system: System, query: GetDiscoveries, _: ApiKey) -> Any:
    found = await discovery_store.list_discoveries(
        system.pool,
        types=set(query.types) if query.types else None,
        min_confidence=query.min_confidence,
        agent_id=query.agent_id,
        limit=query.limit,
        after=decode_cursor(query.cursor),
    )
    return page_of(found, query.limit)


async def _submit(system: System, body: TaskCreate, _: ApiKey) -> Any:
    stored, _created = await tasks.submit(system, body)
    return stored


async def _get_task(system: System, ref: TaskRef, _: ApiKey) -> Any:
    return Task.model_validate(await system.tasks.get(ref.task_id))


async def _cancel_task(system: System, ref: TaskRef, _: ApiKey) -> Any:
    return Task.model_validate(await system.tasks.cancel(ref.task_id))


async def _list_agents(system: System, query: ListAgents, _: ApiKey) -> Any:
    found = await agent_store.list_agents(
        system.pool, state=query.state, capability=query.capability
    )
    return {"agents": found}


async def _get_tree(system: System, _: NoArguments, __: ApiKey) -> Any:
    return await supervisors.snapshot(system)


async def _create_project(system: System, body: ProjectCreate, _: ApiKey) -> Any:
    return await projects.create(system, body)


async def _get_project(system: System, ref: ProjectRef, _: ApiKey) -> Any:
    return await projects.view(system, ref.project_id)


_R, _W = Scope.READ, Scope.WRITE
TOOLS = [
    McpTool(
        "share_discovery",
        "Share a discovery (announced on discoveries.{agent_id}.{type}).",
        DiscoveryCreate,
        _W,
        _share,
    ),
    McpTool(
        "get_discoveries",
        "Discoveries, oldest first, filtered; pass next_cursor back for the next page.",
        GetDiscoveries,
        _R,
        _get_discoveries,
    ),
    McpTool("submit_task", "Submit a task (as POST /api/v1/tasks).", TaskCreate, _W, _submit),
    McpTool("get_task", "A task's status, attempts, result or error.", TaskRef, _R, _get_task),
    McpTool("cancel_task", "Cancel a task that has not ended.", TaskRef, _W, _cancel_task),
    McpTool("list_agents", "Agents, with state and capabilities.", ListAgents, _R, _list_agents),
    McpTool("get_tree", "The live supervision tree.", NoArguments, _R, _get_tree),
    McpTool(
        "create_project",
        "Create a project; the planning capability turns its requirements into tasks.",
        ProjectCreate,
        _W,
        _create_project,
    ),
    McpTool("get_project", "A project, its task graph and results.", ProjectRef, _R, _get_project),
]
