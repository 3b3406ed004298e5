"""The closed sets of values in records and events; each matches a CHECK in the schema.

`AgentState`, `TaskStatus` and `TERMINAL_TASK_STATUSES` belong to the state machines in
`runtime.state_machines` and are re-exported here, so models and their users import every enum
from one place.
"""

from __future__ import annotations

from enum import StrEnum

from runtime.state_machines import TERMINAL_TASK_STATUSES, AgentState, TaskStatus

__all__ = [
    "TERMINAL_TASK_STATUSES",
    "AgentState",
    "MessageKind",
    "MessageStatus",
    "ProjectStatus",
    "Scope",
    "SupervisorEventKind",
    "TaskStatus",
    "ToolStatus",
]


class ProjectStatus(StrEnum):
    PENDING = "pending"
    PLANNING = "planning"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Scope(StrEnum):
    """What an API key may do."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class SupervisorEventKind(StrEnum):
    """Every decision a supervisor takes (`supervisor_events.event`)."""

    CHILD_STARTED = "child_started"
    CHILD_EXITED = "child_exited"
    RESTART_SCHEDULED = "restart_scheduled"
    RESTARTED = "restarted"
    CIRCUIT_OPENED = "circuit_opened"
    CIRCUIT_HALF_OPEN = "circuit_half_open"
    CIRCUIT_CLOSED = "circuit_closed"
    ESCALATED = "escalated"
    SUPERVISOR_STOPPED = "supervisor_stopped"


class MessageKind(StrEnum):
    """Agent-to-agent messages (`messages.kind`)."""

    REQUEST = "request"
    RESPONSE = "response"
    NOTIFICATION = "notification"


class MessageStatus(StrEnum):
    """Where a message's exchange stands (`messages.status`)."""

    SENT = "sent"
    ANSWERED = "answered"
    DELIVERED = "delivered"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


class ToolStatus(StrEnum):
    """A tool call (`tool_executions.status`)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
