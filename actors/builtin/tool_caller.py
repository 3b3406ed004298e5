"""`ToolCallerAgent` (capability `tool`): runs one registered tool as a task.

Parameters: `{"tool": "read_file", "arguments": {"path": "auth.log"}}`; the result is the
tool's output. It makes a tool callable over HTTP or from a project step, with the same
validation, limits and record as `ctx.tool` from any agent.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.agent import Agent, AgentContext
from runtime.errors import LogicalError

__all__ = ["ToolCallerAgent"]


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCallerAgent(Agent):
    capabilities = frozenset({"tool"})

    async def handle(self, task: dict[str, Any], ctx: AgentContext) -> Any:
        try:
            call = ToolCall.model_validate(task.get("parameters") or {})
        except ValidationError as exc:
            where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise LogicalError(f"parameters: {where}") from None
        return await ctx.tool(call.tool, **call.arguments)
