"""`runtime.logs`: a record says which trace, span and task it belongs to, as JSON or text."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider

from runtime import logs

LOGGER = "rayvisor.agent.echo-1"


def _record(message: str = "chunk %d done", **extra: object) -> logging.LogRecord:
    """A record as `logger.info(message, 3, extra=extra)` inside any `except` makes it."""
    exc_info = sys.exc_info() if sys.exc_info()[0] is not None else None
    args = (3,) if "%d" in message else ()
    return logging.getLogger(LOGGER).makeRecord(
        LOGGER, logging.INFO, __file__, 1, message, args, exc_info, extra=extra or None
    )


def _json(record: logging.LogRecord) -> dict[str, object]:
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_a_record_outside_any_span_or_binding_has_the_plain_fields() -> None:
    fields = _json(_record())
    assert fields["message"] == "chunk 3 done"
    assert fields["level"] == "INFO" and fields["logger"] == LOGGER
    assert isinstance(fields["pid"], int)
    assert str(fields["ts"]).endswith("Z") and "T" in str(fields["ts"])
    assert not {"trace_id", "span_id", "task_id", "agent_id", "actor", "exc"} & set(fields)


def test_a_record_inside_a_span_has_its_trace_and_span_ids() -> None:
    tracer = TracerProvider().get_tracer("test")  # a provider of its own, not the global one
    with tracer.start_as_current_span("agent.handle") as span:
        fields = _json(_record())
    context = span.get_span_context()
    assert fields["trace_id"] == f"{context.trace_id:032x}"
    assert fields["span_id"] == f"{context.span_id:016x}"
    assert len(str(fields["trace_id"])) == 32 and len(str(fields["span_id"])) == 16


async def test_bound_ids_reach_records_of_the_block_and_of_tasks_it_creates() -> None:
    async def in_a_task() -> dict[str, object]:
        await asyncio.sleep(0)
        return _json(_record())

    with logs.bound(task_id="t-1", agent_id="echo-1", attempt=None):
        inside = _json(_record())
        child = asyncio.get_running_loop().create_task(in_a_task())
        with logs.bound(task_id="t-2"):
            nested = _json(_record())
        assert logs.bound_ids() == {"task_id": "t-1", "agent_id": "echo-1"}
    from_task = await child
    after = _json(_record())
    assert inside["task_id"] == "t-1" and inside["agent_id"] == "echo-1"
    assert "attempt" not in inside  # None is left out
    assert nested["task_id"] == "t-2" and nested["agent_id"] == "echo-1"
    assert from_task["task_id"] == "t-1"
    assert "task_id" not in after and logs.bound_ids() == {}


def test_exceptions_and_extra_fields_are_kept_and_core_fields_not_overridden() -> None:
    try:
        raise ValueError("bad chunk")
    except ValueError:
        record = _record("failed", chunk=4)
    record.__dict__["_ray_timestamp_ns"] = 1  # Ray's private attribute is left out
    with logs.bound(message="not this"):
        fields = _json(record)
    assert fields["message"] == "failed"
    assert fields["chunk"] == 4
    assert "ValueError: bad chunk" in str(fields["exc"]) and "Traceback" in str(fields["exc"])
    assert "_ray_timestamp_ns" not in fields


def test_text_lines_are_for_people() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("s"), logs.bound(task_id="t-9"):
        line = logs.TextFormatter().format(_record())
    assert "{" not in line
    first = line.splitlines()[0]
    assert " INFO " in first and f"{LOGGER}: chunk 3 done" in first
    assert "task_id=t-9" in first and "trace_id=" in first
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        lines = logs.TextFormatter().format(_record("failed")).splitlines()
    assert lines[0].endswith(f"{LOGGER}: failed")
    assert lines[-1] == "RuntimeError: boom"


def test_the_format_is_json_off_a_terminal_unless_set(monkeypatch) -> None:
    monkeypatch.delenv(logs.LOG_FORMAT_ENV, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert logs._resolve_format(None) == "json"  # a Ray worker's stderr is a file
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert logs._resolve_format(None) == "text"
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "JSON")
    assert logs._resolve_format(None) == "json"
    assert logs._resolve_format("text") == "text"  # the setting, over the variable
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="json or text"):
        logs._resolve_format(None)
