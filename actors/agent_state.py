"""An agent's durable state, as its host records it: the way from the stored state to
`idle` on a start (after `error` when the last incarnation crashed), each change checked
against `AGENT_TRANSITIONS` and written with its `AgentStatusChanged` event in one
transaction, and `stopping -> stopped` on a stop.

`AgentStateRecords` is a mixin of `AgentHost`, kept apart because it decides nothing
about work: it only keeps the row and the host's idea of the state in step.
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

import ray

from runtime.errors import Conflict
from runtime.models.enums import AgentState
from runtime.models.events import AgentAnnounced, AgentStatusChanged, Event
from runtime.models.records import AgentRecord
from runtime.state_machines import AGENT_TRANSITIONS, check_agent_transition
from runtime.store import agents as agent_store

__all__ = ["CRASH_REASON", "AgentStateRecords", "Lifecycle", "startup_path"]

CRASH_REASON = "restarted after crash"


def startup_path(stored: AgentState | str) -> list[tuple[AgentState, str]]:
    """The transitions from an agent's stored state to `idle`, each with its reason.

    A state that cannot go to `starting` (the last incarnation died while running, busy,
    idle, starting or stopping) first goes to `error` (or `failed`) with `CRASH_REASON`.
    """
    stored = AgentState(stored)
    steps: list[tuple[AgentState, str]] = []
    if not AGENT_TRANSITIONS.can(stored, AgentState.STARTING):
        fallback = AgentState.ERROR
        if not AGENT_TRANSITIONS.can(stored, fallback):
            fallback = AgentState.FAILED
        steps.append((fallback, CRASH_REASON))
    steps += [(AgentState.STARTING, ""), (AgentState.RUNNING, ""), (AgentState.IDLE, "")]
    AGENT_TRANSITIONS.fold(stored, [state for state, _ in steps])  # validates every step
    return steps


class Lifecycle:
    """The agent's state as this host knows it; every change is checked before it is made."""

    def __init__(self, state: AgentState = AgentState.CREATED) -> None:
        self.state = state

    def can(self, to_state: AgentState) -> bool:
        return AGENT_TRANSITIONS.can(self.state, to_state)

    def advance(self, to_state: AgentState) -> tuple[AgentState, AgentState]:
        """Move to `to_state` (InvalidTransition if not allowed); returns (from, to)."""
        from_state = self.state
        self.state = check_agent_transition(from_state, to_state)
        return from_state, self.state


class AgentStateRecords:
    """The host's side of the agent's row: registration, transitions, the stop."""

    child_id: str
    supervisor_id: str
    template: str | None
    _pool: Any
    _template_id: UUID | None
    _capabilities: list[str]
    _lifecycle: Lifecycle

    async def _register(self, agent_id: str) -> AgentRecord:
        """Upsert the row and record the way to `idle`, in one transaction; the stored row."""
        assert self._pool is not None
        record = AgentRecord(
            id=agent_id,
            template_id=self._template_id,
            name=agent_id,
            capabilities=self._capabilities,
            supervisor_id=self.supervisor_id or None,
        )
        announce = AgentAnnounced(
            agent_id=agent_id,
            capabilities=self._capabilities,
            template=self.template,
            node_id=ray.get_runtime_context().get_node_id(),
            pid=os.getpid(),
        )
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await agent_store.upsert_agent(conn, record)
            lifecycle = Lifecycle(stored.state)
            steps = startup_path(stored.state)
            events: list[Event] = []
            for to_state, reason in steps:
                from_state, _ = lifecycle.advance(to_state)
                events.append(self._status_event(from_state, to_state, reason))
            # the whole way to idle and its events: one statement and one outbox write
            await agent_store.record_path(
                conn, agent_id, stored.state, steps, events=[*events, announce]
            )
        self._lifecycle = lifecycle
        return stored

    async def _record_stop(self) -> None:
        assert self._pool is not None
        lifecycle = Lifecycle(self._lifecycle.state)
        events: list[Event] = []
        async with self._pool.acquire() as conn, conn.transaction():
            for to_state in (AgentState.STOPPING, AgentState.STOPPED):
                from_state, _ = lifecycle.advance(to_state)
                events.append(self._status_event(from_state, to_state, "shutdown"))
                await agent_store.record_transition(
                    conn,
                    self.child_id,
                    from_state,
                    to_state,
                    "shutdown",
                    events=events if to_state is AgentState.STOPPED else (),
                )
        self._lifecycle = lifecycle

    async def _transition(
        self,
        to_state: AgentState,
        reason: str = "",
        extra: list[Event] | None = None,
        *,
        keep_on_failure: bool = False,
    ) -> None:
        """Check, then record one change with its status event (and `extra` events).

        On a failed write the host goes back to its former state, unless `keep_on_failure`.
        If the row moved under us (an earlier write was lost), the change is recorded from
        the row's state when the state machine allows it from there.
        """
        assert self._pool is not None
        from_state, _ = self._lifecycle.advance(to_state)
        events = [self._status_event(from_state, to_state, reason), *(extra or [])]
        try:
            try:
                await agent_store.record_transition(
                    self._pool, self.child_id, from_state, to_state, reason, events=events
                )
            except Conflict:
                record = await agent_store.get_agent(self._pool, self.child_id)
                current = record.state if record is not None else None
                if current == to_state:
                    return
                if current is None or not AGENT_TRANSITIONS.can(current, to_state):
                    raise
                events[0] = self._status_event(current, to_state, reason)
                await agent_store.record_transition(
                    self._pool, self.child_id, current, to_state, reason, events=events
                )
        except BaseException:
            if not keep_on_failure:
                self._lifecycle.state = from_state
            raise

    def _status_event(
        self, from_state: AgentState, to_state: AgentState, reason: str
    ) -> AgentStatusChanged:
        return AgentStatusChanged(
            agent_id=self.child_id, from_state=from_state, to_state=to_state, reason=reason
        )
