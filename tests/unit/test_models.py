"""Tests of runtime/models: events and subjects, records from rows, API bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

import runtime.models as models
from runtime.models import (
    DURABLE_SUBJECTS,
    EVENT_CLASSES,
    AgentAnnounced,
    AgentErrorRaised,
    AgentEvent,
    AgentHeartbeat,
    AgentPerformance,
    AgentRecord,
    AgentSpawn,
    AgentState,
    AgentStatusChanged,
    AgentTemplate,
    ApiKey,
    ApiKeyCreate,
    Discovery,
    DiscoveryCreate,
    DiscoveryShared,
    Event,
    Message,
    MessageExchanged,
    MessageKind,
    OutboxEntry,
    Page,
    Project,
    ProjectCompleted,
    ProjectCreate,
    ProjectStatus,
    Scope,
    SupervisorDecision,
    SupervisorEvent,
    SupervisorEventKind,
    Task,
    TaskAssigned,
    TaskCreate,
    TaskProgress,
    TaskResult,
    TaskStatus,
    ToolExecution,
    ToolStatus,
    event_class_for,
    parse_event,
    subject_token,
)

TASK_ID = UUID("7b6c5f1e-0000-4000-8000-000000000001")
PROJECT_ID = UUID("7b6c5f1e-0000-4000-8000-000000000002")
DISCOVERY_ID = UUID("7b6c5f1e-0000-4000-8000-000000000003")
AGENT = "log_analysis-1"
T0 = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)

# (event, the subject it must be published on)
EVENTS: list[tuple[Event, str]] = [
    (
        AgentAnnounced(
            agent_id=AGENT,
            capabilities=["log_analysis", "chunking"],
            template="log_analysis",
            node_id="abc123",
            pid=4242,
        ),
        "agents.discovery.announce",
    ),
    (
        AgentHeartbeat(agent_id=AGENT, state=AgentState("busy"), loop_lag_ms=1.5, active_tasks=2),
        f"agents.{AGENT}.heartbeat",
    ),
    (
        AgentStatusChanged(
            agent_id=AGENT, from_state="idle", to_state="busy", reason="task assigned"
        ),
        f"agents.{AGENT}.status",
    ),
    (
        AgentErrorRaised(
            agent_id=AGENT,
            error_type="TransientError",
            message="timeout",
            task_id=TASK_ID,
            category="transient",
        ),
        f"agents.{AGENT}.events.error",
    ),
    (
        AgentPerformance(agent_id=AGENT, tasks_completed=10, tasks_failed=1, avg_latency_ms=12.5),
        f"agents.{AGENT}.metrics.performance",
    ),
    (
        TaskAssigned(task_id=TASK_ID, agent_id=AGENT, attempt=1),
        f"tasks.{TASK_ID}.assignment",
    ),
    (
        TaskProgress(task_id=TASK_ID, agent_id=AGENT, attempt=2, progress=0.5, message="parsing"),
        f"tasks.{TASK_ID}.progress",
    ),
    (
        TaskResult(
            task_id=TASK_ID,
            status="failed",
            attempt=3,
            agent_id=AGENT,
            error={"category": "logical", "reason": "bad input"},
        ),
        f"tasks.{TASK_ID}.result",
    ),
    (
        DiscoveryShared(
            discovery_id=DISCOVERY_ID,
            agent_id=AGENT,
            type="pattern",
            content="burst of failed logins from 173.234.31.186",
            confidence=0.9,
            data={"ip": "173.234.31.186", "count": 17},
            task_id=TASK_ID,
        ),
        f"discoveries.{AGENT}.pattern",
    ),
    (
        SupervisorDecision(
            supervisor_id="sup:pool:log_analysis",
            child_id=AGENT,
            event="restart_scheduled",
            reason="missed heartbeats",
            detail={"delay_s": 0.4},
        ),
        "supervisors.sup:pool:log_analysis.events",
    ),
    (
        ProjectCompleted(project_id=PROJECT_ID, status="completed", result={"summary": "done"}),
        f"projects.{PROJECT_ID}.completed",
    ),
    (
        MessageExchanged(
            message_id=DISCOVERY_ID,
            sender="planner-1",
            recipient=AGENT,
            kind="request",
            status="sent",
            payload={"question": "which address?"},
        ),
        f"messages.{AGENT}.request",
    ),
]


_IDS = [type(event).__name__ for event, _ in EVENTS]


def _matches(pattern: str, subject: str) -> bool:
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or token not in ("*", got[i]):
            return False
    return len(want) == len(got)


def test_every_event_class_is_covered() -> None:
    assert {type(event) for event, _ in EVENTS} == set(EVENT_CLASSES)
    assert len(EVENT_CLASSES) == 12


@pytest.mark.parametrize(("event", "subject"), EVENTS, ids=_IDS)
def test_subject(event: Event, subject: str) -> None:
    assert event.subject() == subject


@pytest.mark.parametrize(("event", "subject"), EVENTS, ids=_IDS)
def test_json_round_trip(event: Event, subject: str) -> None:
    data = event.to_json()
    assert isinstance(data, bytes)
    decoded = json.loads(data)
    assert decoded["schema"] == 1
    assert "schema_version" not in decoded
    assert decoded["event_id"] == str(event.event_id)
    copy = type(event).from_json(data)
    assert copy == event
    assert copy.subject() == subject
    assert parse_event(subject, data) == event
    assert type(parse_event(subject, data)) is type(event)


@pytest.mark.parametrize(("event", "subject"), EVENTS, ids=_IDS)
def test_event_class_for(event: Event, subject: str) -> None:
    assert event_class_for(subject) is type(event)


@pytest.mark.parametrize(("event", "subject"), EVENTS, ids=_IDS)
def test_durable_subjects_cover_exactly_the_durable_events(event: Event, subject: str) -> None:
    durable = any(_matches(pattern, subject) for pattern in DURABLE_SUBJECTS)
    assert durable is type(event).durable
    assert durable is not isinstance(event, AgentHeartbeat | TaskProgress | AgentPerformance)


def test_durable_subjects() -> None:
    assert DURABLE_SUBJECTS == [
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


@pytest.mark.parametrize(
    ("subject", "cls"),
    [
        ("agents.x.status", AgentStatusChanged),
        ("agents.discovery.status", AgentStatusChanged),
        ("agents.discovery.heartbeat", AgentHeartbeat),
        ("agents.discovery.announce", AgentAnnounced),
        ("discoveries.a.b", DiscoveryShared),
        ("supervisors.sup:root.events", SupervisorDecision),
        ("tasks.anything.result", TaskResult),
    ],
)
def test_event_class_for_by_shape(subject: str, cls: type[Event]) -> None:
    assert event_class_for(subject) is cls


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "agents",
        "agents.x.unknown",
        "agents.x.status.extra",
        "agents..status",
        "agents.*.status",
        "discoveries.>",
        "discoveries.a",
        "discoveries.a.b.c",
        "tasks.x.results",
        "nope.x.status",
    ],
)
def test_event_class_for_unknown_subject_raises(subject: str) -> None:
    with pytest.raises(ValueError, match="no event class"):
        event_class_for(subject)


def test_subject_pattern() -> None:
    assert AgentErrorRaised.subject_pattern() == "agents.*.events.error"
    assert DiscoveryShared.subject_pattern() == "discoveries.*.*"
    assert AgentAnnounced.subject_pattern() == "agents.discovery.announce"


@pytest.mark.parametrize("bad", ["a.b", "a*", "a>", "a b", "a\tb", ">", "*", ""])
def test_subject_token_refuses_shape_changing_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        subject_token(bad)
    with pytest.raises(ValueError):
        SupervisorDecision(supervisor_id=bad, event="restarted")


def test_subject_token_accepts_plain_ids() -> None:
    assert subject_token("sup:pool:log_analysis") == "sup:pool:log_analysis"
    assert subject_token(TASK_ID) == str(TASK_ID)


@pytest.mark.parametrize("bad", ["a.b", "a b", "a*", "x>"])
def test_agent_ids_in_subjects_are_validated(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        AgentStatusChanged(agent_id=bad, to_state="running")
    assert isinstance(info.value, ValidationError)
    assert info.value.errors()[0]["loc"] == ("agent_id",)


def test_a_subject_is_checked_when_built() -> None:
    # model_construct skips validation: subject() still refuses the id.
    event = AgentHeartbeat.model_construct(agent_id="a.b", state=AgentState("idle"))
    with pytest.raises(ValueError, match="subject token"):
        event.subject()


def test_schema_by_name_and_alias() -> None:
    by_alias = AgentHeartbeat.model_validate({"schema": 2, "agent_id": "a", "state": "idle"})
    by_name = AgentHeartbeat(schema_version=2, agent_id="a", state="idle")
    assert by_alias.schema_version == by_name.schema_version == 2
    assert by_alias.model_dump()["schema"] == 2
    with pytest.raises(ValidationError):
        AgentHeartbeat(schema_version=0, agent_id="a", state="idle")


def test_event_defaults() -> None:
    a = AgentHeartbeat(agent_id="a", state="idle")
    b = AgentHeartbeat(agent_id="a", state="idle")
    assert a.event_id != b.event_id
    assert a.schema_version == 1
    assert a.timestamp.tzinfo is not None
    assert a.timestamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - a.timestamp) < timedelta(seconds=5)


def test_timestamps_are_utc() -> None:
    naive = AgentHeartbeat(agent_id="a", state="idle", timestamp=datetime(2025, 1, 1, 12))
    assert naive.timestamp == datetime(2025, 1, 1, 12, tzinfo=UTC)
    plus2 = timezone(timedelta(hours=2))
    shifted = AgentHeartbeat(
        agent_id="a", state="idle", timestamp=datetime(2025, 1, 1, 12, tzinfo=plus2)
    )
    assert shifted.timestamp.utcoffset() == timedelta(0)
    assert shifted.timestamp.hour == 10
    assert json.loads(shifted.to_json())["timestamp"] == "2025-01-01T10:00:00Z"


def test_events_are_immutable() -> None:
    event = TaskAssigned(task_id=TASK_ID, agent_id="a", attempt=1)
    with pytest.raises(ValidationError):
        event.attempt = 2  # type: ignore[misc]


def test_unknown_payload_fields_are_ignored_for_forward_compatibility() -> None:
    data = {"schema": 2, "task_id": str(TASK_ID), "agent_id": "a", "attempt": 1, "new": 1}
    event = TaskAssigned.from_json(json.dumps(data).encode())
    assert event.attempt == 1
    assert "new" not in event.model_dump()


def test_from_json_refuses_invalid_payloads() -> None:
    with pytest.raises(ValidationError):
        TaskAssigned.from_json(b"not json")
    with pytest.raises(ValidationError) as info:
        TaskAssigned.from_json(json.dumps({"task_id": str(TASK_ID), "agent_id": "a"}))
    assert info.value.errors()[0]["loc"] == ("attempt",)


@pytest.mark.parametrize("status", ["pending", "queued", "assigned", "running"])
def test_task_result_status_must_be_terminal(status: str) -> None:
    with pytest.raises(ValidationError) as info:
        TaskResult(task_id=TASK_ID, status=status, attempt=1)
    assert info.value.errors()[0]["loc"] == ("status",)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"progress": 1.5}, "progress"),
        ({"progress": -0.1}, "progress"),
        ({"attempt": 0}, "attempt"),
    ],
)
def test_task_progress_ranges(kwargs: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"task_id": TASK_ID, "agent_id": "a", "attempt": 1, "progress": 0.5}
    with pytest.raises(ValidationError) as info:
        TaskProgress(**(base | kwargs))
    assert info.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"confidence": 1.01}, "confidence"),
        ({"type": "Pattern"}, "type"),
        ({"type": "a.b"}, "type"),
        ({"content": ""}, "content"),
        ({"content": "x" * 10_001}, "content"),
    ],
)
def test_discovery_shared_constraints(kwargs: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"agent_id": "a", "type": "pattern", "content": "c", "confidence": 1}
    DiscoveryShared(**base)
    with pytest.raises(ValidationError) as info:
        DiscoveryShared(**(base | kwargs))
    assert info.value.errors()[0]["loc"] == (field,)


def test_error_event_category_is_closed() -> None:
    with pytest.raises(ValidationError) as info:
        AgentErrorRaised(agent_id="a", error_type="X", category="oops")
    assert info.value.errors()[0]["loc"] == ("category",)


# ---- API bodies ----


@pytest.mark.parametrize(
    ("cls", "valid"),
    [
        (TaskCreate, {"title": "t"}),
        (ProjectCreate, {"name": "p", "requirements": ["investigate the logs"]}),
        (DiscoveryCreate, {"type": "pattern", "content": "c", "confidence": 0.5}),
        (AgentSpawn, {"template": "log_analysis"}),
        (ApiKeyCreate, {"name": "ci"}),
    ],
)
def test_api_bodies_refuse_unknown_fields(cls: type, valid: dict[str, Any]) -> None:
    cls.model_validate(valid)
    with pytest.raises(ValidationError) as info:
        cls.model_validate(valid | {"priorty": 3})
    error = info.value.errors()[0]
    assert error["loc"] == ("priorty",)
    assert error["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("cls", "body", "field"),
    [
        (TaskCreate, {"title": "t", "priority": 10}, ("priority",)),
        (TaskCreate, {"title": "t", "priority": -1}, ("priority",)),
        (TaskCreate, {"title": "t", "max_attempts": 0}, ("max_attempts",)),
        (TaskCreate, {"title": "t", "max_attempts": 101}, ("max_attempts",)),
        (TaskCreate, {"title": ""}, ("title",)),
        (TaskCreate, {"title": "x" * 501}, ("title",)),
        (TaskCreate, {"title": "t", "idempotency_key": ""}, ("idempotency_key",)),
        (
            TaskCreate,
            {"title": "t", "required_capabilities": ["ok", " "]},
            ("required_capabilities", 1),
        ),
        (TaskCreate, {"title": "t", "dependencies": ["nope"]}, ("dependencies", 0)),
        (ProjectCreate, {"name": ""}, ("name",)),
        (ProjectCreate, {"name": "x" * 201}, ("name",)),
        (DiscoveryCreate, {"type": "pattern", "content": "c", "confidence": 1.5}, ("confidence",)),
        (DiscoveryCreate, {"type": "pattern", "content": "c", "confidence": -0.1}, ("confidence",)),
        (DiscoveryCreate, {"type": "9x", "content": "c", "confidence": 0.5}, ("type",)),
        (
            DiscoveryCreate,
            {"type": "pattern", "content": "c", "confidence": 0.5, "agent_id": "a.b"},
            ("agent_id",),
        ),
        (AgentSpawn, {"template": "Log-Analysis"}, ("template",)),
        (AgentSpawn, {"template": "log_analysis", "agent_id": "a-1"}, ("agent_id",)),
        (ApiKeyCreate, {"name": "k", "scopes": []}, ("scopes",)),
        (ApiKeyCreate, {"name": "k", "scopes": ["root"]}, ("scopes", 0)),
        (ApiKeyCreate, {"name": "k", "rate_per_s": 0}, ("rate_per_s",)),
        (ApiKeyCreate, {"name": "k", "burst": 0}, ("burst",)),
    ],
)
def test_api_bodies_refuse_out_of_range_values(
    cls: type, body: dict[str, Any], field: tuple[Any, ...]
) -> None:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(body)
    assert info.value.errors()[0]["loc"] == field


def test_task_create_defaults_and_conversion_to_a_task() -> None:
    body = TaskCreate.model_validate_json(
        json.dumps(
            {
                "title": "analyse",
                "required_capabilities": ["log_analysis"],
                "parameters": {"path": "auth.log"},
                "dependencies": [str(TASK_ID)],
                "deadline": "2025-01-01T12:00:00+02:00",
            }
        )
    )
    assert (body.priority, body.max_attempts, body.idempotency_key) == (5, 3, None)
    assert body.deadline == datetime(2025, 1, 1, 10, tzinfo=UTC)
    task = Task(**body.model_dump())
    assert task.status == TaskStatus("pending")
    assert task.attempt == 0
    assert task.dependencies == [TASK_ID]
    assert task.required_capabilities == ["log_analysis"]


def test_api_key_create_defaults_to_read() -> None:
    assert ApiKeyCreate(name="k").scopes == [Scope.READ]


def test_page_is_generic() -> None:
    page = Page[Task].model_validate({"items": [{"title": "a"}], "next_cursor": "c1"})
    assert isinstance(page.items[0], Task)
    assert page.next_cursor == "c1"
    assert Page[int](items=[1, 2]).model_dump() == {"items": [1, 2], "next_cursor": None}
    with pytest.raises(ValidationError) as info:
        Page[int].model_validate({"items": ["x"]})
    assert info.value.errors()[0]["loc"] == ("items", 0)


# ---- records ----


def test_task_from_row_decodes_json_text() -> None:
    row = {
        "id": TASK_ID,
        "project_id": None,
        "parent_id": None,
        "title": "t",
        "description": "",
        "required_capabilities": ["log_analysis"],
        "parameters": '{"path": "auth.log", "n": 3}',
        "priority": 7,
        "dependencies": [],
        "deadline": None,
        "max_attempts": 3,
        "idempotency_key": "k1",
        "status": "completed",
        "attempt": 2,
        "assigned_to": "a1",
        "result": '{"findings": [1, 2]}',
        "error": "null",
        "attempt_errors": '[{"reason": "timeout", "category": "transient"}]',
        "not_before": None,
        "created_at": T0,
        "updated_at": T0,
        "started_at": T0,
        "finished_at": T0,
        "queue_position": 4,  # a joined column: ignored
    }
    task = Task.from_row(row)
    assert task.parameters == {"path": "auth.log", "n": 3}
    assert task.result == {"findings": [1, 2]}
    assert task.error is None
    assert task.attempt_errors == [{"reason": "timeout", "category": "transient"}]
    assert task.status == TaskStatus("completed")
    assert task.created_at == T0


def test_from_row_accepts_already_decoded_json() -> None:
    row = {"id": TASK_ID, "title": "t", "parameters": {"a": [1]}, "result": [1, 2]}
    task = Task.from_row(row)
    assert task.parameters == {"a": [1]}
    assert task.result == [1, 2]


def test_from_row_keeps_a_decoded_json_string_scalar() -> None:
    # With a codec set, a jsonb string scalar arrives as the plain string.
    assert Task.from_row({"title": "t", "result": "all good"}).result == "all good"
    # Without a codec it arrives as JSON text.
    assert Task.from_row({"title": "t", "result": '"all good"'}).result == "all good"


def test_from_row_refuses_bad_json_in_a_dict_column() -> None:
    with pytest.raises(ValidationError) as info:
        Task.from_row({"title": "t", "parameters": "not json"})
    assert info.value.errors()[0]["loc"] == ("parameters",)


def test_from_row_other_tables() -> None:
    project = Project.from_row(
        {"id": PROJECT_ID, "name": "p", "requirements": '["parse logs", {"step": 2}]'}
    )
    assert project.requirements == ["parse logs", {"step": 2}]
    assert project.status == ProjectStatus.PENDING

    agent = AgentRecord.from_row(
        {
            "id": AGENT,
            "name": "log analyzer 1",
            "state": "idle",
            "state_detail": "{}",
            "saved_state": '{"seen": 12}',
            "restart_count": 1,
        }
    )
    assert agent.saved_state == {"seen": 12}
    assert agent.state == AgentState("idle")

    event = SupervisorEvent.from_row(
        {"id": 7, "supervisor_id": "sup:root", "event": "escalated", "detail": '{"n": 5}'}
    )
    assert event.event == SupervisorEventKind.ESCALATED
    assert event.detail == {"n": 5}

    entry = OutboxEntry.from_row(
        {
            "seq": 1,
            "id": DISCOVERY_ID,
            "subject": "tasks.x.result",
            "payload": '{"a": 1}',
            "headers": '{"traceparent": "00-abc"}',
        }
    )
    assert entry.payload == {"a": 1}
    assert entry.headers == {"traceparent": "00-abc"}

    message = Message.from_row(
        {"sender": "a", "recipient": "b", "kind": "request", "payload": '{"q": 1}'}
    )
    assert message.kind == MessageKind.REQUEST
    assert message.payload == {"q": 1}

    tool = ToolExecution.from_row({"tool": "grep", "input": '{"p": "x"}', "output": "[1]"})
    assert (tool.input, tool.output, tool.status) == ({"p": "x"}, [1], ToolStatus.RUNNING)

    discovery = Discovery.from_row(
        {"agent_id": "a", "type": "pattern", "content": "c", "confidence": 0.5, "data": "{}"}
    )
    assert discovery.data == {}


def test_task_attempt_cannot_exceed_max_attempts() -> None:
    Task(title="t", attempt=3, max_attempts=3)
    with pytest.raises(ValidationError, match="max_attempts"):
        Task(title="t", attempt=4, max_attempts=3)


def test_task_error_text_becomes_a_reason() -> None:
    assert Task(title="t", error="boom").error == {"reason": "boom"}


@pytest.mark.parametrize(
    ("cls", "data", "field"),
    [
        (Task, {"title": "t", "priority": 10}, "priority"),
        (Task, {"title": "t", "status": "done"}, "status"),
        (AgentRecord, {"id": "a.b", "name": "n"}, "id"),
        (AgentRecord, {"id": "a", "name": "n", "state": "sleeping"}, "state"),
        (AgentRecord, {"id": "a", "name": "n", "restart_count": -1}, "restart_count"),
        (AgentTemplate, {"name": "LogAnalysis", "class_path": "x.Y"}, "name"),
        (AgentTemplate, {"name": "_x", "class_path": "x.Y"}, "name"),
        (AgentEvent, {"agent_id": "a", "to_state": "gone"}, "to_state"),
        (SupervisorEvent, {"supervisor_id": "s", "event": "rebooted"}, "event"),
        (Discovery, {"agent_id": "a", "type": "p", "content": "c", "confidence": 2}, "confidence"),
        (Message, {"sender": "a", "recipient": "b", "kind": "shout"}, "kind"),
        (ToolExecution, {"tool": "t", "status": "done"}, "status"),
        (Project, {"name": "p", "status": "archived"}, "status"),
        (ApiKey, {"name": "k", "prefix": "p", "key_hash": "h", "scopes": []}, "scopes"),
    ],
)
def test_records_mirror_the_schema_checks(cls: type, data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(data)
    assert info.value.errors()[0]["loc"][0] == field


def test_api_key_never_dumps_its_hash() -> None:
    key = ApiKey(name="ci", prefix="rv_abc", key_hash="sha256$secret-hash", scopes=["write"])
    assert key.key_hash == "sha256$secret-hash"
    assert "key_hash" not in key.model_dump()
    assert "key_hash" not in key.model_dump(mode="json")
    assert "secret-hash" not in key.model_dump_json()
    assert "secret-hash" not in repr(key)
    assert key.model_dump()["scopes"] == [Scope.WRITE]
    assert not key.revoked
    assert ApiKey.from_row({**key.model_dump(), "key_hash": "h2", "revoked_at": T0}).revoked


def test_outbox_entry_for_event_round_trip() -> None:
    event = DiscoveryShared(agent_id="a1", type="pattern", content="c", confidence=0.4)
    entry = OutboxEntry.for_event(event, {"traceparent": "00-abc-def-01"})
    assert entry.id == event.event_id
    assert entry.subject == "discoveries.a1.pattern"
    assert entry.payload["schema"] == 1
    assert entry.headers == {"traceparent": "00-abc-def-01"}
    assert entry.to_event() == event
    assert DiscoveryShared.from_json(entry.to_json()) == event
    # as stored and read back by asyncpg without a codec
    row = {**entry.model_dump(mode="json"), "payload": json.dumps(entry.payload)}
    assert OutboxEntry.from_row(row).to_event() == event


def test_enums_match_the_schema() -> None:
    assert [s.value for s in AgentState] == [
        "created",
        "starting",
        "running",
        "busy",
        "idle",
        "stopping",
        "stopped",
        "error",
        "failed",
    ]
    assert {s.value for s in TaskStatus} == {
        "pending",
        "queued",
        "assigned",
        "running",
        "completed",
        "failed",
        "cancelled",
        "timed_out",
    }
    assert [s.value for s in SupervisorEventKind] == [
        "child_started",
        "child_exited",
        "restart_scheduled",
        "restarted",
        "circuit_opened",
        "circuit_half_open",
        "circuit_closed",
        "escalated",
        "supervisor_stopped",
    ]
    assert [s.value for s in ProjectStatus] == [
        "pending",
        "planning",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert [s.value for s in Scope] == ["read", "write", "admin"]
    assert [s.value for s in MessageKind] == ["request", "response", "notification"]
    assert [s.value for s in ToolStatus] == ["running", "succeeded", "failed", "rejected"]


def test_exports() -> None:
    for name in models.__all__:
        assert hasattr(models, name), name
    assert "Record" in models.__all__
    assert len(models.__all__) == len(set(models.__all__))


@pytest.mark.parametrize(
    "body",
    [
        {"title": "a\x00b"},
        {"title": "t", "parameters": {"deep": ["ok", {"x": "\x00"}]}},
        {"title": "t", "parameters": {"k\x00": 1}},
    ],
)
def test_bodies_refuse_nul_characters_naming_where(body: dict) -> None:
    with pytest.raises(ValidationError, match="NUL") as refused:
        TaskCreate.model_validate(body)
    assert "title" in str(refused.value) or "parameters" in str(refused.value)
