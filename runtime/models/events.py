"""Events: one class per NATS subject, serialized as JSON.

Every event carries `schema` (its payload version), `event_id` (published as JetStream's
`Nats-Msg-Id`, so a re-published event is stored once) and a UTC `timestamp`. The trace
context travels in NATS headers, not in the payload.

`Event.subject()` builds the subject from the event's own ids; an id that would change the
subject's shape (`.`, `*`, `>`, whitespace) is refused with a ValueError. `event_class_for`
maps a concrete subject back to its class. `DURABLE_SUBJECTS` are the subjects kept in the
JetStream stream; heartbeats, progress and performance metrics are not kept.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Self
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runtime.errors import ErrorCategory
from runtime.models.common import (
    AgentId,
    Capability,
    SubjectToken,
    TypeName,
    UtcDatetime,
    subject_token,
    utcnow,
)
from runtime.models.enums import (
    TERMINAL_TASK_STATUSES,
    AgentState,
    MessageKind,
    MessageStatus,
    ProjectStatus,
    SupervisorEventKind,
    TaskStatus,
)

__all__ = [
    "DURABLE_SUBJECTS",
    "EVENT_CLASSES",
    "AgentAnnounced",
    "AgentErrorRaised",
    "AgentHeartbeat",
    "AgentPerformance",
    "AgentStatusChanged",
    "DiscoveryShared",
    "Event",
    "MessageExchanged",
    "ProjectCompleted",
    "SupervisorDecision",
    "TaskAssigned",
    "TaskProgress",
    "TaskResult",
    "event_class_for",
    "parse_event",
]

SCHEMA_VERSION = 1

_PLACEHOLDER = re.compile(r"^\{(\w+)\}$")


class Event(BaseModel):
    """Base of all events. Subclasses set `subject_template`, e.g. `agents.{agent_id}.status`,
    whose `{field}` tokens are filled from the event's fields."""

    # defer_build: a class builds its validator on first use, so a process pays only for
    # the events it makes (a restarted agent host imports this module on its restart path)
    model_config = ConfigDict(
        populate_by_name=True,
        serialize_by_alias=True,
        frozen=True,
        extra="ignore",
        defer_build=True,
    )

    subject_template: ClassVar[str] = ""
    durable: ClassVar[bool] = True
    """Whether the subject is kept in the JetStream stream (see `DURABLE_SUBJECTS`)."""

    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema", ge=1)
    event_id: UUID = Field(default_factory=uuid4)
    timestamp: UtcDatetime = Field(default_factory=utcnow)

    def subject(self) -> str:
        """The NATS subject this event is published on."""
        tokens = []
        for part in self.subject_template.split("."):
            match = _PLACEHOLDER.match(part)
            tokens.append(subject_token(getattr(self, match[1])) if match else part)
        return ".".join(tokens)

    @classmethod
    def subject_pattern(cls) -> str:
        """The subject with every id replaced by `*`, e.g. `agents.*.status`."""
        return ".".join(
            "*" if _PLACEHOLDER.match(part) else part for part in cls.subject_template.split(".")
        )

    def to_json(self) -> bytes:
        """The payload published to NATS (keys by alias: `schema`, not `schema_version`)."""
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """The event in `data`; a pydantic ValidationError (a ValueError) if it is invalid."""
        return cls.model_validate_json(data)


class AgentAnnounced(Event):
    """An agent came up, with its capabilities."""

    subject_template = "agents.discovery.announce"

    agent_id: AgentId
    capabilities: list[Capability] = Field(default_factory=list)
    template: str | None = None
    node_id: str | None = None
    pid: int | None = None


class AgentHeartbeat(Event):
    """Liveness, sent by the host. Not durable."""

    subject_template = "agents.{agent_id}.heartbeat"
    durable = False

    agent_id: AgentId
    state: AgentState
    loop_lag_ms: float = Field(default=0.0, ge=0)
    active_tasks: int = Field(default=0, ge=0)


class AgentStatusChanged(Event):
    """An agent's state transition."""

    subject_template = "agents.{agent_id}.status"

    agent_id: AgentId
    from_state: AgentState | None = None
    to_state: AgentState
    reason: str = ""


class AgentErrorRaised(Event):
    """An error an agent raised, with its failure category (see `runtime.errors.classify`)."""

    subject_template = "agents.{agent_id}.events.error"

    agent_id: AgentId
    error_type: str
    message: str = ""
    task_id: UUID | None = None
    category: ErrorCategory


class AgentPerformance(Event):
    """Per-agent counters. Not durable."""

    subject_template = "agents.{agent_id}.metrics.performance"
    durable = False

    agent_id: AgentId
    tasks_completed: int = Field(default=0, ge=0)
    tasks_failed: int = Field(default=0, ge=0)
    avg_latency_ms: float = Field(default=0.0, ge=0)


class TaskAssigned(Event):
    """A lease granted: `lease` is the token a result must carry to be accepted."""

    subject_template = "tasks.{task_id}.assignment"

    task_id: UUID
    agent_id: AgentId
    attempt: int = Field(ge=1)
    lease: int = Field(default=0, ge=0)


class TaskProgress(Event):
    """Progress of a running attempt. Not durable."""

    subject_template = "tasks.{task_id}.progress"
    durable = False

    task_id: UUID
    agent_id: AgentId
    attempt: int = Field(ge=1)
    progress: float = Field(ge=0.0, le=1.0)
    message: str = ""


class TaskResult(Event):
    """A task ended: `status` is terminal (completed, failed, cancelled, timed_out)."""

    subject_template = "tasks.{task_id}.result"

    task_id: UUID
    status: TaskStatus
    attempt: int = Field(ge=0)
    agent_id: AgentId | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    """`TaskError.to_dict()` of the failure: category, type, reason, detail."""

    @field_validator("status")
    @classmethod
    def _terminal(cls, value: TaskStatus) -> TaskStatus:
        if value not in TERMINAL_TASK_STATUSES:
            allowed = ", ".join(sorted(status.value for status in TERMINAL_TASK_STATUSES))
            raise ValueError(f"a result's status must be terminal ({allowed})")
        return value


class DiscoveryShared(Event):
    """A discovery an agent shared, on `discoveries.{agent_id}.{type}`."""

    subject_template = "discoveries.{agent_id}.{type}"

    discovery_id: UUID = Field(default_factory=uuid4)
    agent_id: AgentId
    type: TypeName
    content: str = Field(min_length=1, max_length=10_000)
    confidence: float = Field(ge=0.0, le=1.0)
    data: dict[str, Any] = Field(default_factory=dict)
    task_id: UUID | None = None
    project_id: UUID | None = None


class MessageExchanged(Event):
    """An agent-to-agent message went out or its exchange ended (`ctx.ask`, `ctx.tell`)."""

    subject_template = "messages.{recipient}.{kind}"

    message_id: UUID
    correlation_id: UUID | None = None
    sender: AgentId
    recipient: AgentId
    kind: MessageKind
    status: MessageStatus
    payload: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class SupervisorDecision(Event):
    """A supervision decision (child started, exited, restarted, circuit changes, ...)."""

    subject_template = "supervisors.{supervisor_id}.events"

    supervisor_id: SubjectToken
    child_id: str | None = None
    event: SupervisorEventKind
    reason: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


class ProjectCompleted(Event):
    """A project's results were compiled; `status` is how it ended."""

    subject_template = "projects.{project_id}.completed"

    project_id: UUID
    status: ProjectStatus = ProjectStatus.COMPLETED
    result: Any = None


EVENT_CLASSES: tuple[type[Event], ...] = (
    AgentAnnounced,
    AgentHeartbeat,
    AgentStatusChanged,
    AgentErrorRaised,
    AgentPerformance,
    TaskAssigned,
    TaskProgress,
    TaskResult,
    DiscoveryShared,
    MessageExchanged,
    SupervisorDecision,
    ProjectCompleted,
)

DURABLE_SUBJECTS: list[str] = [
    "agents.discovery.announce",
    "agents.*.status",
    "agents.*.events.error",
    "tasks.*.assignment",
    "tasks.*.result",
    "discoveries.>",
    "messages.>",
    "supervisors.*.events",
    "projects.*.completed",
]
"""The subjects of the JetStream stream (NATS wildcards)."""

# Literal subjects first, so `agents.discovery.announce` is never read as a per-agent subject.
_REGISTRY: list[tuple[list[str], type[Event]]] = sorted(
    ((cls.subject_pattern().split("."), cls) for cls in EVENT_CLASSES),
    key=lambda entry: entry[0].count("*"),
)


def event_class_for(subject: str) -> type[Event]:
    """The event class published on a concrete `subject`; ValueError if there is none."""
    tokens = subject.split(".")
    for pattern, cls in _REGISTRY:
        if len(pattern) == len(tokens) and all(
            _token_matches(want, got) for want, got in zip(pattern, tokens, strict=True)
        ):
            return cls
    raise ValueError(f"no event class for subject {subject!r}")


def _token_matches(want: str, got: str) -> bool:
    if want != "*":
        return want == got
    try:
        subject_token(got)
    except ValueError:
        return False
    return True


def parse_event(subject: str, data: bytes | str) -> Event:
    """The event received on `subject`; ValueError if the subject or payload is not valid."""
    return event_class_for(subject).from_json(data)
