"""Tasks: submit (idempotent with `Idempotency-Key`), read, list, cancel."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from runtime import telemetry
from runtime.models.api import Page, TaskCreate
from runtime.models.enums import Scope, TaskStatus
from runtime.models.records import Task, ToolExecution
from runtime.store import tasks as task_store
from runtime.store import tools as tool_store
from serve.auth import require
from serve.deps import Cursor, SystemDep, bad_input, decode_cursor, page_of
from serve.system import System

LLM_CAPABILITY = "llm"

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])


@router.post(
    "",
    status_code=201,
    response_model=Task,
    dependencies=[require(Scope.WRITE)],
    responses={200: {"model": Task, "description": "The task this key already made"}},
)
async def create_task(
    body: TaskCreate,
    system: SystemDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> JSONResponse:
    """Submit a task. The same `Idempotency-Key` again with the same body returns the first
    task (200); with a different body it is refused (422)."""
    if LLM_CAPABILITY in body.required_capabilities and not system.settings.models:
        raise bad_input(
            "body.required_capabilities",
            f"no model is configured (models: in rayvisor.yaml), so no agent offers"
            f" {LLM_CAPABILITY!r}",
        )
    item = body.model_dump(mode="json")
    if idempotency_key is not None:
        item["idempotency_key"] = idempotency_key
    if item.get("idempotency_key"):
        await _same_body_as_first(system, item)
    trace_context = telemetry.carrier()
    if trace_context:  # the task's trace starts at this request
        item["trace_context"] = trace_context
    new_id = uuid4()
    stored = await system.submits.submit({**item, "id": str(new_id)})
    # the task manager's view is a Task dumped as JSON: sent as is, not validated twice more
    return JSONResponse(stored, status_code=201 if stored["id"] == str(new_id) else 200)


async def _same_body_as_first(system: System, item: dict[str, Any]) -> None:
    """A key sent again must come with the body it first came with (the canonical JSON of
    the validated body, the key itself aside): else a 422 saying so, and nothing written."""
    key = item["idempotency_key"]
    canonical = json.dumps(
        {k: v for k, v in item.items() if k != "idempotency_key"},
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    if await task_store.claim_request_body(system.pool, key, digest) != digest:
        raise bad_input(
            "header.Idempotency-Key",
            "this key was already used with a different body; send the same body to get"
            " its task, or use a new key",
        )


@router.get("", response_model=Page[Task], dependencies=[require(Scope.READ)])
async def list_tasks(
    system: SystemDep,
    status: TaskStatus | None = None,
    capability: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    project_id: UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
    newest_first: bool = False,
) -> Page[Task]:
    """Tasks oldest first (or newest first), filtered; follow `next_cursor` for the next
    page."""
    found = await task_store.list_tasks(
        system.pool,
        status=status,
        capability=capability,
        project_id=project_id,
        limit=limit,
        after=decode_cursor(cursor),
        newest_first=newest_first,
    )
    return page_of(found, limit)


@router.get("/{task_id}", response_model=Task, dependencies=[require(Scope.READ)])
async def get_task(task_id: UUID, system: SystemDep) -> Task:
    return Task.model_validate(await system.tasks.get(task_id))


@router.get(
    "/{task_id}/tool-executions",
    response_model=list[ToolExecution],
    dependencies=[require(Scope.READ)],
)
async def list_tool_executions(task_id: UUID, system: SystemDep) -> list[ToolExecution]:
    """The tool calls made for a task, in the order they started, refused ones included."""
    executions = await tool_store.list_for_task(system.pool, task_id)
    if not executions:
        await system.tasks.get(task_id)  # 404 for a task that does not exist
    return executions


@router.post("/{task_id}/cancel", response_model=Task, dependencies=[require(Scope.WRITE)])
async def cancel_task(task_id: UUID, system: SystemDep) -> Task:
    """Cancel a task that has not ended (its handler is cancelled in the agent); a task
    that has ended is returned as it is."""
    return Task.model_validate(await system.tasks.cancel(task_id))
