"""The agent and task state machines: every allowed state change, and nothing else.

Pure, like `runtime.policies`: no I/O, no clock. Guarantees:

- `AGENT_TRANSITIONS` and `TASK_TRANSITIONS` list every allowed state change; anything else
  raises `InvalidTransition`, and terminal task statuses allow nothing.
- `InvalidTransition` is a `runtime.errors.Conflict` (the caller asked for it), the one
  import from outside the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Generic, TypeVar

from runtime.errors import Conflict
from runtime.policies import require

__all__ = [
    "AGENT_TRANSITIONS",
    "TASK_TRANSITIONS",
    "TERMINAL_TASK_STATUSES",
    "AgentState",
    "InvalidTransition",
    "TaskStatus",
    "Transitions",
    "check_agent_transition",
    "check_task_transition",
    "fold_agent_events",
]


class AgentState(StrEnum):
    """An agent's lifecycle state, validated by `AGENT_TRANSITIONS` (seed MS-1)."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    BUSY = "busy"
    IDLE = "idle"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"
    FAILED = "failed"


class TaskStatus(StrEnum):
    """A task's status, validated by `TASK_TRANSITIONS`."""

    PENDING = "pending"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        """A task in a terminal status never changes again."""
        return self in TERMINAL_TASK_STATUSES


TERMINAL_TASK_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT}
)
"""The statuses a task never leaves."""


class InvalidTransition(Conflict):
    """A state change the machine does not allow: the caller asked for it, not the system."""

    def __init__(self, machine: str, from_state: str, to_state: str) -> None:
        super().__init__(f"{machine} cannot go from {str(from_state)!r} to {str(to_state)!r}")
        self.machine = machine
        self.from_state = from_state
        self.to_state = to_state

    def __reduce__(self) -> tuple[type[InvalidTransition], tuple[str, str, str]]:
        return (type(self), (self.machine, self.from_state, self.to_state))


_S = TypeVar("_S", bound=StrEnum)


class Transitions(Generic[_S]):
    """The allowed changes of one state machine: state -> the states it may move to.

    The table is closed (every target is also a key) and a state never moves to itself.
    """

    def __init__(self, machine: str, table: Mapping[_S, Iterable[_S]]) -> None:
        self.machine = machine
        self._table: dict[_S, frozenset[_S]] = {src: frozenset(dst) for src, dst in table.items()}
        for src, targets in self._table.items():
            unknown = sorted(str(t) for t in targets if t not in self._table)
            require(not unknown, "table", f"{src!s} leads to unknown states {unknown}")
            require(src not in targets, "table", f"{src!s} may not lead to itself")

    @classmethod
    def from_names(
        cls, machine: str, states: type[_S], table: Mapping[str, str]
    ) -> Transitions[_S]:
        """Build from `{"state": "target target ..."}`; every state must have a row."""
        missing = sorted(set(states) - {states(name) for name in table})
        require(not missing, "table", f"no row for {[str(m) for m in missing]}")
        return cls(
            machine, {states(src): [states(t) for t in dst.split()] for src, dst in table.items()}
        )

    def allowed(self, state: _S) -> frozenset[_S]:
        """The states `state` may move to (empty for a terminal or unknown state)."""
        return self._table.get(state, frozenset())

    def can(self, from_state: _S, to_state: _S) -> bool:
        return to_state in self.allowed(from_state)

    def check(self, from_state: _S, to_state: _S) -> _S:
        """Return `to_state` if the change is allowed, else raise `InvalidTransition`."""
        if not self.can(from_state, to_state):
            raise InvalidTransition(self.machine, from_state, to_state)
        return to_state

    def fold(self, start: _S, states: Iterable[_S]) -> _S:
        """The state reached from `start` through `states`, validating every step."""
        current = start
        for state in states:
            current = self.check(current, state)
        return current


AGENT_TRANSITIONS: Transitions[AgentState] = Transitions.from_names(
    "agent",
    AgentState,
    {
        "created": "starting",
        "starting": "running error failed stopping",
        "running": "idle busy stopping error failed",
        "idle": "busy stopping error failed",
        "busy": "idle stopping error failed",
        "error": "starting running idle stopping failed stopped",
        "stopping": "stopped failed",
        "stopped": "starting",
        "failed": "starting",
    },
)
"""Agent lifecycle (seed MS-1); `stopped` and `failed` lead back to `starting` on a restart."""

TASK_TRANSITIONS: Transitions[TaskStatus] = Transitions.from_names(
    "task",
    TaskStatus,
    {
        "pending": "queued failed cancelled",
        "queued": "assigned cancelled failed timed_out",
        "assigned": "running queued cancelled failed completed timed_out",
        "running": "completed failed queued cancelled timed_out",
        "completed": "",
        "failed": "",
        "cancelled": "",
        "timed_out": "",
    },
)
"""Task lifecycle; back to `queued` is a retry or a lost lease; terminal statuses allow nothing."""


def check_agent_transition(from_state: AgentState, to_state: AgentState) -> AgentState:
    """`to_state` as an `AgentState` if an agent may move there from `from_state`, else raise.

    Plain strings (as read from PostgreSQL) are accepted; an unknown value raises `ValueError`.
    """
    return AGENT_TRANSITIONS.check(AgentState(from_state), AgentState(to_state))


def check_task_transition(from_state: TaskStatus, to_state: TaskStatus) -> TaskStatus:
    """`to_state` as a `TaskStatus` if a task may move there from `from_state`, else raise."""
    return TASK_TRANSITIONS.check(TaskStatus(from_state), TaskStatus(to_state))


def fold_agent_events(states: Iterable[AgentState]) -> AgentState:
    """An agent's current state: its events folded from `created`, every step validated.

    A leading `created` (the record of the agent's creation) is accepted and skipped.
    """
    events = [AgentState(state) for state in states]
    if events and events[0] == AgentState.CREATED:
        events = events[1:]
    return AGENT_TRANSITIONS.fold(AgentState.CREATED, events)
