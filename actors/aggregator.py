"""`Aggregator` (`agg:0` under `sup:core`): fan-out of a task into chunks, and projects.

Fan-out (seed P2P). A task with `fan_out` needs the capability `fan_out`, which only the
Aggregator offers: the task manager leases it here like any task to any agent (the same
`run_many` / `adopt` / `cancel` calls, the same `Ledger` as an agent host), so its
attempts, fencing and adoption after a restart are the task manager's, not new code. The
Aggregator then runs three kinds of child task (`parent_id` = the parent) through the task
manager: one `chunking` task, one task per chunk, in parallel on whatever agents offer the
chunk capability, and one `reduce` task over the chunks' results; the parent's outcome is
the reduction. Every child has an id and an idempotency key made from the parent's id, so
an Aggregator that died part-way (the parent's lease lost, the parent leased again to its
successor) finds the children already made and their results, and only waits for the
rest: nothing runs twice for a restart, and the parent completes once (the task manager's
lease fencing). A chunk that failed after its attempts fails the parent, naming it.

Projects are driven by `actors.projects.ProjectDriver`, and questions shared as discoveries
become tasks through `actors.questions.QuestionRouter`, both from PostgreSQL, on this
actor's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from uuid import UUID, uuid5

import ray
from pydantic import ValidationError
from ray.exceptions import RayError

from actors.projects import ProjectDriver
from actors.questions import QuestionRouter
from actors.registry import AGGREGATOR_AGENT_ID
from actors.task_manager import task_manager_name
from actors.tasks import ActorUnreachable, TaskClient
from actors.work import INTERRUPTED, STARTED, Job, Ledger, notify, stream_reports
from runtime import telemetry
from runtime.config import load_settings
from runtime.models.plans import FAN_OUT_CAPABILITY, FanOut
from runtime.models.records import Task
from runtime.store import tasks as task_store
from runtime.store.pool import create_pool
from supervisors.child import CONTROL_GROUP, Supervised

__all__ = ["Aggregator", "ended", "fan_out_child"]

_log = logging.getLogger("rayvisor.aggregator")

CAPACITY = 10_000  # fan-outs at once: each is only waiting
POLL_S = 0.2  # how often a fan-out looks at its children's statuses
PROJECTS_EVERY_S = 0.5
_RETRY_S = 0.5
_REPORT_AFTER_S = 0.01
_ENDED = ("completed", "failed", "cancelled", "timed_out")
_TRANSIENT = (OSError, ConnectionError, ActorUnreachable, RayError, TimeoutError)


class Aggregator(Supervised):
    """Runs fan-out tasks leased to it, and drives projects; its state is PostgreSQL's."""

    def __init__(self) -> None:
        super().__init__()
        self._ledger = Ledger()
        self._background: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def on_start(self) -> None:
        settings = load_settings()
        if settings.database_dsn is None:
            raise RuntimeError("RAYVISOR_DATABASE_URL is not set in this worker")
        self._loop = asyncio.get_running_loop()
        self.pool = await create_pool(settings.database_dsn, min_size=1, max_size=4)
        self.tasks = TaskClient(self.namespace, settings.task_shards)
        self.projects = ProjectDriver(self.pool, self.tasks, self.namespace)
        self.questions = QuestionRouter(self.pool, self.tasks)
        self._shards = settings.task_shards
        self._spawn(self._register())
        self._spawn(self._drive_projects())

    async def on_stop(self) -> None:
        for handler in self._ledger.interrupt_all():
            handler.cancel()
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.pool.close()

    async def describe(self) -> dict[str, Any]:
        return {
            "agent_id": AGGREGATOR_AGENT_ID,
            "capabilities": [FAN_OUT_CAPABILITY],
            "prefetch": CAPACITY,
            "active_tasks": self._ledger.active(),
        }

    async def _register(self) -> None:
        """Tell each shard this incarnation is the one to lease fan-outs to (a shard that
        starts later finds it by name)."""
        me = ray.get_runtime_context().current_actor
        for shard in range(self._shards):
            with contextlib.suppress(ValueError, RayError):
                tm = ray.get_actor(task_manager_name(shard), namespace=self.namespace)
                await tm.register_agent.remote(
                    AGGREGATOR_AGENT_ID, [FAN_OUT_CAPABILITY], me, CAPACITY
                )

    # ---- the lease protocol, as an agent host speaks it ----------------------------------

    async def run_many(self, tasks: list[dict[str, Any]]) -> Any:
        """Run fan-out tasks; streams `[task_id, report]` chunks as an agent host does."""
        loop = asyncio.get_running_loop()
        jobs: list[Job] = []
        ready: list[Any] = []
        for envelope in tasks:
            task_id = str(envelope.get("id"))
            try:
                job, new = self._ledger.admit(task_id, int(envelope["lease"]), envelope, loop)
            except (ValueError, KeyError) as exc:
                ready.append([task_id, _failed("BadLease", str(exc))])
                continue
            jobs.append(job)
            if new:
                self._spawn(self._drive(job))
        async for chunk in stream_reports(jobs, ready, _REPORT_AFTER_S):
            yield chunk

    async def adopt(self, leases: dict[str, int]) -> Any:
        """A restarted task manager asks what this Aggregator holds of its leases."""
        answers, pending = self._ledger.holding({str(k): int(v) for k, v in leases.items()})
        async for chunk in stream_reports(pending, [[k, v] for k, v in answers.items()], 0.01):
            yield chunk

    @ray.method(concurrency_group=CONTROL_GROUP)
    async def cancel(self, task_id: str) -> bool:
        held, handler = self._ledger.cancel(str(task_id))
        if handler is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(handler.cancel)
        return held

    async def _drive(self, job: Job) -> None:
        attributes = {"task.id": job.task_id, "agent.id": AGGREGATOR_AGENT_ID,
                      "attempt": job.envelope.get("attempt")}  # fmt: skip
        # the children are submitted inside: their traces hang under the parent's
        with telemetry.span("agent.handle", job.envelope.get("trace"), attributes):
            await self._drive_traced(job)

    async def _drive_traced(self, job: Job) -> None:
        handler = asyncio.get_running_loop().create_task(self._fan_out(job))
        if self._ledger.started(job, handler):
            notify(job, STARTED)
        try:
            outcome = await handler
        except asyncio.CancelledError:
            outcome = {"status": "cancelled"}
        except BaseException as exc:
            _log.exception("fan-out %s failed", job.task_id)
            outcome = (
                INTERRUPTED
                if isinstance(exc, _TRANSIENT)
                else _failed(type(exc).__name__, str(exc))
            )
        notify(job, self._ledger.finish(job, outcome))

    # ---- fan-out ---------------------------------------------------------------------------

    async def _fan_out(self, job: Job) -> dict[str, Any]:
        parent = await self._retrying(lambda: task_store.get(self.pool, UUID(job.task_id)))
        if parent is None:
            return _failed("NotFound", f"no task {job.task_id}")
        try:
            spec = FanOut.model_validate(parent.fan_out or {})
        except ValidationError as exc:
            return _failed("BadFanOut", f"fan_out: {exc}")
        try:
            return await self._split_map_reduce(parent, spec)
        except asyncio.CancelledError:
            if job.cancel_requested:  # the parent was cancelled: so are its children
                await asyncio.shield(self._cancel_children(parent.id))
            raise

    async def _split_map_reduce(self, parent: Task, spec: FanOut) -> dict[str, Any]:
        split = await self._child_outcome(parent, "split", spec.chunking, spec.chunking_parameters)
        if split["status"] != "completed":
            return _failed("ChunkingFailed", f"chunking {_ending(split)}")
        result = split["result"]
        chunks = result.get("chunks") if isinstance(result, dict) else None
        if not isinstance(chunks, list) or not all(isinstance(c, dict) for c in chunks):
            return _failed("ChunkingFailed", "chunking returned no list of chunks in 'chunks'")
        if not 1 <= len(chunks) <= spec.max_chunks:
            reason = f"chunking returned {len(chunks)} chunks (1 to {spec.max_chunks} allowed)"
            return _failed("ChunkingFailed", reason)
        children = [
            fan_out_child(
                parent,
                f"chunk-{i}",
                spec.capability,
                {**spec.chunk_parameters, **chunk},
                title=f"{parent.title}: chunk {i + 1}/{len(chunks)}",
            )
            for i, chunk in enumerate(chunks)
        ]
        await self._retrying(lambda: self.tasks.submit_many(children))
        outcomes = await self._until_ended([UUID(c["id"]) for c in children])
        for i, outcome in enumerate(outcomes):
            if outcome["status"] != "completed":
                await self._cancel_children(parent.id)
                reason = f"chunk {i + 1}/{len(chunks)} ({outcome['id']}) {_ending(outcome)}"
                return _failed("ChunkFailed", reason)
        results = [o["result"] for o in outcomes]
        reduce_params = {**spec.reduce_parameters, "results": results}
        reduced = await self._child_outcome(parent, "reduce", spec.reduce, reduce_params)
        if reduced["status"] != "completed":
            return _failed("ReduceFailed", f"reduce {_ending(reduced)}")
        return {"status": "completed", "result": reduced["result"]}

    async def _child_outcome(
        self, parent: Task, name: str, capability: str, parameters: dict[str, Any]
    ) -> dict[str, Any]:
        child = fan_out_child(parent, name, capability, parameters)
        await self._retrying(lambda: self.tasks.submit_many([child]))
        return (await self._until_ended([UUID(child["id"])]))[0]

    async def _until_ended(self, ids: list[UUID]) -> list[dict[str, Any]]:
        """The children's rows once every one has ended (read from PostgreSQL, so a
        restart of anything in between changes nothing)."""
        while True:
            rows = await self._retrying(
                lambda: self.pool.fetch("SELECT id, status FROM tasks WHERE id = ANY($1)", ids)
            )
            if len(rows) == len(ids) and all(r["status"] in _ENDED for r in rows):
                break
            await asyncio.sleep(POLL_S)
        rows = await self._retrying(
            lambda: self.pool.fetch(
                "SELECT id, status, result, error FROM tasks WHERE id = ANY($1)", ids
            )
        )
        by_id = {r["id"]: Task.from_row({**dict(r), "title": "-"}) for r in rows}
        return [ended(by_id[i]) for i in ids]

    async def _cancel_children(self, parent_id: UUID) -> None:
        rows = await self.pool.fetch(
            "SELECT id FROM tasks WHERE parent_id = $1"
            " AND status IN ('pending', 'queued', 'assigned', 'running')",
            parent_id,
        )
        for row in rows:
            with contextlib.suppress(Exception):
                await self.tasks.cancel(row["id"])

    async def _retrying(self, op: Any) -> Any:
        """`op()` until PostgreSQL and the task manager answer: an outage delays a
        fan-out, it does not fail it (a cancel still ends it)."""
        while True:
            try:
                return await op()
            except _TRANSIENT as exc:
                _log.warning("aggregator: retrying after %r", exc)
                await asyncio.sleep(_RETRY_S)
            except Exception as exc:
                if type(exc).__module__.startswith("asyncpg"):
                    _log.warning("aggregator: retrying after %r", exc)
                    await asyncio.sleep(_RETRY_S)
                    continue
                raise

    # ---- projects ----------------------------------------------------------------------------

    async def _drive_projects(self) -> None:
        """Projects and questions, from PostgreSQL, every PROJECTS_EVERY_S."""
        while True:
            for step in (self.projects.advance_all, self.questions.route_all):
                try:
                    await step()
                except Exception:
                    _log.exception("aggregator: %s failed; trying again", step.__name__)
            await asyncio.sleep(PROJECTS_EVERY_S)

    async def kick(self) -> None:
        """Drive projects now (a project was just created or cancelled)."""
        with contextlib.suppress(Exception):
            await self.projects.advance_all()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


def fan_out_child(
    parent: Task, name: str, capability: str, parameters: dict[str, Any], title: str = ""
) -> dict[str, Any]:
    """A child of `parent` as a TaskCreate (+ id): its id and key come from the parent's
    id and `name`, so making it again finds the one made before."""
    return {
        "id": str(uuid5(parent.id, name)),
        "title": title or f"{parent.title}: {name}",
        "required_capabilities": [capability],
        "parameters": parameters,
        "priority": parent.priority,
        "max_attempts": parent.max_attempts,
        "deadline": parent.deadline.isoformat() if parent.deadline else None,
        "project_id": str(parent.project_id) if parent.project_id else None,
        "parent_id": str(parent.id),
        "idempotency_key": f"fan-out:{parent.id}:{name}",
    }


def ended(task: Task) -> dict[str, Any]:
    """What a parent needs of an ended child."""
    return {
        "id": str(task.id),
        "status": task.status.value,
        "result": task.result,
        "error": task.error,
    }


def _ending(outcome: dict[str, Any]) -> str:
    reason = (outcome.get("error") or {}).get("reason", "")
    return f"ended {outcome['status']}" + (f": {reason}" if reason else "")


def _failed(kind: str, reason: str) -> dict[str, Any]:
    """A parent's failure: logical, as its children already had their retries."""
    error = {"category": "logical", "type": kind, "reason": reason[:2000], "detail": {}}
    return {"status": "failed", "error": error}
