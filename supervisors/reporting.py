"""What a supervisor tells: its subtree (`snapshot`, `which_children`), its metrics, its
decisions (one `supervisor_events` row and outbox event each, written in order off the
restart path) and the task managers' news of an agent gone.

A mixin of `Supervisor`: it reads the supervisor's state and changes none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayError

from runtime import metrics, telemetry
from runtime.models.enums import SupervisorEventKind as Kind
from runtime.models.events import SupervisorDecision
from runtime.policies import CircuitState
from runtime.redact import redact, redact_value
from runtime.store import agents as agent_store
from runtime.store import supervision
from supervisors.child_state import Child
from supervisors.spec import ChildKind, SupervisorSpec

__all__ = ["Reporting"]

_log = logging.getLogger(__name__)


class Reporting:
    """The tree, statistics, metrics and decision events of one supervisor."""

    spec: SupervisorSpec
    children: list[Child]
    namespace: str
    state: str
    restarts: int
    _spares: list[Any]
    _events: asyncio.Queue[SupervisorDecision]
    _pool: Any
    _tm_shards: int

    if TYPE_CHECKING:  # the supervisor's own, used here

        def _find(self, child_id: str) -> Child | None: ...

        def _spawn(self, coro: Any) -> None: ...

    async def child_handle(self, child_id: str) -> Any:
        child = self._find(child_id)
        return child.handle if child else None

    async def which_children(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "id": c.spec.id,
                "kind": c.spec.kind.value,
                "state": c.state.value,
                "restarts": c.restarts,
                "breaker": c.breaker.state_at(now).value,
                "actor_name": c.spec.actor_name,
                **c.info,
            }
            for c in self.children
        ]

    async def snapshot(self) -> dict[str, Any]:
        """This subtree: for each node its id, kind, state, restarts, breaker and placement."""
        context = ray.get_runtime_context()
        node: dict[str, Any] = {
            "id": self.spec.id,
            "kind": "supervisor",
            "strategy": self.spec.strategy.value,
            "state": self.state,
            "restarts": self.restarts,
            "actor_name": f"sup:{self.spec.id}",
            "pid": os.getpid(),
            "node_id": context.get_node_id(),
            "actor_id": context.get_actor_id(),
            "standby": len(self._spares),
            "children": [],
        }
        children = list(self.children)  # the pool may change while subtrees answer
        for entry, child in zip(await self.which_children(), children, strict=True):
            if child.spec.kind is ChildKind.SUPERVISOR and child.handle is not None:
                with contextlib.suppress(RayError, TimeoutError):
                    sub = await asyncio.wait_for(child.handle.snapshot.remote(), 5)
                    entry = {**sub, **{k: entry[k] for k in ("restarts", "breaker", "actor_name")}}
            node["children"].append(entry)
        return node

    def _report_metrics(self) -> None:
        """Breakers and agents by state, set again each `metrics.reporter` round."""
        now = time.monotonic()
        for c in self.children:
            is_open = c.breaker.state_at(now) is not CircuitState.CLOSED
            metrics.breaker_open(self.spec.id, c.spec.id, is_open)
        agents = [c.state.value for c in self.children if c.spec.agent]
        metrics.agents_by_state(self.spec.id, agents)

    async def statistics(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for c in self.children:
            states[c.state.value] = states.get(c.state.value, 0) + 1
        return {"children": len(self.children), "states": states, "restarts": self.restarts}

    # ---- events ------------------------------------------------------------------------

    def _emit(
        self,
        kind: Kind,
        child: Child | None,
        reason: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        reason = redact(reason)  # it quotes exceptions: no URL's password in an event
        event = SupervisorDecision(
            supervisor_id=self.spec.id,
            child_id=child.spec.id if child else None,
            event=kind,
            reason=reason,
            detail=redact_value(detail or {}),
        )
        _log.info("%s %s %s %s", self.spec.id, kind.value, event.child_id or "", reason)
        telemetry.event(f"supervisor.{kind.value}", {"supervisor.id": self.spec.id,
                        "child.id": event.child_id, "reason": reason[:500]})  # fmt: skip
        self._events.put_nowait(event)
        if child is not None:
            if kind is Kind.RESTARTED:
                metrics.child_restarted(self.spec.id, child.spec.id)
            elif kind in (Kind.CIRCUIT_OPENED, Kind.CIRCUIT_CLOSED):
                metrics.breaker_open(self.spec.id, child.spec.id, kind is Kind.CIRCUIT_OPENED)

    async def _record(self, event: SupervisorDecision) -> None:
        """The decision's row and event; a restart also counts on the agent's own row (a
        child that is no agent has none: nothing to count)."""
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction():
            await supervision.record_event(
                conn,
                event.supervisor_id,
                event.event,
                child_id=event.child_id,
                reason=event.reason,
                detail=event.detail,
                events=[event],
            )
            if event.event == Kind.RESTARTED and event.child_id:
                await agent_store.increment_restarts(conn, event.child_id)

    async def _drain_events(self, timeout_s: float = 5) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._events.join(), timeout_s)

    def _agent_down(self, agent_id: str) -> None:
        """Every task manager shard hears at once that the agent is gone (its leases are
        re-queued, no new work goes to it); fire-and-forget, off the restart path."""
        self._spawn(self._tell_task_managers(agent_id))

    async def _tell_task_managers(self, agent_id: str) -> None:
        handles = await asyncio.to_thread(self._task_managers)
        calls = [handle.agent_down.remote(agent_id) for handle in handles]
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(outcome, Exception) and not isinstance(outcome, RayError):
                _log.info("%s: agent_down(%s) failed: %r", self.spec.id, agent_id, outcome)

    def _task_managers(self) -> list[Any]:
        found = []
        for shard in range(self._tm_shards):
            with contextlib.suppress(ValueError, RayError):
                found.append(ray.get_actor(f"tm:{shard}", namespace=self.namespace))
        return found
