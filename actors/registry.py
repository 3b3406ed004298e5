"""Capabilities -> live agents: who may take which task right now.

An agent is live from the moment its host registers (on every start, so a restarted
agent comes back by itself) until a call to it fails because its process died; a dead
agent is the supervisor's to restart, and an agent whose circuit is open is never
restarted, so it never comes back here until its probe start succeeds. Matching picks an
agent with every required capability and a free slot, the least loaded first, rotating
among equals so load spreads. No Ray here: handles are opaque values.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["AGGREGATOR_AGENT_ID", "AGGREGATOR_NAME", "AgentEntry", "Registry"]

AGGREGATOR_NAME = "agg:0"
"""The Aggregator's actor name."""
AGGREGATOR_AGENT_ID = "agg-0"
"""The agent id the Aggregator registers under to run fan-out tasks (its supervisor's
child id; an agent id has no colon)."""


@dataclass
class AgentEntry:
    agent_id: str
    capabilities: frozenset[str]
    handle: Any
    capacity: int = 1
    inflight: int = 0
    order: int = 0  # when it last took work: ties go to the one idle longest

    @property
    def free(self) -> bool:
        return self.inflight < self.capacity


class Registry:
    def __init__(self) -> None:
        self._agents: dict[str, AgentEntry] = {}
        self._clock = itertools.count()

    def register(
        self, agent_id: str, capabilities: Iterable[str], handle: Any, capacity: int = 1
    ) -> AgentEntry:
        """Add or refresh an agent; a re-registration (a restart) starts with no work."""
        entry = AgentEntry(agent_id, frozenset(capabilities), handle, capacity)
        self._agents[agent_id] = entry
        return entry

    def remove(self, agent_id: str) -> AgentEntry | None:
        return self._agents.pop(agent_id, None)

    def discard(self, entry: AgentEntry) -> None:
        """Remove this entry, not a newer one under the same id (a restarted agent that
        registered again before its predecessor's calls failed)."""
        if self._agents.get(entry.agent_id) is entry:
            del self._agents[entry.agent_id]

    def get(self, agent_id: str) -> AgentEntry | None:
        return self._agents.get(agent_id)

    def __len__(self) -> int:
        return len(self._agents)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def entries(self) -> list[AgentEntry]:
        return list(self._agents.values())

    def has_free(self) -> bool:
        return any(e.free for e in self._agents.values())

    def can_serve(self, required: frozenset[str]) -> bool:
        """Whether any live agent (busy or not) has every required capability."""
        return any(required <= e.capabilities for e in self._agents.values())

    def match(
        self, required: frozenset[str], avoid: frozenset[str] = frozenset()
    ) -> AgentEntry | None:
        """A free agent with every required capability, least loaded and idle longest first.

        `avoid` lists agents to pass over (a retry after a fatal error goes elsewhere)
        unless no other agent can take the task.
        """
        candidates = [e for e in self._agents.values() if e.free and required <= e.capabilities]
        preferred = [e for e in candidates if e.agent_id not in avoid] or candidates
        if not preferred:
            return None
        return min(preferred, key=lambda e: (e.inflight, e.order))

    def acquire(self, entry: AgentEntry) -> None:
        entry.inflight += 1
        entry.order = next(self._clock)

    def release(self, entry: AgentEntry) -> None:
        """Free a slot of this entry (a predecessor's slots are not the new entry's)."""
        if entry.inflight > 0:
            entry.inflight -= 1
