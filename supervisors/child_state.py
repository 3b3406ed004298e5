"""What a supervisor knows of one child: its spec, state, actor, backoff and breaker.

The record is the supervisor's, never shared: `generation` tells a report about the
current actor from a stale one (a watcher or heartbeat of an actor already retired), and
`lock` makes starting, stopping and deciding about one child one thing at a time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runtime.policies import Backoff, CircuitBreaker
from supervisors.spec import ChildSpec

__all__ = ["Child", "ChildState"]


class ChildState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RESTARTING = "restarting"
    CIRCUIT_OPEN = "circuit_open"


@dataclass
class Child:
    spec: ChildSpec
    backoff: Backoff
    breaker: CircuitBreaker
    state: ChildState = ChildState.STOPPED
    handle: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    generation: int = 0  # bumped whenever the current actor is retired: stale news is ignored
    restarts: int = 0
    started_at: float = 0.0
    kill_reason: str | None = None
    probing: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # held by whoever starts, stops or decides about this child: one thing at a time
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def retire(self) -> Any:
        """Forget the current actor (its watcher and pings go quiet); returns its handle."""
        self.generation += 1
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:  # the watcher retiring its own child runs on
                task.cancel()
        self.tasks.clear()
        handle, self.handle = self.handle, None
        return handle
