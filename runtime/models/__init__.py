"""pydantic models of rayvisor: table records, NATS events and HTTP API bodies.

They know nothing of asyncpg, NATS, Ray or FastAPI; those stay at the edges.
Names load on first use (PEP 562): an agent host needs the events and records but not
the HTTP bodies, and a restarted host imports only what it touches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.models.api import (
        AgentSpawn,
        ApiKeyCreate,
        DiscoveryCreate,
        Page,
        ProjectCreate,
        TaskCreate,
    )
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
        ProjectStatus,
        Scope,
        SupervisorEventKind,
        TaskStatus,
        ToolStatus,
    )
    from runtime.models.events import (
        DURABLE_SUBJECTS,
        EVENT_CLASSES,
        AgentAnnounced,
        AgentErrorRaised,
        AgentHeartbeat,
        AgentPerformance,
        AgentStatusChanged,
        DiscoveryShared,
        Event,
        MessageExchanged,
        ProjectCompleted,
        SupervisorDecision,
        TaskAssigned,
        TaskProgress,
        TaskResult,
        event_class_for,
        parse_event,
    )
    from runtime.models.records import (
        AgentEvent,
        AgentRecord,
        AgentSpecialization,
        AgentTemplate,
        ApiKey,
        Discovery,
        Message,
        OutboxEntry,
        Project,
        Record,
        SupervisorEvent,
        Task,
        ToolExecution,
    )

_HOMES = {
    "AgentSpawn": "runtime.models.api",
    "ApiKeyCreate": "runtime.models.api",
    "DiscoveryCreate": "runtime.models.api",
    "Page": "runtime.models.api",
    "ProjectCreate": "runtime.models.api",
    "TaskCreate": "runtime.models.api",
    "AgentId": "runtime.models.common",
    "Capability": "runtime.models.common",
    "SubjectToken": "runtime.models.common",
    "TypeName": "runtime.models.common",
    "UtcDatetime": "runtime.models.common",
    "subject_token": "runtime.models.common",
    "utcnow": "runtime.models.common",
    "TERMINAL_TASK_STATUSES": "runtime.models.enums",
    "AgentState": "runtime.models.enums",
    "MessageKind": "runtime.models.enums",
    "ProjectStatus": "runtime.models.enums",
    "Scope": "runtime.models.enums",
    "SupervisorEventKind": "runtime.models.enums",
    "TaskStatus": "runtime.models.enums",
    "ToolStatus": "runtime.models.enums",
    "DURABLE_SUBJECTS": "runtime.models.events",
    "EVENT_CLASSES": "runtime.models.events",
    "AgentAnnounced": "runtime.models.events",
    "AgentErrorRaised": "runtime.models.events",
    "AgentHeartbeat": "runtime.models.events",
    "AgentPerformance": "runtime.models.events",
    "AgentStatusChanged": "runtime.models.events",
    "DiscoveryShared": "runtime.models.events",
    "MessageExchanged": "runtime.models.events",
    "Event": "runtime.models.events",
    "ProjectCompleted": "runtime.models.events",
    "SupervisorDecision": "runtime.models.events",
    "TaskAssigned": "runtime.models.events",
    "TaskProgress": "runtime.models.events",
    "TaskResult": "runtime.models.events",
    "event_class_for": "runtime.models.events",
    "parse_event": "runtime.models.events",
    "AgentEvent": "runtime.models.records",
    "AgentRecord": "runtime.models.records",
    "AgentSpecialization": "runtime.models.records",
    "AgentTemplate": "runtime.models.records",
    "ApiKey": "runtime.models.records",
    "Discovery": "runtime.models.records",
    "Message": "runtime.models.records",
    "OutboxEntry": "runtime.models.records",
    "Project": "runtime.models.records",
    "Record": "runtime.models.records",
    "SupervisorEvent": "runtime.models.records",
    "Task": "runtime.models.records",
    "ToolExecution": "runtime.models.records",
}

__all__ = [
    "DURABLE_SUBJECTS",
    "EVENT_CLASSES",
    "TERMINAL_TASK_STATUSES",
    "AgentAnnounced",
    "AgentErrorRaised",
    "AgentEvent",
    "AgentHeartbeat",
    "AgentId",
    "AgentPerformance",
    "AgentRecord",
    "AgentSpawn",
    "AgentSpecialization",
    "AgentState",
    "AgentStatusChanged",
    "AgentTemplate",
    "ApiKey",
    "ApiKeyCreate",
    "Capability",
    "Discovery",
    "DiscoveryCreate",
    "DiscoveryShared",
    "Event",
    "Message",
    "MessageExchanged",
    "MessageKind",
    "OutboxEntry",
    "Page",
    "Project",
    "ProjectCompleted",
    "ProjectCreate",
    "ProjectStatus",
    "Record",
    "Scope",
    "SubjectToken",
    "SupervisorDecision",
    "SupervisorEvent",
    "SupervisorEventKind",
    "Task",
    "TaskAssigned",
    "TaskCreate",
    "TaskProgress",
    "TaskResult",
    "TaskStatus",
    "ToolExecution",
    "ToolStatus",
    "TypeName",
    "UtcDatetime",
    "event_class_for",
    "parse_event",
    "subject_token",
    "utcnow",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runtime.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
