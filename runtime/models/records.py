"""One model per PostgreSQL table: what a repository reads and writes.

Constraints repeat the schema's CHECKs, so a record that validates is one the database takes.
`Record.from_row` builds a model from an asyncpg row; jsonb columns arrive as JSON text
unless a codec is set on the connection, and are decoded either way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.models.common import (
    AgentId,
    Capability,
    TypeName,
    UtcDatetime,
    utcnow,
)
from runtime.models.enums import (
    AgentState,
    MessageKind,
    MessageStatus,
    ProjectStatus,
    Scope,
    SupervisorEventKind,
    TaskStatus,
    ToolStatus,
)

if TYPE_CHECKING:
    from runtime.models.events import Event

__all__ = [
    "AgentEvent",
    "AgentRecord",
    "AgentSpecialization",
    "AgentTemplate",
    "ApiKey",
    "Discovery",
    "Message",
    "OutboxEntry",
    "Project",
    "Record",
    "SupervisorEvent",
    "Task",
    "ToolExecution",
]

Requirement = str | dict[str, Any]
"""A project requirement: a sentence, or a structured item for the planner."""


class Record(BaseModel):
    """Base of the table models. Unknown columns (from joins) are ignored."""

    # defer_build: see runtime.models.events.Event
    model_config = ConfigDict(extra="ignore", validate_assignment=True, defer_build=True)

    json_columns: ClassVar[frozenset[str]] = frozenset()
    """The jsonb columns `from_row` decodes when they arrive as text."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        """The record for an asyncpg row (or any mapping of column names to values).

        A jsonb value that is a `str` is decoded as JSON; a string that is not valid JSON
        is kept as is (an already-decoded JSON string scalar).
        """
        data = dict(row)
        for column in cls.json_columns & data.keys():
            value = data[column]
            if isinstance(value, str | bytes | bytearray):
                try:
                    data[column] = json.loads(value)
                except ValueError:
                    if not isinstance(value, str):
                        raise
        return cls.model_validate(data)


class Project(Record):
    """A project: requirements in; a plan (its steps and their task ids), results out."""

    json_columns = frozenset({"requirements", "result", "inputs", "plan"})

    id: UUID = Field(default_factory=uuid4)
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    status: ProjectStatus = ProjectStatus.PENDING
    requirements: list[Requirement] = Field(default_factory=list)
    inputs: dict[str, Any] = Field(default_factory=dict)
    plan: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None
    created_at: UtcDatetime = Field(default_factory=utcnow)
    updated_at: UtcDatetime = Field(default_factory=utcnow)
    completed_at: UtcDatetime | None = None


class Task(Record):
    """A unit of work.

    `lease` is the fencing token: it grows with every lease granted, and a change of the
    task (a result above all) must carry the current one. `attempt` counts the attempts
    whose handler started (or may have): a lease handed back unstarted does not count.
    """

    json_columns = frozenset(
        {"parameters", "result", "error", "attempt_errors", "fan_out", "trace_context"}
    )

    id: UUID = Field(default_factory=uuid4)
    project_id: UUID | None = None
    parent_id: UUID | None = None
    title: str = Field(min_length=1, max_length=500)
    description: str = ""
    required_capabilities: list[Capability] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=5, ge=0, le=9)
    dependencies: list[UUID] = Field(default_factory=list)
    deadline: UtcDatetime | None = None
    """The end of the whole task: past it, it ends `timed_out` whatever attempts are left."""
    attempt_timeout_s: float | None = Field(default=None, gt=0)
    """How long one attempt may run: past it the attempt fails and the task is retried
    while it has attempts left (the last ends `timed_out`)."""
    max_attempts: int = Field(default=3, ge=1, le=100)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    fan_out: dict[str, Any] | None = None
    """A `runtime.models.plans.FanOut`: the Aggregator splits the task into children."""
    status: TaskStatus = TaskStatus.PENDING
    attempt: int = Field(default=0, ge=0)
    lease: int = Field(default=0, ge=0)
    assigned_to: str | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    """`TaskError.to_dict()` of the failure: category, type, reason, detail."""
    attempt_errors: list[dict[str, Any]] = Field(default_factory=list)
    not_before: UtcDatetime | None = None
    created_at: UtcDatetime = Field(default_factory=utcnow)
    updated_at: UtcDatetime = Field(default_factory=utcnow)
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    trace_context: dict[str, str] | None = None
    """The W3C trace context (`traceparent`) of the task's trace, when tracing is on: its
    trace id is the one to look up in the tracing backend."""

    @field_validator("error", mode="before")
    @classmethod
    def _error_as_dict(cls, value: Any) -> Any:
        return {"reason": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _attempt_within_max(self) -> Self:
        if self.attempt > self.max_attempts:
            raise ValueError(
                f"attempt ({self.attempt}) must not exceed max_attempts ({self.max_attempts})"
            )
        return self


class AgentTemplate(Record):
    """What agents are made from: a class path, its parameters and capabilities."""

    json_columns = frozenset({"parameters", "resources"})

    id: UUID = Field(default_factory=uuid4)
    name: TypeName
    class_path: str = Field(min_length=1)
    capabilities: list[Capability] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    model: str | None = None
    """The model (from the model catalog) its agents call through `ctx.model()`."""
    resources: dict[str, Any] = Field(default_factory=dict)
    """What each agent takes from Ray: `num_cpus`."""
    source: Literal["pool", "api"] = "pool"
    """Made by a pool of rayvisor.yaml (updated at each of its starts) or by the API."""
    created_at: UtcDatetime = Field(default_factory=utcnow)
    updated_at: UtcDatetime = Field(default_factory=utcnow)


class AgentRecord(Record):
    """A row of `agents`: the agent's last known state and its saved state."""

    json_columns = frozenset({"state_detail", "saved_state"})

    id: AgentId
    template_id: UUID | None = None
    name: str
    capabilities: list[Capability] = Field(default_factory=list)
    state: AgentState = AgentState.CREATED
    state_detail: dict[str, Any] = Field(default_factory=dict)
    saved_state: Any = None
    supervisor_id: str | None = None
    restart_count: int = Field(default=0, ge=0)
    created_at: UtcDatetime = Field(default_factory=utcnow)
    updated_at: UtcDatetime = Field(default_factory=utcnow)
    last_active_at: UtcDatetime | None = None


class AgentSpecialization(Record):
    agent_id: AgentId
    capability: Capability
    proficiency: float = Field(default=1.0, ge=0.0, le=1.0)
    created_at: UtcDatetime = Field(default_factory=utcnow)


class AgentEvent(Record):
    """One state transition of an agent; the agent's state is the fold of these."""

    json_columns = frozenset({"detail"})

    id: int | None = None
    agent_id: AgentId
    from_state: AgentState | None = None
    to_state: AgentState
    reason: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)
    created_at: UtcDatetime = Field(default_factory=utcnow)


class SupervisorEvent(Record):
    json_columns = frozenset({"detail"})

    id: int | None = None
    supervisor_id: str = Field(min_length=1)
    child_id: str | None = None
    event: SupervisorEventKind
    reason: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)
    created_at: UtcDatetime = Field(default_factory=utcnow)


class ToolExecution(Record):
    json_columns = frozenset({"input", "output"})

    id: UUID = Field(default_factory=uuid4)
    task_id: UUID | None = None
    agent_id: str | None = None
    tool: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)
    output: Any = None
    status: ToolStatus = ToolStatus.RUNNING
    error: str | None = None
    started_at: UtcDatetime = Field(default_factory=utcnow)
    finished_at: UtcDatetime | None = None
    duration_ms: float | None = Field(default=None, ge=0)


class Discovery(Record):
    json_columns = frozenset({"data"})

    id: UUID = Field(default_factory=uuid4)
    agent_id: str = Field(min_length=1)
    type: TypeName
    content: str = Field(min_length=1, max_length=10_000)
    confidence: float = Field(ge=0.0, le=1.0)
    data: dict[str, Any] = Field(default_factory=dict)
    task_id: UUID | None = None
    project_id: UUID | None = None
    created_at: UtcDatetime = Field(default_factory=utcnow)
    routed_task_id: UUID | None = None
    """A question's task, once the Aggregator made it."""
    route_error: str | None = None


class Message(Record):
    """An agent-to-agent message (`ctx.ask`), kept for audit and replay."""

    json_columns = frozenset({"payload"})

    id: UUID = Field(default_factory=uuid4)
    correlation_id: UUID | None = None
    sender: str = Field(min_length=1)
    recipient: str = Field(min_length=1)
    kind: MessageKind
    payload: dict[str, Any] = Field(default_factory=dict)
    status: MessageStatus = MessageStatus.SENT
    error: str | None = None
    created_at: UtcDatetime = Field(default_factory=utcnow)
    finished_at: UtcDatetime | None = None
    duration_ms: float | None = Field(default=None, ge=0)


class OutboxEntry(Record):
    """An event written in the same transaction as its state change, awaiting the relay.

    `id` is the event id, published as `Nats-Msg-Id`, so a re-sent entry is deduplicated.
    """

    json_columns = frozenset({"payload", "headers"})

    seq: int | None = None
    id: UUID
    subject: str = Field(min_length=1)
    payload: dict[str, Any]
    headers: dict[str, str] = Field(default_factory=dict)
    created_at: UtcDatetime = Field(default_factory=utcnow)
    sent_at: UtcDatetime | None = None

    @classmethod
    def for_event(cls, event: Event, headers: Mapping[str, str] | None = None) -> Self:
        """The outbox entry that publishes `event` on its subject."""
        return cls(
            id=event.event_id,
            subject=event.subject(),
            payload=event.model_dump(mode="json", by_alias=True),
            headers=dict(headers or {}),
        )

    def to_event(self) -> Event:
        """The event this entry carries, as its subject's event class."""
        from runtime.models.events import event_class_for

        return event_class_for(self.subject).model_validate(self.payload)

    def to_json(self) -> bytes:
        """The payload as the bytes published to NATS."""
        return json.dumps(self.payload, separators=(",", ":")).encode()


Scopes = Annotated[list[Scope], Field(min_length=1)]


class ApiKey(Record):
    """A stored API key. `key_hash` is never part of a dump (`model_dump`, JSON, the API)."""

    id: UUID = Field(default_factory=uuid4)
    name: str = Field(min_length=1, max_length=100)
    prefix: str = Field(min_length=1)
    key_hash: str = Field(exclude=True, repr=False)
    scopes: Scopes
    rate_per_s: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, gt=0)
    created_at: UtcDatetime = Field(default_factory=utcnow)
    last_used_at: UtcDatetime | None = None
    revoked_at: UtcDatetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None
