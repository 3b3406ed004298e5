"""Tasks: submit (idempotent with `Idempotency-Key`), submit a batch, read, list, cancel."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from runtime import telemetry
from runtime.errors import LogicalError
from runtime.models.api import Page, TaskBatch, TaskBatchResult, TaskCreate
from runtime.models.enums import Scope, TaskStatus
from runtime.models.records import Task, ToolExecution
from runtime.store import tasks as task_store
from runtime.store import tools as tool_store
from serve.auth import require
from serve.deps import Cursor, SystemDep, bad_input, decode_cursor, page_of
from serve.system import System

LLM_CAPABILITY = "llm"

_NO_MODEL = (
    f"no model is configured (models: in rayvisor.yaml), so no agent offers {LLM_CAPABILITY!r}"
)

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
    stored, created = await submit(system, body, idempotency_key)
    # the task manager's view is a Task dumped as JSON: sent as is, not validated twice more
    return JSONResponse(stored, status_code=201 if created else 200)


async def submit(
    system: System, body: TaskCreate, idempotency_key: str | None = None
) -> tuple[dict[str, Any], bool]:
    """Submit `body` (the route's and the MCP tool's work): the task as the task manager
    holds it, and whether it is new (False: the task this idempotency key already made)."""
    if LLM_CAPABILITY in body.required_capabilities and not system.settings.models:
        raise bad_input("body.required_capabilities", _NO_MODEL)
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
    return stored, stored["id"] == str(new_id)


async def _same_body_as_first(system: System, item: dict[str, Any]) -> None:
    """A key sent again must come with the body it first came with (the canonical JSON of
    the validated body, the key itself aside): else a 422 saying so, and nothing written."""
    digest = _body_digest(item)
    if await task_store.claim_request_body(system.pool, item["idempotency_key"], digest) != digest:
        raise bad_input("header.Idempotency-Key", _KEY_REUSED)


_KEY_REUSED = (
    "this key was already used with a different body; send the same body to get its task,"
    " or use a new key"
)


def _body_digest(item: dict[str, Any]) -> str:
    """The hash a key's body is known by: the canonical JSON of the validated body, the
    key itself aside (so a default spelt out or keys reordered are the same body)."""
    canonical = json.dumps(
        {k: v for k, v in item.items() if k != "idempotency_key"},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post(
    "/batch",
    status_code=207,
    response_model=TaskBatchResult,
    summary="Submit a batch of tasks",
    response_description="One result per item, in the order sent",
    dependencies=[require(Scope.WRITE)],
)
async def create_tasks(body: TaskBatch, system: SystemDep) -> JSONResponse:
    """Submit up to `http.max_batch_tasks` tasks (1,000 by default) at once: each item is
    validated and answered on its own, as its own `POST /api/v1/tasks` would be (201
    stored, 200 the task its `idempotency_key` made with the same body, 422 naming the
    field), in the order sent, and the items are stored together (one call per shard).
    A 503 may come after some items were stored: send the batch again with keys."""
    limit = system.settings.http.max_batch_tasks
    if len(body.tasks) > limit:
        raise bad_input(
            "body.tasks",
            f"at most {limit} tasks a batch (http.max_batch_tasks); this one has"
            f" {len(body.tasks)}: send them in several batches",
        )
    return JSONResponse(await submit_batch(system, body.tasks), status_code=207)


async def submit_batch(system: System, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch route's work: a `TaskBatchResult` as JSON. Items are checked here (their
    fields, the keys' bodies in one statement) and what passes goes to the task managers
    in one `submit_batch`, which answers each item on its own too."""
    results: list[dict[str, Any] | None] = [None] * len(tasks)

    def refuse(index: int, field: str, reason: str) -> None:
        results[index] = {"index": index, "status": 422, "task": None,
                          "errors": [{"field": field, "reason": reason}]}  # fmt: skip

    valid: list[tuple[int, dict[str, Any]]] = []
    for index, raw in enumerate(tasks):
        try:
            create = TaskCreate.model_validate(raw)
        except ValidationError as exc:
            errors = [{"field": ".".join(str(p) for p in e["loc"]) or "task", "reason": e["msg"]}
                      for e in exc.errors()]  # fmt: skip
            results[index] = {"index": index, "status": 422, "task": None, "errors": errors}
            continue
        if LLM_CAPABILITY in create.required_capabilities and not system.settings.models:
            refuse(index, "required_capabilities", _NO_MODEL)
            continue
        valid.append((index, create.model_dump(mode="json")))
    digests = {i: _body_digest(item) for i, item in valid if item.get("idempotency_key")}
    claims: dict[str, str] = {}
    for index, item in valid:  # within the batch too, a key's first body is its body
        if index in digests:
            claims.setdefault(item["idempotency_key"], digests[index])
    recorded = await task_store.claim_request_bodies(system.pool, claims)
    stored_here = []
    for index, item in valid:
        if index in digests and recorded[item["idempotency_key"]] != digests[index]:
            refuse(index, "idempotency_key", _KEY_REUSED)
        else:
            stored_here.append((index, item))
    trace = {"trace_context": carrier} if (carrier := telemetry.carrier()) else {}
    submitted = await system.tasks.submit_batch([{**item, **trace} for _, item in stored_here])
    for (index, _), one in zip(stored_here, submitted, strict=True):
        if one.error is not None:
            refuse(index, *_field_of(one.error))
        else:
            results[index] = {"index": index, "status": 201 if one.created else 200,
                              "task": one.task, "errors": []}  # fmt: skip
    statuses = [r["status"] for r in results if r is not None]
    return {
        "created": statuses.count(201),
        "existing": statuses.count(200),
        "refused": statuses.count(422),
        "results": results,
    }


def _field_of(error: LogicalError) -> tuple[str, str]:
    """The field a task manager's refusal names (`dependencies: unknown task ids ...`)."""
    field, sep, reason = error.reason.partition(": ")
    if sep and field in TaskCreate.model_fields:
        return field, reason
    return "task", error.reason


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
