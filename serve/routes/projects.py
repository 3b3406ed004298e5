"""Projects (seed Berrys): requirements in; a plan, its tasks, and compiled results out.

The route only stores the project: the Aggregator plans and drives it from PostgreSQL
(`actors.projects`), so a project survives the replica, the Aggregator and the task
manager. Creating one nudges the Aggregator so planning starts at once, not at its next
round.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query

from actors.projects import ProjectDriver, plan_task_id
from actors.registry import AGGREGATOR_NAME
from runtime.errors import NotFound
from runtime.models.api import Page, ProjectCreate, ProjectTask, ProjectView
from runtime.models.enums import ProjectStatus, Scope
from runtime.models.records import Project
from runtime.store import projects as project_store
from serve.auth import require
from serve.deps import Cursor, SystemDep, decode_cursor, page_of
from serve.system import System

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])

_ENDED = {"completed", "failed", "cancelled", "timed_out"}


@router.post("", status_code=201, response_model=ProjectView, dependencies=[require(Scope.WRITE)])
async def create_project(body: ProjectCreate, system: SystemDep) -> ProjectView:
    """Create a project; the `planning` capability turns its requirements into tasks."""
    return await create(system, body)


async def create(system: System, body: ProjectCreate) -> ProjectView:
    """What the route and the MCP tool `create_project` do: store it, nudge the planner."""
    project = await project_store.create(system.pool, Project(**body.model_dump()))
    await _nudge(system)
    return await _view(system, project)


@router.get("", response_model=Page[Project], dependencies=[require(Scope.READ)])
async def list_projects(
    system: SystemDep,
    status: ProjectStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> Page[Project]:
    """Projects oldest first; follow `next_cursor` for the next page."""
    found = await project_store.list_projects(
        system.pool, status=status, limit=limit, after=decode_cursor(cursor)
    )
    return page_of(found, limit)


@router.get("/{project_id}", response_model=ProjectView, dependencies=[require(Scope.READ)])
async def get_project(project_id: UUID, system: SystemDep) -> ProjectView:
    """The project, its progress, its task graph (each task's status) and its results."""
    return await view(system, project_id)


async def view(system: System, project_id: UUID) -> ProjectView:
    """A project as `GET /api/v1/projects/{id}` shows it; NotFound if there is none."""
    return await _view(system, await _project(system, project_id))


@router.post(
    "/{project_id}/cancel", response_model=ProjectView, dependencies=[require(Scope.WRITE)]
)
async def cancel_project(project_id: UUID, system: SystemDep) -> ProjectView:
    """Cancel a project and its unfinished tasks; one that has ended is returned as it is."""
    driver = ProjectDriver(system.pool, system.tasks, system.settings.namespace)
    cancelled = await driver.cancel(project_id)
    return await _view(system, cancelled or await _project(system, project_id))


async def _project(system: System, project_id: UUID) -> Project:
    project = await project_store.get(system.pool, project_id)
    if project is None:
        raise NotFound(f"no project {project_id}")
    return project


async def _view(system: System, project: Project) -> ProjectView:
    rows = await system.pool.fetch(
        "SELECT id, title, status, parent_id, dependencies, required_capabilities, attempt,"
        " assigned_to, error FROM tasks WHERE project_id = $1 ORDER BY created_at, id",
        project.id,
    )
    steps = {UUID(i): name for name, i in ((project.plan or {}).get("task_ids") or {}).items()}
    steps[plan_task_id(project.id)] = "plan"
    tasks = [ProjectTask(**dict(row), step=steps.get(row["id"])) for row in rows]
    ended = sum(t.status in _ENDED for t in tasks)
    progress = 1.0 if project.status in _ENDED else (ended / len(tasks) if tasks else 0.0)
    fields: dict[str, Any] = project.model_dump(exclude={"plan"})
    return ProjectView(**fields, progress=progress, tasks=tasks)


async def _nudge(system: System) -> None:
    """Have the Aggregator look at projects now (it also does every half second)."""
    with contextlib.suppress(Exception):
        handle = await asyncio.wait_for(system.named(AGGREGATOR_NAME).handle(), 0.5)
        handle.kick.remote()
