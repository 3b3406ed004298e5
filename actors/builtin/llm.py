"""`LlmAgent` (capability `llm`): runs a task's prompt through a model of the catalog.

Parameters: `prompt` (a user message) or `messages` (a chat), and optionally `system`,
`model` (default: the first model of the catalog, or the pool's `model` parameter) and
`options` (passed to the endpoint: `max_tokens`, `temperature`, ...). The result is the
model's answer: `content`, `finish_reason`, `model`, `usage`, `attempts`. The agent is
part of the default tree only when a model is configured.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from actors.agent import Agent, AgentContext
from runtime.errors import LogicalError

__all__ = ["LlmAgent"]


class LlmTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(None, min_length=1, max_length=200_000)
    messages: list[dict[str, Any]] | None = Field(None, min_length=1)
    system: str | None = None
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> LlmTask:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self

    def chat(self) -> list[dict[str, Any]]:
        chat = list(self.messages or [{"role": "user", "content": self.prompt}])
        return [{"role": "system", "content": self.system}, *chat] if self.system else chat


class LlmAgent(Agent):
    capabilities = frozenset({"llm"})
    prefetch = 4

    async def handle(self, task: dict[str, Any], ctx: AgentContext) -> Any:
        try:
            job = LlmTask.model_validate(task.get("parameters") or {})
        except ValidationError as exc:
            where = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'parameters'}: {e['msg']}" for e in exc.errors()
            )
            raise LogicalError(f"parameters: {where}") from None
        name = job.model or self.params.get("model") or ctx.default_model()
        return await ctx.model(name).chat(job.chat(), **job.options)
