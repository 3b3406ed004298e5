"""Language models of the catalog (`ctx.model(name).chat(...)`), over any OpenAI-compatible
endpoint, through the official `openai` SDK.

A call waits for the model's token bucket, is refused while its circuit is open, and is
retried on 429, 5xx, timeouts and lost connections with capped exponential backoff (a
server's `Retry-After` is honoured), up to `max_retries` more attempts; the SDK's own
retries are off, so every attempt is ours to count. Other 4xx answers are the caller's
mistake: a `LogicalError` at once, no retry, the circuit untouched. Each call is a row
of `tool_executions` (tool `model:{name}`): the messages in, the answer, the tokens in and
out, the attempts, and its duration.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime import telemetry
from runtime.config import ModelSettings
from runtime.errors import LogicalError, TransientError
from runtime.models.enums import ToolStatus
from runtime.models.records import ToolExecution
from runtime.policies import retry_delay
from runtime.store import tools as tool_store
from runtime.tools import Guard, RateLimited, ToolUnavailable

__all__ = ["ChatMessage", "ModelClient", "ModelError"]

_MAX_BACKOFF_S = 10.0


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(pattern=r"^(system|user|assistant|tool|developer)$")
    content: str | list[Any] | None


class ModelError(TransientError):
    """The model kept failing (429s, 5xx, timeouts) through its retries."""


class ModelClient:
    """One model of the catalog, for one agent: its guard is this agent's."""

    def __init__(self, name: str, settings: ModelSettings, pool: Any, agent_id: str) -> None:
        self.name = name
        self.settings = settings
        self.agent_id = agent_id
        self._pool = pool
        self._guard = Guard(
            settings.rate_per_s,
            settings.burst,
            settings.failure_threshold,
            settings.reset_timeout_s,
        )
        self._client: Any = None

    @property
    def circuit(self) -> str:
        return self._guard.breaker.state_at(time.monotonic()).value

    async def chat(
        self, messages: list[dict[str, Any]], task_id: UUID | None = None, **options: Any
    ) -> dict[str, Any]:
        """`{"content", "model", "finish_reason", "usage": {"prompt_tokens",
        "completion_tokens"}, "attempts"}` of one chat completion."""
        try:
            checked = [ChatMessage.model_validate(m).model_dump() for m in messages]
        except (ValidationError, TypeError) as exc:
            raise LogicalError(f"model {self.name}: invalid messages: {exc}") from None
        if not checked:
            raise LogicalError(f"model {self.name}: messages must not be empty")
        call = ToolExecution(
            task_id=task_id,
            agent_id=self.agent_id,
            tool=f"model:{self.name}",
            input={"messages": checked, "options": options},
        )
        if not await self._guard.take_token(self.settings.max_wait_s):
            reason = f"model {self.name}: rate limit of {self.settings.rate_per_s}/s"
            await self._refused(call, reason)
            raise RateLimited(reason, {"model": self.name})
        if not self._guard.breaker.try_acquire(time.monotonic()):
            reason = f"model {self.name}: circuit open; retry in {self._guard.retry_in():.1f}s"
            await self._refused(call, reason)
            raise ToolUnavailable(reason, {"model": self.name})
        await tool_store.start(self._pool, call)
        attributes = {"model.name": self.name, "agent.id": self.agent_id, "task.id": task_id}
        try:
            with telemetry.span("model.chat", attributes=attributes) as span:
                answer = await self._with_retries(checked, options)
                if span is not None:
                    usage = answer.get("usage") or {}
                    span.set_attribute("model.prompt_tokens", usage.get("prompt_tokens") or 0)
                    span.set_attribute("model.completion_tokens",
                                       usage.get("completion_tokens") or 0)  # fmt: skip
        except BaseException as exc:
            if not isinstance(exc, LogicalError | asyncio.CancelledError):
                self._guard.breaker.record_failure(time.monotonic())
            await tool_store.finish(self._pool, call.id, ToolStatus.FAILED, error=str(exc)[:2000])
            raise
        self._guard.breaker.record_success(time.monotonic())
        await tool_store.finish(self._pool, call.id, ToolStatus.SUCCEEDED, output=answer)
        return answer

    async def _with_retries(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> Any:
        client = await self._open()
        import openai  # imported by `_open`, off the loop

        last: Exception | None = None
        for attempt in range(1, self.settings.max_retries + 2):
            try:
                response = await client.chat.completions.create(
                    model=self.settings.model, messages=messages, **options
                )
            except (openai.RateLimitError, openai.InternalServerError) as exc:
                last = exc
                delay = _retry_after(exc) or retry_delay(attempt, 0.2, _MAX_BACKOFF_S)
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:  # timeout first
                last = exc
                delay = retry_delay(attempt, 0.2, _MAX_BACKOFF_S)
            except openai.APIStatusError as exc:
                if exc.status_code >= 500:
                    last, delay = exc, retry_delay(attempt, 0.2, _MAX_BACKOFF_S)
                else:
                    raise LogicalError(
                        f"model {self.name}: the endpoint refused the request"
                        f" ({exc.status_code}): {exc.message}",
                        {"model": self.name, "status": exc.status_code},
                    ) from None
            else:
                return _answer(response, attempt)
            if attempt <= self.settings.max_retries:
                await asyncio.sleep(min(delay, _MAX_BACKOFF_S))
        raise ModelError(
            f"model {self.name}: failed after {self.settings.max_retries + 1} attempts: {last}",
            {"model": self.name},
        )

    async def _open(self) -> Any:
        if self._client is None:
            # the SDK's import takes ~1 s of CPU (several on a loaded machine): on the
            # agent's loop it would stall it past the supervisor's heartbeat, which kills
            # the agent as hung, and the next incarnation would do the same
            openai = await asyncio.to_thread(importlib.import_module, "openai")
            key_env = self.settings.api_key_env
            self._client = openai.AsyncOpenAI(
                base_url=str(self.settings.base_url),
                api_key=(os.environ.get(key_env, "") if key_env else "") or "not-needed",
                timeout=self.settings.timeout_s,
                max_retries=0,
            )
        return self._client

    async def _refused(self, call: ToolExecution, reason: str) -> None:
        await tool_store.refuse(self._pool, call, reason)


def _retry_after(exc: Any) -> float | None:
    value = getattr(getattr(exc, "response", None), "headers", {}).get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _answer(response: Any, attempts: int) -> dict[str, Any]:
    choice = response.choices[0] if response.choices else None
    usage = response.usage
    return {
        "content": choice.message.content if choice else None,
        "finish_reason": choice.finish_reason if choice else None,
        "model": response.model,
        "usage": {
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
        },
        "attempts": attempts,
    }
