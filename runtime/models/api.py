"""Request and response bodies of the HTTP API.

Request bodies refuse unknown fields (`extra="forbid"`), so a misspelt field is a 422 that
names it rather than a silently ignored value. Their field names match the records they
create: `Task(**body.model_dump())` is a valid task.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.models.common import (
    AgentId,
    Capability,
    TypeName,
    UtcDatetime,
    check_question,
    nul_at,
)
from runtime.models.enums import Scope
from runtime.models.plans import FAN_OUT_CAPABILITY, FanOut
from runtime.models.records import Task

__all__ = [
    "AgentSpawn",
    "AgentSpawned",
    "ApiKeyCreate",
    "DiscoveryCreate",
    "ItemError",
    "Page",
    "ProjectCreate",
    "ProjectTask",
    "ProjectView",
    "SpecializationCreate",
    "TaskBatch",
    "TaskBatchItem",
    "TaskBatchResult",
    "TaskCreate",
    "TemplateCreate",
    "TemplateResources",
]

T = TypeVar("T")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        where = nul_at(data)
        if where is not None:
            raise ValueError(f"{where}: text must not contain NUL (U+0000) characters")
        return data


class TaskCreate(_Body):
    """`POST /api/v1/tasks`. An `Idempotency-Key` header, when sent, wins over the field."""

    title: str = Field(min_length=1, max_length=500)
    description: str = Field(default="", max_length=100_000)
    required_capabilities: list[Capability] = Field(default_factory=list, max_length=100)
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=5, ge=0, le=9)
    dependencies: list[UUID] = Field(default_factory=list, max_length=10_000)
    deadline: UtcDatetime | None = None
    attempt_timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    max_attempts: int = Field(default=3, ge=1, le=100)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    project_id: UUID | None = None
    parent_id: UUID | None = None
    fan_out: FanOut | None = None
    """Split into chunks run in parallel and reduced (the Aggregator runs it)."""

    @model_validator(mode="after")
    def _fan_out_is_the_aggregators(self) -> TaskCreate:
        if self.fan_out is not None:
            if self.required_capabilities not in ([], [FAN_OUT_CAPABILITY]):
                raise ValueError(
                    "required_capabilities: a fan_out task is run by the Aggregator; name the"
                    " capability of its chunks in fan_out.capability instead"
                )
            self.required_capabilities = [FAN_OUT_CAPABILITY]
        return self


class TaskBatch(BaseModel):
    """`POST /api/v1/tasks/batch`: tasks validated and answered each on its own.

    Each item is a `TaskCreate` (its `idempotency_key` field is its key) but is only
    required to be an object here: an invalid item is a 422 in its own result, not a
    refusal of the batch. More than `http.max_batch_tasks` items: the batch is refused.
    """

    model_config = ConfigDict(extra="forbid")

    tasks: list[dict[str, Any]] = Field(
        min_length=1,
        description="`TaskCreate` objects, each with its own optional `idempotency_key`;"
        " at most `http.max_batch_tasks` (1,000 by default).",
        examples=[
            [
                {
                    "title": "scan a.log",
                    "required_capabilities": ["log_analysis"],
                    "parameters": {"path": "a.log"},
                    "idempotency_key": "scan-a",
                },
                {
                    "title": "scan b.log",
                    "required_capabilities": ["log_analysis"],
                    "parameters": {"path": "b.log"},
                    "idempotency_key": "scan-b",
                },
            ]
        ],
    )


class ItemError(BaseModel):
    """What is wrong with one item of a batch: the field (within the item) and why."""

    field: str
    reason: str


class TaskBatchItem(BaseModel):
    """One item's answer, as its own request would have had it."""

    index: int = Field(ge=0, description="The item's position in `tasks`.")
    status: Literal[200, 201, 422] = Field(
        description="201: stored; 200: the task its `idempotency_key` already made (same"
        " body); 422: refused (`errors`), nothing stored for it."
    )
    task: Task | None = None
    errors: list[ItemError] = Field(default_factory=list)


class TaskBatchResult(BaseModel):
    """The answer to a batch (HTTP 207): one result per item, in the order sent."""

    created: int
    existing: int
    refused: int
    results: list[TaskBatchItem]


class ProjectCreate(_Body):
    """`POST /api/v1/projects`: requirements the `planning` capability turns into tasks."""

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=100_000)
    requirements: list[str | dict[str, Any]] = Field(
        default_factory=list, min_length=1, max_length=1_000
    )
    inputs: dict[str, Any] = Field(default_factory=dict)
    """What the plan works on (e.g. `{"paths": [...], "chunks": 8}`)."""


class ProjectTask(BaseModel):
    """A node of a project's task graph: a step's task, or a chunk of a fan-out step."""

    id: UUID
    title: str
    step: str | None = None
    """The plan's step this task is (None for a chunk or the planning task)."""
    status: str
    parent_id: UUID | None = None
    dependencies: list[UUID] = Field(default_factory=list)
    required_capabilities: list[str] = Field(default_factory=list)
    attempt: int = 0
    assigned_to: str | None = None
    error: dict[str, Any] | None = None


class ProjectView(BaseModel):
    """`GET /api/v1/projects/{id}`: the project, how far it is, its task graph, results."""

    id: UUID
    name: str
    description: str
    status: str
    requirements: list[str | dict[str, Any]]
    inputs: dict[str, Any]
    progress: float = Field(ge=0.0, le=1.0)
    """The share of the project's tasks (chunks included) that have ended."""
    error: str | None = None
    result: Any = None
    tasks: list[ProjectTask] = Field(default_factory=list)
    created_at: UtcDatetime
    updated_at: UtcDatetime
    completed_at: UtcDatetime | None = None


class DiscoveryCreate(_Body):
    """`POST /api/v1/discoveries`. Without `agent_id` the route names the sender."""

    agent_id: AgentId | None = None
    type: TypeName
    content: str = Field(min_length=1, max_length=10_000)
    confidence: float = Field(ge=0.0, le=1.0)
    data: dict[str, Any] = Field(default_factory=dict)
    task_id: UUID | None = None
    project_id: UUID | None = None

    @model_validator(mode="after")
    def _question(self) -> DiscoveryCreate:
        check_question(self.type, self.data)
        return self


class AgentSpawn(_Body):
    """`POST /api/v1/agents`: one more agent in the pool that runs `template`."""

    template: TypeName


class TemplateResources(_Body):
    num_cpus: float = Field(0.0, ge=0, le=1024)


class TemplateCreate(_Body):
    """`POST /api/v1/templates`: what agents are made from. `capabilities` empty: the
    class's own."""

    name: TypeName
    class_path: str = Field(
        min_length=3, max_length=300, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="`module:Class` of an Agent subclass",
    )  # fmt: skip
    parameters: dict[str, Any] = Field(default_factory=dict)
    capabilities: list[Capability] = Field(default_factory=list, max_length=100)
    description: str = Field(default="", max_length=2000)
    model: str | None = Field(default=None, min_length=1, max_length=100)
    resources: TemplateResources = TemplateResources()


class SpecializationCreate(_Body):
    """`POST /api/v1/agents/{id}/specializations`: one more capability for one agent."""

    capability: Capability
    proficiency: float = Field(default=1.0, ge=0.0, le=1.0)


class AgentSpawned(BaseModel):
    """The agent a spawn started: its id, and the pool supervisor that runs it."""

    agent_id: AgentId
    template: TypeName
    supervisor_id: str


class ApiKeyCreate(_Body):
    """`POST` of a new API key; the key itself is shown once, only its hash is stored."""

    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(default_factory=lambda: [Scope.READ], min_length=1)
    rate_per_s: float = Field(default=50.0, ge=0.001, le=1_000_000)
    burst: int = Field(default=100, gt=0, le=1_000_000)


class Page(BaseModel, Generic[T]):
    """One page of a listing; pass `next_cursor` back as `cursor` for the next one."""

    items: list[T]
    next_cursor: str | None = None
