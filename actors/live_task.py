"""A task as the shard that owns it holds it: its record, its place in the queue, and what
it writes (`row`, fenced by the lease PostgreSQL holds) and sends (`envelope`)."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from actors.registry import AgentEntry
from runtime import telemetry
from runtime.models.records import Task
from runtime.state_machines import TaskStatus, check_task_transition

__all__ = ["LiveTask", "lease_batches", "submit_span", "trace_context_of"]


@dataclass
class LiveTask:
    """The live part of a task this shard owns; `row()` is what the database keeps."""

    record: Task
    seq: int
    db_lease: int = 0  # the lease PostgreSQL holds, as last written
    returns: int = 0  # leases handed back unstarted
    cancel_asked: bool = False
    waiting_on: set[UUID] = field(default_factory=set)
    avoid: set[str] = field(default_factory=set)
    lease_span: Any = None  # the open `task.lease` span of the current lease, if traced
    lease_context: dict[str, str] | None = None  # the last lease span's, as headers
    by_status: Counter[TaskStatus] | None = None  # the shard's count of its tasks by status

    def __post_init__(self) -> None:
        if self.by_status is not None:
            self.by_status[self.record.status] += 1

    @property
    def id(self) -> UUID:
        return self.record.id

    @functools.cached_property
    def required(self) -> frozenset[str]:
        return frozenset(self.record.required_capabilities)

    def move(self, to: TaskStatus) -> None:
        check_task_transition(self.record.status, to)
        if self.by_status is not None:
            self.by_status[self.record.status] -= 1
            self.by_status[to] += 1
        self.record.__dict__["status"] = to  # validated above; skip pydantic per change

    def leave(self) -> None:
        """The shard forgets this task: it is no longer counted."""
        if self.by_status is not None:
            self.by_status[self.record.status] -= 1
            self.by_status = None

    def set(self, **fields: Any) -> None:
        self.record.__dict__.update(fields)

    def row(self) -> tuple[Any, ...]:
        """The state to write, fenced by the lease PostgreSQL holds (rows are written in
        the order they are made, so that is the lease of the row before)."""
        r = self.record
        expect, self.db_lease = self.db_lease, r.lease
        return (
            r.id, expect, r.status.value, r.attempt, r.lease, r.assigned_to, r.result,
            r.error, r.attempt_errors, r.not_before, r.started_at, r.finished_at,
        )  # fmt: skip

    def begin_lease_span(self, agent_id: str, *, adopted: bool = False) -> None:
        """Trace the lease just granted (or adopted): one span per attempt, all children
        of the task's stored context, so every attempt is in the task's trace."""
        if not telemetry.enabled():
            return
        self.end_lease_span("superseded by a new lease")
        r = self.record
        self.lease_span = telemetry.start_span(
            "task.lease",
            r.trace_context,
            {"task.id": str(r.id), "agent.id": agent_id, "attempt": r.attempt,
             "lease": r.lease, "capability": ",".join(sorted(self.required)) or "any",
             "adopted": adopted},
        )  # fmt: skip
        self.lease_context = telemetry.span_carrier(self.lease_span)

    def end_lease_span(self, error: str | None = None) -> None:
        span, self.lease_span = self.lease_span, None
        telemetry.end_span(span, error)

    def commit_span(self) -> Any:
        """`task.commit`: the outcome's write, child of the lease it ends (None if off)."""
        r = self.record
        return telemetry.start_span(
            "task.commit",
            self.trace_carrier(),
            {"task.id": str(r.id), "status": r.status.value, "attempt": r.attempt,
             "agent.id": r.assigned_to},
        )  # fmt: skip

    def trace_carrier(self) -> dict[str, str] | None:
        """The context the agent's work (and the result's commit) is a child of: the
        last lease's, or the task's before any."""
        return self.lease_context or self.record.trace_context

    def envelope(self) -> dict[str, Any]:
        r = self.record
        return {
            "id": str(r.id),
            "attempt": r.attempt,
            "lease": r.lease,
            "title": r.title,
            "parameters": r.parameters,
            "project_id": str(r.project_id) if r.project_id else None,
            "parent_id": str(r.parent_id) if r.parent_id else None,
            "dependencies": [str(d) for d in r.dependencies],
            "deadline": r.deadline.isoformat() if r.deadline else None,
            "attempt_timeout_s": r.attempt_timeout_s,
            "trace": self.trace_carrier(),
        }


def lease_batches(
    leases: list[tuple[LiveTask, AgentEntry]],
) -> list[tuple[AgentEntry, list[LiveTask]]]:
    """Leases grouped by agent, in order, at most half an agent's capacity per batch: the
    agent works through one batch while the outcomes of the one before travel back."""
    by_agent: dict[str, tuple[AgentEntry, list[LiveTask]]] = {}
    for live, agent in leases:
        by_agent.setdefault(agent.agent_id, (agent, []))[1].append(live)
    batches = []
    for agent, tasks in by_agent.values():
        size = max(1, agent.capacity // 2)
        batches += [(agent, tasks[i : i + size]) for i in range(0, len(tasks), size)]
    return batches


def trace_context_of(value: Any) -> dict[str, str] | None:
    """The submitter's trace headers, if they are headers (anything else is dropped)."""
    if (
        isinstance(value, dict)
        and value
        and all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= 512 for k, v in value.items()
        )
    ):
        return value
    return None


def submit_span(record: Task) -> Any:
    """`task.submit`, child of the submitter's context; the task keeps its context, so
    the task's leases (whoever grants them) are its children."""
    span = telemetry.start_span(
        "task.submit",
        record.trace_context,
        {"task.id": str(record.id), "capability": ",".join(sorted(record.required_capabilities))
         or "any", "title": record.title[:200]},
    )  # fmt: skip
    record.__dict__["trace_context"] = telemetry.span_carrier(span)
    return span
