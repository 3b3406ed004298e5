"""`ProjectDriver`: a project's lifecycle (seed Berrys), driven from PostgreSQL.

```
pending --plan task submitted--> planning --plan valid, its tasks submitted--> running
running --every task ended--> completed (results compiled) | failed (a task named)
any --cancel--> cancelled (its unfinished tasks are cancelled)
```

Each step reads the project and its tasks from PostgreSQL and writes with a conditional
status change (`only_from`), and every task it makes has an id and idempotency key made
from the project's id and the step's name. So the driver holds nothing of its own: an
Aggregator that died at any point is replaced by one that does the same step again and
finds it done, and a project's `projects.{id}.completed` is queued once, with the change
that completes it. Agents a plan asks for are spawned into their pool when it starts
running and stopped when it ends (also after a restart in between: `released` is kept).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any
from uuid import UUID, uuid5

import asyncpg
import ray
from pydantic import ValidationError

from actors.tasks import TaskClient
from runtime.models.enums import ProjectStatus
from runtime.models.events import ProjectCompleted
from runtime.models.plans import FAN_OUT_CAPABILITY, Plan, PlanStep
from runtime.models.records import Project
from runtime.store import projects as project_store

__all__ = ["ProjectDriver", "compile_results", "plan_task_id", "step_task_id"]

_log = logging.getLogger("rayvisor.projects")

P = ProjectStatus
_ACTIVE_TASK = ("pending", "queued", "assigned", "running")
PLANNING = "planning"


def plan_task_id(project_id: UUID) -> UUID:
    return uuid5(project_id, "plan")


def step_task_id(project_id: UUID, step: str) -> UUID:
    return uuid5(project_id, f"step:{step}")


class ProjectDriver:
    """Moves each active project one step on per `advance_all` (see the module doc)."""

    def __init__(self, pool: asyncpg.Pool, tasks: TaskClient, namespace: str) -> None:
        self.pool = pool
        self.tasks = tasks
        self.namespace = namespace

    async def advance_all(self) -> None:
        for project in await project_store.active(self.pool):
            try:
                await self.advance(project)
            except Exception:
                _log.exception("project %s: a step failed; it is tried again", project.id)
        await self._clean_up_ended()

    async def advance(self, project: Project) -> None:
        if project.status is P.PENDING:
            await self._plan(project)
        elif project.status is P.PLANNING:
            await self._start(project)
        elif project.status is P.RUNNING:
            await self._finish_if_done(project)

    # ---- pending -> planning -------------------------------------------------------------

    async def _plan(self, project: Project) -> None:
        await self.tasks.submit(
            id=str(plan_task_id(project.id)),
            title=f"Plan: {project.name}"[:500],
            required_capabilities=[PLANNING],
            parameters={
                "name": project.name,
                "description": project.description,
                "requirements": project.requirements,
                "inputs": project.inputs,
            },
            project_id=str(project.id),
            idempotency_key=f"project:{project.id}:plan",
        )
        await project_store.set_status(self.pool, project.id, P.PLANNING, only_from=[P.PENDING])

    # ---- planning -> running ---------------------------------------------------------------

    async def _start(self, project: Project) -> None:
        row = await self.pool.fetchrow(
            "SELECT status, result, error FROM tasks WHERE id = $1", plan_task_id(project.id)
        )
        if row is None:  # the planning task's submit was lost: make it again
            await self._plan(project)
            return
        if row["status"] in _ACTIVE_TASK:
            return
        if row["status"] != "completed":
            reason = _reason(row["error"]) or row["status"]
            await self._fail(project, f"planning failed: {reason}", only_from=P.PLANNING)
            return
        try:
            plan = Plan.model_validate(row["result"])
            await self._check_capabilities(plan)
        except (ValidationError, ValueError) as exc:
            await self._fail(project, f"plan refused: {_first_error(exc)}", only_from=P.PLANNING)
            return
        task_ids = {s.name: str(step_task_id(project.id, s.name)) for s in plan.steps}
        for layer in plan.layers():  # a dependency is stored before its dependents
            await self.tasks.submit_many([_step_task(project, s, task_ids) for s in layer])
        spawned = await self._spawn_agents(project, plan)
        record = {"plan": plan.model_dump(mode="json"), "task_ids": task_ids,
                  "spawned": spawned, "released": not spawned}  # fmt: skip
        await project_store.set_status(
            self.pool, project.id, P.RUNNING, only_from=[P.PLANNING], plan=record
        )

    async def _check_capabilities(self, plan: Plan) -> None:
        offered = {FAN_OUT_CAPABILITY}
        for row in await self.pool.fetch("SELECT capabilities FROM agent_templates"):
            offered.update(row["capabilities"])
        missing = sorted(plan.capabilities() - offered)
        if missing:
            raise ValueError(f"no agent template offers {missing} (offered: {sorted(offered)})")

    # ---- running -> completed | failed --------------------------------------------------

    async def _finish_if_done(self, project: Project) -> None:
        record = project.plan or {}
        task_ids: dict[str, str] = record.get("task_ids") or {}
        rows = await self.pool.fetch(
            "SELECT id, status, result, error FROM tasks WHERE id = ANY($1::uuid[])",
            [UUID(i) for i in task_ids.values()],
        )
        by_id = {str(r["id"]): r for r in rows}
        if len(by_id) < len(task_ids) or any(r["status"] in _ACTIVE_TASK for r in rows):
            return
        steps = {name: by_id[task_id] for name, task_id in task_ids.items()}
        result = compile_results(Plan.model_validate(record["plan"]), steps)
        failed = [n for n, r in steps.items() if r["status"] != "completed"]
        if failed:
            first = steps[failed[0]]
            reason = f"step {failed[0]} ({first['id']}) ended {first['status']}"
            detail = _reason(first["error"])
            await self._fail(project, reason + (f": {detail}" if detail else ""),
                             only_from=P.RUNNING, result=result)  # fmt: skip
        else:
            event = ProjectCompleted(project_id=project.id, status=P.COMPLETED, result=result)
            await project_store.set_status(
                self.pool, project.id, P.COMPLETED, result, (event,), only_from=[P.RUNNING]
            )
        await self._release(project.id)

    async def _fail(
        self, project: Project, reason: str, *, only_from: P, result: Any = None
    ) -> None:
        event = ProjectCompleted(project_id=project.id, status=P.FAILED, result=result)
        await project_store.set_status(
            self.pool, project.id, P.FAILED, result, (event,), only_from=[only_from],
            error=reason[:2000],
        )  # fmt: skip

    # ---- cancelled ---------------------------------------------------------------------------

    async def cancel(self, project_id: UUID) -> Project | None:
        """Cancel a project that has not ended, and its unfinished tasks; None if none."""
        event = ProjectCompleted(project_id=project_id, status=P.CANCELLED)
        project = await project_store.set_status(
            self.pool, project_id, P.CANCELLED, None, (event,),
            only_from=[P.PENDING, P.PLANNING, P.RUNNING], error="cancelled on request",
        )  # fmt: skip
        if project is not None:
            await self._cancel_tasks(project_id)
            await self._release(project_id)
        return project

    async def _cancel_tasks(self, project_id: UUID) -> None:
        rows = await self.pool.fetch(
            "SELECT id FROM tasks WHERE project_id = $1 AND status = ANY($2::text[])",
            project_id,
            list(_ACTIVE_TASK),
        )
        for row in rows:
            with contextlib.suppress(Exception):
                await self.tasks.cancel(row["id"])

    async def _clean_up_ended(self) -> None:
        """What a driver that died mid-way left: tasks of cancelled projects still going,
        agents of ended projects not yet released."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT p.id FROM projects p JOIN tasks t ON t.project_id = p.id"
            " WHERE p.status = 'cancelled' AND t.status = ANY($1::text[])",
            list(_ACTIVE_TASK),
        )
        for row in rows:
            await self._cancel_tasks(row["id"])
        rows = await self.pool.fetch(
            "SELECT id FROM projects WHERE status IN ('completed', 'failed', 'cancelled')"
            " AND plan IS NOT NULL AND (plan->>'released')::boolean IS false"
        )
        for row in rows:
            await self._release(row["id"])

    # ---- agents for a project's life ---------------------------------------------------------

    async def _spawn_agents(self, project: Project, plan: Plan) -> list[list[str]]:
        spawned: list[list[str]] = []
        for template, count in plan.agents.items():
            try:
                pool = ray.get_actor(f"sup:pool:{template}", namespace=self.namespace)
            except ValueError:
                _log.warning("project %s: no pool %s to spawn agents in", project.id, template)
                continue
            for _ in range(count):
                with contextlib.suppress(Exception):
                    spawned.append([template, await pool.start_child.remote()])
        return spawned

    async def _release(self, project_id: UUID) -> None:
        project = await project_store.get(self.pool, project_id)
        record = (project.plan if project else None) or {}
        if record.get("released", True):
            return
        for template, agent_id in record.get("spawned", []):
            with contextlib.suppress(Exception):
                pool = ray.get_actor(f"sup:pool:{template}", namespace=self.namespace)
                await pool.terminate_child.remote(agent_id)
        await self.pool.execute(
            "UPDATE projects SET plan = jsonb_set(plan, '{released}', 'true') WHERE id = $1",
            project_id,
        )


def compile_results(plan: Plan, steps: dict[str, Any]) -> dict[str, Any]:
    """A project's result: each step's task, status and result, and the summary step's
    result as the project's own summary."""
    summary_step = plan.summary_step()
    summary = steps[summary_step]
    return {
        "summary": summary["result"] if summary["status"] == "completed" else None,
        "summary_step": summary_step,
        "steps": {
            name: {
                "task_id": str(row["id"]),
                "status": row["status"],
                "result": row["result"],
                "error": row["error"],
            }
            for name, row in steps.items()
        },
    }


def _step_task(project: Project, step: PlanStep, task_ids: dict[str, str]) -> dict[str, Any]:
    task: dict[str, Any] = {
        "id": task_ids[step.name],
        "title": step.title,
        "parameters": step.parameters,
        "dependencies": [task_ids[a] for a in step.after],
        "priority": step.priority,
        "max_attempts": step.max_attempts,
        "project_id": str(project.id),
        "idempotency_key": f"project:{project.id}:step:{step.name}",
    }
    if step.fan_out is not None:
        task["fan_out"] = step.fan_out.model_dump(mode="json")
    else:
        task["required_capabilities"] = [step.capability]
    return task


def _reason(error: Any) -> str:
    return str(error.get("reason", "")) if isinstance(error, dict) else ""


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return str(exc)
