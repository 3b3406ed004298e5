"""Tiny agents for tests, benchmarks and demos.

`EchoAgent` (capability `echo`) returns the task's parameters, after doing what they ask:

| parameter | effect |
|---|---|
| `sleep_s: float` | `await asyncio.sleep` (a slow but well-behaved agent) |
| `block_s: float` | `time.sleep` on the event loop (a hung agent, as the supervisor sees it) |
| `work_s: float` | `time.sleep` through `ctx.run_blocking` (busy, but never taken for hung) |
| `progress: int` | report that many progress steps |
| `log: str` | log it at INFO on `ctx.log` (a structured line naming the task) |
| `discover: {type, content, confidence, data}` | share a discovery |
| `fail: "transient" \\| "fatal" \\| "logical"` | raise the matching `TaskError` |
| `save: {...}` | save it as the agent's durable state |
| `not_json: true` | return a value that is not JSON-serialisable |
| `result_bytes: int` | return `{"padding": "x" * result_bytes}` (a large result) |
| `tool: {name, arguments}` | call a registered tool; its output is the result's `tool_output` |
| `ask: {to, payload, timeout_s}` | ask another agent; the answer is the result's `answer` |
| `tell: {to, payload}` | tell another agent |

The `capabilities` parameter of its pool replaces `echo` (to stand in for other agents);
`subscribe: {types, min_confidence}` subscribes it to discoveries at start, and each one it
receives is appended to its durable state's `discoveries` (ids, in order; one delivered
again after a crash between its save and its acknowledgement is recorded once).
Asked or told (`on_message`), it answers `{"echo": payload, "agent": id, "pid": pid}`
after doing what the payload's `sleep_s` and `fail` ask, as for a task.

`CounterAgent` (capability `count`) increments `ctx.state["count"]`, saves it and returns it.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from actors.agent import Agent, AgentContext
from runtime.errors import FatalError, LogicalError, TransientError
from runtime.models.events import DiscoveryShared
from runtime.models.records import Message

__all__ = ["CounterAgent", "EchoAgent"]

_FAILURES = {"transient": TransientError, "fatal": FatalError, "logical": LogicalError}


def _parameters(task: dict[str, Any]) -> dict[str, Any]:
    params = task.get("parameters", {})
    if not isinstance(params, dict):
        raise LogicalError(f"parameters must be an object, got {type(params).__name__}")
    return params


class EchoAgent(Agent):
    """Returns the task's parameters; see the module docstring for what they can ask."""

    capabilities = frozenset({"echo"})

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if "capabilities" in params:  # a pool of echo agents standing in for another kind
            self.capabilities = frozenset(str(c) for c in params["capabilities"])

    async def handle(self, task: dict[str, Any], ctx: AgentContext) -> Any:
        params = _parameters(task)
        if "sleep_s" in params:
            await asyncio.sleep(float(params["sleep_s"]))
        if "block_s" in params:
            time.sleep(float(params["block_s"]))
        if "work_s" in params:
            await ctx.run_blocking(time.sleep, float(params["work_s"]))
        if "log" in params:
            ctx.log.info("%s", params["log"])
        steps = int(params.get("progress", 0))
        for step in range(1, steps + 1):
            await ctx.progress(step / steps, f"step {step} of {steps}")
        if "discover" in params:
            found = params["discover"]
            await ctx.share_discovery(
                found["type"], found["content"], found["confidence"], found.get("data")
            )
        if "save" in params:
            await ctx.save_state(dict(params["save"]))
        if "fail" in params:
            kind = params["fail"]
            if kind not in _FAILURES:
                raise LogicalError(f"fail must be one of {sorted(_FAILURES)}, got {kind!r}")
            raise _FAILURES[kind](f"asked to fail ({kind})", {"requested": kind})
        if params.get("not_json"):
            return {"value": object()}
        if "result_bytes" in params:
            return {"padding": "x" * int(params["result_bytes"])}
        if "tool" in params:
            call = params["tool"]
            output = await ctx.tool(call["name"], **call.get("arguments", {}))
            params = {**params, "tool_output": output}
        if "tell" in params:
            told = params["tell"]
            await ctx.tell(told["to"], told.get("payload", {}))
        if "ask" in params:
            asked = params["ask"]
            answer = await ctx.ask(
                asked["to"], asked.get("payload", {}), asked.get("timeout_s", 30)
            )
            return {**params, "answer": answer}
        return params

    async def on_start(self, ctx: AgentContext) -> None:
        if "subscribe" in self.params:
            await ctx.subscribe_discoveries(**self.params["subscribe"])

    async def on_discovery(self, discovery: DiscoveryShared, ctx: AgentContext) -> None:
        seen = list(ctx.state.get("discoveries", []))
        if str(discovery.discovery_id) in seen:  # saved, then killed before the ack
            return
        seen.append(str(discovery.discovery_id))
        ctx.state["discoveries"] = seen
        await ctx.save_state()

    async def on_message(self, message: Message, ctx: AgentContext) -> dict[str, Any]:
        payload = message.payload
        if "sleep_s" in payload:
            await asyncio.sleep(float(payload["sleep_s"]))
        if "fail" in payload:
            kind = payload["fail"]
            raise _FAILURES.get(kind, LogicalError)(f"asked to fail ({kind})")
        return {"echo": payload, "agent": ctx.agent_id, "pid": os.getpid()}


class CounterAgent(Agent):
    """Counts the tasks it handled, across restarts (the count is durable state)."""

    capabilities = frozenset({"count"})

    async def handle(self, task: dict[str, Any], ctx: AgentContext) -> int:
        ctx.state["count"] = int(ctx.state.get("count", 0)) + 1
        await ctx.save_state()
        return ctx.state["count"]
