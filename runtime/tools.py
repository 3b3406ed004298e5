"""Tools agents call (`ctx.tool`): a registry, and a runner that guards and records each call.

A tool is a name, a pydantic model of its parameters and an async function. Every call
goes, in order, through: parameter validation, the tool's token bucket (waiting for a
token up to `max_wait_s`), its circuit breaker, and its timeout; and every call is a row
of `tool_executions`, refused ones included (`rejected`), so the record is whole.

What counts against the breaker is the tool failing (a timeout, a lost connection, an
exception of its own), not the caller's mistake: a `LogicalError` (bad arguments, a path
outside the allowed directories) is the caller's and leaves the circuit as it was.
The bucket and the breaker belong to one runner, that is to one agent.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from runtime import telemetry
from runtime.config import ToolLimits, ToolsSettings
from runtime.errors import ConfigError, LogicalError, TransientError, classify
from runtime.models.enums import ToolStatus
from runtime.models.records import ToolExecution
from runtime.policies import CircuitBreaker, CircuitState, TokenBucket
from runtime.store import tools as tool_store

__all__ = [
    "Guard",
    "RateLimited",
    "Tool",
    "ToolRefused",
    "ToolRegistry",
    "ToolRunner",
    "ToolUnavailable",
    "model_from_signature",
]

ToolFunction = Callable[..., Awaitable[Any]]


class ToolRefused(LogicalError):
    """The call is not allowed (a path outside the allowed directories, a host not listed)."""


class ToolUnavailable(TransientError):
    """The tool's circuit is open: it failed too often; retry after the time named."""


class RateLimited(TransientError):
    """No token came within the tool's `max_wait_s`."""


@dataclass(frozen=True)
class Tool:
    """One registered tool. `function` is called with the validated parameters as keywords."""

    name: str
    parameters: type[BaseModel]
    function: ToolFunction
    limits: ToolLimits = field(default_factory=ToolLimits)
    description: str = ""

    def describe(self) -> dict[str, Any]:
        """What `GET /api/v1/tools` shows: the parameters as JSON Schema, and the limits."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters.model_json_schema(),
            "limits": self.limits.model_dump(include=set(ToolLimits.model_fields)),
        }


def model_from_signature(name: str, function: Callable[..., Any]) -> type[BaseModel]:
    """A pydantic model of `function`'s keyword parameters (their annotations and defaults);
    an unannotated parameter takes any JSON value. Extra arguments are refused."""
    fields: dict[str, Any] = {}
    hints = inspect.get_annotations(function, eval_str=True)
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hints.get(parameter.name, Any), default)
    title = "".join(part.title() for part in name.split("_")) + "Parameters"
    return create_model(title, __config__=ConfigDict(extra="forbid"), **fields)


def _import_function(path: str, where: str) -> ToolFunction:
    module_name, _, attribute = path.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {path!r}: {exc}", field=where) from exc
    if not inspect.iscoroutinefunction(function):
        raise ConfigError(f"{path!r} must be an async function", field=where)
    return function


class ToolRegistry:
    """The tools by name: the two built-in ones and those `rayvisor.yaml` registers."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    @classmethod
    def from_settings(cls, settings: ToolsSettings) -> ToolRegistry:
        from runtime.builtin_tools import builtin_tools

        registry = cls(builtin_tools(settings))
        for name, custom in settings.custom.items():
            function = _import_function(custom.function, f"tools.custom.{name}.function")
            description = custom.description or inspect.getdoc(function) or ""
            parameters = model_from_signature(name, function)
            registry.add(Tool(name, parameters, function, custom, description.strip()))
        return registry

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ConfigError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools[name] for name in self.names())


class Guard:
    """One tool's (or model's) token bucket and circuit breaker, on the monotonic clock."""

    def __init__(
        self, rate_per_s: float, burst: int, failure_threshold: int, reset_timeout_s: float
    ) -> None:
        self.bucket = TokenBucket(rate_per_s, burst)
        self.breaker = CircuitBreaker(
            failure_threshold, reset_timeout_s, max_reset_timeout_s=10 * reset_timeout_s
        )

    @classmethod
    def of(cls, limits: ToolLimits) -> Guard:
        return cls(
            limits.rate_per_s, limits.burst, limits.failure_threshold, limits.reset_timeout_s
        )

    async def take_token(self, max_wait_s: float) -> bool:
        """Wait for a token, at most `max_wait_s`; False if none would come in time."""
        started = time.monotonic()
        while True:
            now = time.monotonic()
            if self.bucket.try_acquire(now):
                return True
            delay = self.bucket.retry_after(now)
            if now + delay - started > max_wait_s:
                return False
            await asyncio.sleep(delay)

    def retry_in(self) -> float:
        """Seconds until an open circuit half-opens."""
        now = time.monotonic()
        return max(0.0, (self.breaker.retry_at or now) - now)


class ToolRunner:
    """Calls tools for one agent: validates, waits for a token, asks the breaker, records."""

    def __init__(self, registry: ToolRegistry, pool: Any, agent_id: str) -> None:
        self.registry = registry
        self.agent_id = agent_id
        self._pool = pool
        self._guards: dict[str, Guard] = {}

    def circuit(self, name: str) -> CircuitState:
        """The state of a tool's circuit now (closed for a tool not called yet)."""
        guard = self._guards.get(name)
        return guard.breaker.state_at(time.monotonic()) if guard else CircuitState.CLOSED

    async def call(self, name: str, arguments: dict[str, Any], task_id: UUID | None) -> Any:
        """The tool's output; a `TaskError` saying why not (the row says it too)."""
        attributes = {"tool.name": name, "agent.id": self.agent_id, "task.id": task_id}
        with telemetry.span("tool.call", attributes=attributes):
            return await self._call(name, arguments, task_id)

    async def _call(self, name: str, arguments: dict[str, Any], task_id: UUID | None) -> Any:
        tool = self.registry.get(name)
        if tool is None:
            known = ", ".join(self.registry.names()) or "none"
            reason = f"no tool named {name!r} (registered: {known})"
            await self._refused(name, arguments, task_id, reason)
            raise LogicalError(reason, {"tool": name})
        try:
            parameters = tool.parameters.model_validate(arguments)
        except ValidationError as exc:
            reason = f"tool {name}: invalid arguments: " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(arguments)'}: {e['msg']}" for e in exc.errors()
            )
            await self._refused(name, arguments, task_id, reason)
            raise LogicalError(reason, {"tool": name}) from None
        guard = self._guards.get(name) or self._guards.setdefault(name, Guard.of(tool.limits))
        if not await guard.take_token(tool.limits.max_wait_s):
            reason = f"tool {name}: rate limit of {tool.limits.rate_per_s}/s, no token within "
            reason += f"{tool.limits.max_wait_s}s"
            await self._refused(name, arguments, task_id, reason)
            raise RateLimited(reason, {"tool": name})
        if not guard.breaker.try_acquire(time.monotonic()):
            retry_in = guard.retry_in()
            reason = f"tool {name}: circuit open after repeated failures; retry in {retry_in:.1f}s"
            await self._refused(name, arguments, task_id, reason)
            raise ToolUnavailable(reason, {"tool": name, "retry_in_s": round(retry_in, 3)})
        return await self._run(tool, guard, parameters, arguments, task_id)

    async def _run(
        self,
        tool: Tool,
        guard: Guard,
        parameters: BaseModel,
        arguments: dict[str, Any],
        task_id: UUID | None,
    ) -> Any:
        execution = ToolExecution(
            task_id=task_id, agent_id=self.agent_id, tool=tool.name, input=_jsonable(arguments)
        )
        await tool_store.start(self._pool, execution)
        try:
            output = await asyncio.wait_for(
                tool.function(**dict(parameters)), tool.limits.timeout_s
            )
            _check_json_output(tool, output)
        except BaseException as exc:
            status, error = _failure(tool, exc)
            now = time.monotonic()
            if isinstance(exc, asyncio.CancelledError):
                if guard.breaker.state_at(now) is CircuitState.HALF_OPEN:
                    guard.breaker.record_failure(now)  # an unanswered probe: probe again later
            elif classify(error) != "logical" or isinstance(error, _OutputNotJson):
                guard.breaker.record_failure(now)
            else:
                guard.breaker.record_success(now)  # it answered: the mistake is the caller's
            await tool_store.finish(self._pool, execution.id, status, error=str(error)[:2000])
            if error is exc:
                raise
            raise error from exc
        guard.breaker.record_success(time.monotonic())
        await tool_store.finish(self._pool, execution.id, ToolStatus.SUCCEEDED, output=output)
        return output

    async def _refused(
        self, name: str, arguments: dict[str, Any], task_id: UUID | None, reason: str
    ) -> None:
        execution = ToolExecution(
            task_id=task_id,
            agent_id=self.agent_id,
            tool=name[:200] or "(none)",
            input=_jsonable(arguments),
        )
        await tool_store.refuse(self._pool, execution, reason)


def _failure(tool: Tool, exc: BaseException) -> tuple[ToolStatus, BaseException]:
    """How a call that raised ends (`rejected` for a refusal, else `failed`), and the error
    the caller gets: a TaskError, so the task's retry decision is the right one."""
    if isinstance(exc, ToolRefused):
        return ToolStatus.REJECTED, exc
    if isinstance(exc, asyncio.CancelledError):
        return ToolStatus.FAILED, exc
    if isinstance(exc, TimeoutError):
        return ToolStatus.FAILED, TransientError(
            f"tool {tool.name}: no answer within {tool.limits.timeout_s}s", {"tool": tool.name}
        )
    return ToolStatus.FAILED, exc


class _OutputNotJson(LogicalError):
    """The tool returned what JSON cannot carry: the tool's bug, counted against it."""


def _check_json_output(tool: Tool, output: Any) -> None:
    try:
        json.dumps(output, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _OutputNotJson(
            f"tool {tool.name}: its output is not JSON: {exc}", {"tool": tool.name}
        ) from None


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    """The arguments as they can be stored: a value JSON cannot carry becomes its repr."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return {key: repr(item)[:1000] for key, item in value.items()}
