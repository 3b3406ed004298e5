"""`TaskManager`: the durable task queue, its leases and its retries (one actor per shard).

Guarantees:
- PostgreSQL is the record. A submit returns after its rows are committed; every state
  change is committed (in group-commit batches, with its events in the outbox in the same
  transaction) before anyone is told of it, and a lease is durable before the agent is
  called. A batch PostgreSQL does not take is retried until it does; `get` reads the record.
- A shard has one owner: a manager takes the shard's epoch in PostgreSQL when it starts,
  and every write of an older epoch changes nothing (`Fenced`: the stale manager stops).
- A lease is one try on one agent, fenced by its token (`lease`, in every write and in the
  envelope), so a result of a lease that is no longer current is refused by PostgreSQL
  itself: a task completes at most once. A lease ends with a result, a failure, or the
  agent's death; nothing is dropped, so a task is never lost.
- An attempt is counted when its handler started (the agent reports it; `running` means
  started). A lease handed back unstarted costs no attempt: the agent is stopping, or
  died with the task still in its prefetch, or is gone when a restarted shard looks for
  it. A lease lost with its agent is free only `MAX_FREE_RETURNS` times, so a task that
  kills every agent it reaches before its start is reported still ends.
- A restarted shard rebuilds its queue from PostgreSQL and adopts the leases it finds: it
  asks each agent what it holds, takes the outcomes that came meanwhile, and waits for the
  rest; only leases whose agent is gone are re-queued.
- Failures by category: transient -> retried after a backoff; fatal or a dead agent ->
  retried on another agent; logical -> failed at once. Retries stop at `max_attempts`;
  every attempt's error is kept in `attempt_errors`. Only a cancel ends a task `cancelled`.
- Highest priority first, oldest first among equals; a task is queued once all its
  dependencies completed, and fails (with the reason) when one of them does not. A
  dependency on another shard's task is released by a notice and, whatever became of the
  notice, by re-reading PostgreSQL every `DEPENDENCY_RECHECK_S`.

Tasks belong to shard `id.int % shards`; a client routes by id (see `actors.tasks`). Its
agent directory (`actors.task_agents`), its reads (`actors.task_reads`) and its take-over
of the shard (`actors.task_recovery`) are parts of the class kept in modules of their
own; a task's trace is `actors.live_task`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import ray
from pydantic import ValidationError
from ray.exceptions import RayError

from actors.live_task import LiveTask, lease_batches, submit_span, trace_context_of
from actors.registry import AgentEntry, Registry
from actors.task_agents import AgentDirectory
from actors.task_reads import TaskReads
from actors.task_recovery import ShardRecovery, shard_of
from runtime import metrics, telemetry
from runtime.config import load_settings
from runtime.errors import LogicalError, StaleAttempt
from runtime.models.api import TaskCreate
from runtime.models.events import Event, TaskAssigned, TaskResult
from runtime.models.records import Task
from runtime.policies import retry_delay
from runtime.state_machines import TASK_TRANSITIONS, TaskStatus
from runtime.store import tasks as task_store
from runtime.store.group_commit import Fenced, GroupCommitter
from runtime.store.pool import create_pool
from supervisors.child import Supervised

__all__ = ["TaskManager", "shard_of", "task_manager_name"]

_log = logging.getLogger(__name__)
S = TaskStatus
MAX_FREE_RETURNS = 3  # leases a task may hand back unstarted before one counts
DEPENDENCY_RECHECK_S = 1.0
ENDED_KEPT_S = 120.0  # far longer than a read of the queue takes, even under load
_AGENT_DIED = "AgentDied"


def task_manager_name(shard: int) -> str:
    return f"tm:{shard}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TaskManager(ShardRecovery, AgentDirectory, TaskReads, Supervised):
    """One shard of the task queue; see the module docstring."""

    def __init__(self, shard: int = 0, shards: int = 1) -> None:
        super().__init__()
        if not 0 <= shard < shards:
            raise ValueError(f"shard must be in [0, {shards}), got {shard}")
        self.shard, self.shards = shard, shards
        self.registry = Registry()
        self.tasks: dict[UUID, LiveTask] = {}
        self.by_status: Counter[TaskStatus] = Counter()  # of `tasks`, kept by LiveTask
        self._queues: dict[frozenset[str], list[tuple[int, int, UUID]]] = {}
        self._delayed: list[tuple[float, UUID]] = []
        self._deadlines: list[tuple[datetime, UUID]] = []
        self._attempt_ends: list[tuple[float, UUID, int]] = []  # (monotonic, task, lease)
        self._dependents: dict[UUID, set[UUID]] = {}
        self._ended: dict[UUID, float] = {}  # ended and forgotten: id -> when (monotonic)
        self._waiters: dict[UUID, list[asyncio.Future[dict[str, Any]]]] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._changed: list[LiveTask] = []  # changed since the last flush
        self._started_at = _utcnow()  # when this incarnation read the queue
        self._up = asyncio.Event()  # calls wait for on_start: a restarted shard is named
        # before it has rebuilt its queue
        self.counters = {"completed": 0, "failed": 0, "retried": 0, "stale_results": 0}

    # ---- lifecycle ---------------------------------------------------------------------

    async def on_start(self) -> None:
        settings = load_settings()
        if settings.database_dsn is None:
            raise RuntimeError("RAYVISOR_DATABASE_URL is not set in this worker")
        self.settings = settings
        self.pool = await create_pool(settings.database_dsn, min_size=2, max_size=8)
        self.epoch = await self._take_shard()
        self.committer = GroupCommitter(
            self.pool, settings.batch_window_ms / 1000, owner=(self.shard, self.epoch)
        )
        await self._rebuild()
        self._spawn(self._dispatch_loop())
        self._spawn(self._timer_loop())
        self._spawn(self._discover_agents_periodically())
        self._spawn(self._sweep_orphans())
        self._spawn(metrics.reporter(self.namespace, self._report_load))
        self._up.set()

    async def on_stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):  # what is settled in memory is written
            await self._flush_changes()
        await self.committer.close()
        await self.pool.close()

    def _adopt(self, record: Task) -> LiveTask:
        live = LiveTask(record, next(self._seq), db_lease=record.lease, by_status=self.by_status)
        if (earlier := self.tasks.get(record.id)) is not None:
            earlier.leave()
        self.tasks[record.id] = live
        if record.status is S.QUEUED:
            self._enqueue(live)
        if record.deadline is not None:
            heapq.heappush(self._deadlines, (record.deadline, record.id))
        return live

    # ---- submitting ------------------------------------------------------------------

    async def submit_many(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate and store tasks; all or nothing. Each item is a TaskCreate (+ `id`)."""
        await self._up.wait()
        records = [self._validated(item) for item in items]
        spans = [submit_span(r) for r in records] if telemetry.enabled() else []
        with telemetry.ending(spans):
            known = await self._dependency_statuses(records)
            for record in records:
                missing = [str(d) for d in record.dependencies if d not in known]
                if missing:
                    raise LogicalError(f"dependencies: unknown task ids {missing}")
                known[record.id] = record.status
            stored = await task_store.insert_many(self.pool, records)
        # a task stored by a call that died with its task manager is this shard's too (one
        # leased meanwhile is left to `_sweep_orphans`, which adopts its lease)
        new = [self._adopt(task) for task, created in stored
               if created or (not self._known(task.id) and task.status in (S.PENDING, S.QUEUED)
                              and shard_of(task.id, self.shards) == self.shard)]  # fmt: skip
        metrics.tasks_submitted(t.required for t in new)
        waiting = [t for t in new if t.record.status is S.PENDING]
        if waiting:  # a task queued (or failed) by its dependencies is durable before we answer
            await self._resolve_dependencies(waiting)
            await self._flush_changes()
        # else the insert was the only write: no waiting for other tasks' commits
        self._wake.set()
        return [self._view(self.tasks.get(task.id) or task) for task, _ in stored]

    def _validated(self, item: dict[str, Any]) -> Task:
        if not isinstance(item, dict):
            raise LogicalError(f"a task must be an object, got {type(item).__name__}")
        body = dict(item)
        task_id = body.pop("id", None)
        trace_context = trace_context_of(body.pop("trace_context", None))
        try:
            create = TaskCreate.model_validate(body)
            task_id = UUID(str(task_id)) if task_id is not None else self._new_id()
        except (ValidationError, ValueError) as exc:
            raise LogicalError(f"invalid task: {exc}") from None
        if shard_of(task_id, self.shards) != self.shard:
            raise LogicalError(f"task {task_id} belongs to shard {shard_of(task_id, self.shards)}")
        # with nothing to wait for, a task is stored queued: no second write to queue it
        status = S.PENDING if create.dependencies else S.QUEUED
        # TaskCreate checked every field as Task would; Task only adds its defaults, given
        # here: model_construct inspects a default factory's signature on every call
        now = _utcnow()
        fields = dict(create)
        if create.fan_out is not None:
            fields["fan_out"] = create.fan_out.model_dump(mode="json")
        return Task.model_construct(
            id=task_id,
            status=status,
            attempt_errors=[],
            created_at=now,
            updated_at=now,
            trace_context=trace_context,
            **fields,
        )

    def _new_id(self) -> UUID:
        while True:
            candidate = uuid4()
            if shard_of(candidate, self.shards) == self.shard:
                return candidate

    async def _dependency_statuses(self, records: list[Task]) -> dict[UUID, TaskStatus]:
        wanted = {d for r in records for d in r.dependencies}
        if not wanted:
            return {}
        rows = await self.pool.fetch(
            "SELECT id, status FROM tasks WHERE id = ANY($1::uuid[])", list(wanted)
        )
        statuses = {r["id"]: S(r["status"]) for r in rows}
        # memory is ahead of the database for tasks this shard holds (commits are batched)
        statuses.update({d: self.tasks[d].record.status for d in wanted if d in self.tasks})
        return statuses

    async def _resolve_dependencies(self, pending: list[LiveTask]) -> None:
        """Queue the pending tasks whose dependencies all completed; fail those with a
        failed dependency; the rest wait for `_dependency_finished`."""
        statuses = await self._dependency_statuses([t.record for t in pending])
        for live in pending:
            failed = [d for d in live.record.dependencies if statuses.get(d, S.PENDING).is_terminal
                      and statuses[d] is not S.COMPLETED]  # fmt: skip
            waiting = {
                d for d in live.record.dependencies if not statuses.get(d, S.PENDING).is_terminal
            }
            if failed:
                self._fail(live, _dependency_error(failed[0], statuses[failed[0]]))
            elif waiting:
                live.waiting_on = waiting
                for dep in waiting:
                    self._dependents.setdefault(dep, set()).add(live.id)
            else:
                live.move(S.QUEUED)
                self._enqueue(live)
                self._changed.append(live)

    # ---- matching and leases ------------------------------------------------------------

    def _enqueue(self, live: LiveTask) -> None:
        key = (-live.record.priority, live.seq, live.id)
        heapq.heappush(self._queues.setdefault(live.required, []), key)
        self._wake.set()

    def _next_assignment(self) -> tuple[LiveTask, AgentEntry] | None:
        best: tuple[tuple[int, int], LiveTask, AgentEntry] | None = None
        for required, heap in self._queues.items():
            while heap and self._stale(heap[0][2]):
                heapq.heappop(heap)
            if not heap:
                continue
            priority, seq, task_id = heap[0]
            if best is not None and (priority, seq) >= best[0]:
                continue
            live = self.tasks[task_id]
            agent = self.registry.match(required, frozenset(live.avoid))
            if agent is not None:
                best = ((priority, seq), live, agent)
        if best is None:
            return None
        _, live, agent = best
        heapq.heappop(self._queues[live.required])
        return live, agent

    def _stale(self, task_id: UUID) -> bool:
        live = self.tasks.get(task_id)
        return live is None or live.record.status is not S.QUEUED

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            leases: list[tuple[LiveTask, AgentEntry]] = []
            while self.registry.has_free() and (found := self._next_assignment()) is not None:
                live, agent = found
                self.registry.acquire(agent)
                live.move(S.ASSIGNED)
                live.set(attempt=live.record.attempt + 1, lease=live.record.lease + 1,
                         assigned_to=agent.agent_id, not_before=None)  # fmt: skip
                leases.append((live, agent))
            if leases:
                self._spawn(self._start_leases(leases))

    async def _start_leases(self, leases: list[tuple[LiveTask, AgentEntry]]) -> None:
        """Record the leases, then call their agents. The dispatch loop does not wait for
        this: the next round's leases form while these commit, and join the next batch."""
        granted = [(t, a, t.record.lease) for t, a in leases]
        for live, agent in leases:
            live.begin_lease_span(agent.agent_id)
        events = [
            TaskAssigned(task_id=t.id, agent_id=a.agent_id, attempt=t.record.attempt, lease=n)
            for t, a, n in granted
        ]
        await self._commit(
            [t.row() for t, _ in leases], events, [t.trace_carrier() for t, _ in leases]
        )
        current: list[tuple[LiveTask, AgentEntry]] = []
        for live, agent, lease in granted:
            if live.record.lease == lease and live.record.status is S.ASSIGNED:
                current.append((live, agent))
            else:  # ended meanwhile (cancelled, deadline)
                self.registry.release(agent)
        for agent, batch in lease_batches(current):
            self._spawn(self._run_batch(agent, [(t, t.record.lease) for t in batch]))

    async def _run_batch(
        self, agent: AgentEntry, batch: list[tuple[LiveTask, int]], adopt: bool = False
    ) -> None:
        """Leases on one agent in one streaming call (`run_many`, or `adopt` for leases of
        an earlier incarnation of this shard): starts and outcomes are settled (and
        committed together) as they come; a lease the call leaves open when it ends was
        lost with the agent."""
        open_leases = {str(t.id): (t, lease) for t, lease in batch}
        reason = f"agent {agent.agent_id} sent no outcome"
        try:
            if adopt:
                call = agent.handle.adopt.remote({k: v[1] for k, v in open_leases.items()})
            else:
                call = agent.handle.run_many.remote([t.envelope() for t, _ in batch])
            async for ref in call:
                chunk = await ref
                for task_id, outcome in chunk:
                    self._on_report(open_leases, task_id, outcome, agent)
                await self._flush_changes()
        except RayError as exc:
            self.registry.discard(agent)
            reason = f"agent {agent.agent_id} died: {type(exc).__name__}: {exc}"[:2000]
        except asyncio.CancelledError:  # this shard is stopping: the next one adopts them
            open_leases.clear()
            raise
        finally:
            for task_id in list(open_leases):
                live, lease = open_leases.pop(task_id)
                self.registry.release(agent)
                if self._is_current(live, lease):
                    self._lease_lost(live, reason)
        self._wake.set()
        await self._flush_changes()

    def _on_report(
        self,
        open_leases: dict[str, tuple[LiveTask, int]],
        task_id: str,
        outcome: dict[str, Any],
        agent: AgentEntry,
    ) -> None:
        """One report of a batch: a start, or the outcome that closes the lease."""
        lease = open_leases.get(task_id)
        if lease is None:
            return  # not one of this batch's leases (or already closed)
        live, number = lease
        status = outcome.get("status") if isinstance(outcome, dict) else None
        if status == "started":
            if self._is_current(live, number) and live.record.status is S.ASSIGNED:
                self._mark_started(live)
            return
        del open_leases[task_id]
        self.registry.release(agent)
        self._wake.set()
        if status == "interrupted":  # the agent is stopping: no more work for it
            self.registry.discard(agent)
        with contextlib.suppress(StaleAttempt):
            self._settle_now(live.id, number, outcome, agent.agent_id)

    def _mark_started(self, live: LiveTask) -> None:
        live.move(S.RUNNING)
        live.set(started_at=_utcnow())
        self._changed.append(live)
        timeout_s = live.record.attempt_timeout_s
        if timeout_s:
            ends = (time.monotonic() + timeout_s, live.id, live.record.lease)
            heapq.heappush(self._attempt_ends, ends)

    @staticmethod
    def _is_current(live: LiveTask, lease: int) -> bool:
        return live.record.lease == lease and live.record.status in (S.ASSIGNED, S.RUNNING)

    async def report_result(self, task_id: str, lease: int, outcome: dict[str, Any]) -> bool:
        """Settle a lease from outside (an agent reporting late); StaleAttempt if stale."""
        await self._up.wait()
        self._settle_now(UUID(task_id), lease, outcome, None)
        await self._flush_changes()
        return True

    def _settle_now(
        self, task_id: UUID, lease: int, outcome: dict[str, Any], agent_id: str | None
    ) -> None:
        """Apply a lease's outcome in memory (the caller flushes); StaleAttempt if the
        lease is not the current one."""
        live = self.tasks.get(task_id)
        if live is None or not self._is_current(live, lease):
            self.counters["stale_results"] += 1
            raise StaleAttempt(
                f"task {task_id}: lease {lease} is not current",
                task_id=str(task_id), attempt=lease,
                current_attempt=live.record.lease if live else None,
            )  # fmt: skip
        status = outcome.get("status") if isinstance(outcome, dict) else None
        live.end_lease_span(None if status == "completed" else f"{status}: {outcome!r:.300}")
        if status in ("interrupted", "unknown") or (
            status == "cancelled" and not live.cancel_asked
        ):
            self._hand_back(live, f"handed back by agent {agent_id}: {status}")
            return
        if live.record.status is S.ASSIGNED:
            self._mark_started(live)  # an outcome without its start: it did start
        if status == "completed":
            self._complete(live, outcome.get("result"))
        elif status == "cancelled":
            self._finish(live, S.CANCELLED, error={"category": "logical", "type": "Cancelled",
                                                   "reason": "cancelled on request"})  # fmt: skip
        else:
            error = outcome.get("error") if isinstance(outcome, dict) else None
            if not isinstance(error, dict):
                error = {"category": "logical", "type": "BadOutcome",
                         "reason": f"an agent returned {outcome!r:.200}"}  # fmt: skip
            self._retry_or_fail(live, error, agent_id)

    def _lease_lost(self, live: LiveTask, reason: str) -> None:
        """The agent died holding the lease: a started attempt counts, an unstarted one
        goes back to the queue for free."""
        live.end_lease_span(reason)
        if live.record.status is S.RUNNING:
            error = {"category": "fatal", "type": _AGENT_DIED, "reason": reason}
            self._retry_or_fail(live, error, live.record.assigned_to)
        else:
            self._hand_back(live, reason, died=True)

    def _hand_back(self, live: LiveTask, reason: str, *, died: bool = False) -> None:
        """Re-queue a lease whose handler never started: no attempt spent. A lease lost
        with its agent (`died`) is free only MAX_FREE_RETURNS times, so a task that kills
        every agent it reaches before its start is reported still ends."""
        live.returns += died
        if live.returns > MAX_FREE_RETURNS:
            error = {"category": "fatal", "type": _AGENT_DIED,
                     "reason": f"{reason} (lost unstarted {live.returns} times)"}  # fmt: skip
            self._retry_or_fail(live, error, live.record.assigned_to)
            return
        live.move(S.QUEUED)
        live.set(attempt=max(0, live.record.attempt - 1), assigned_to=None, started_at=None)
        self._enqueue(live)
        self._changed.append(live)

    def _retry_or_fail(
        self, live: LiveTask, error: dict[str, Any], agent_id: str | None = None
    ) -> None:
        record = live.record
        error = {**error, "attempt": record.attempt, "agent_id": agent_id or record.assigned_to}
        live.set(attempt_errors=[*record.attempt_errors, error], error=error)
        category = error.get("category", "fatal")
        if category == "logical" or record.attempt >= record.max_attempts:
            self._fail(live, error)
            return
        self.counters["retried"] += 1
        delay = 0.0
        if category == "transient":
            base, cap = self.settings.supervision.min_backoff_s or 0.1, 30.0
            delay = retry_delay(max(1, record.attempt), base, cap)
        elif agent_id or record.assigned_to:
            live.avoid.add(agent_id or record.assigned_to or "")
        live.move(S.QUEUED)
        live.set(assigned_to=None,
                 not_before=_utcnow() + timedelta(seconds=delay) if delay else None)  # fmt: skip
        if delay:
            heapq.heappush(self._delayed, (time.monotonic() + delay, live.id))
        else:
            self._enqueue(live)
        self._changed.append(live)

    # ---- endings -------------------------------------------------------------------------

    def _complete(self, live: LiveTask, result: Any) -> None:
        self._finish(live, S.COMPLETED, result=result)

    def _fail(self, live: LiveTask, error: dict[str, Any]) -> None:
        self._finish(live, S.FAILED, error=error)

    def _finish(
        self, live: LiveTask, status: TaskStatus, *, result: Any = None, error: dict | None = None
    ) -> None:
        live.move(status)
        live.set(finished_at=_utcnow(), result=result, error=error if status is not S.COMPLETED
                 else None)  # fmt: skip
        self.counters["completed" if status is S.COMPLETED else "failed"] += 1
        record = live.record
        metrics.task_finished(live.required, status, record.created_at, record.finished_at)
        self._changed.append(live)
        self._dependency_finished(live.id, status)
        if self.shards > 1:
            self._spawn(self._tell_other_shards(live.id, status))

    def _dependency_finished(self, task_id: UUID, status: TaskStatus) -> None:
        for dependent_id in self._dependents.pop(task_id, set()):
            dependent = self.tasks.get(dependent_id)
            if dependent is None or dependent.record.status is not S.PENDING:
                continue
            if status is not S.COMPLETED:
                self._fail(dependent, _dependency_error(task_id, status))
                continue
            dependent.waiting_on.discard(task_id)
            if not dependent.waiting_on:
                dependent.move(S.QUEUED)
                self._enqueue(dependent)
                self._changed.append(dependent)

    async def dependency_done(self, task_id: str, status: str) -> None:
        """Another shard's task ended: release or fail this shard's dependents."""
        await self._up.wait()
        self._dependency_finished(UUID(task_id), S(status))
        await self._flush_changes()

    async def _tell_other_shards(self, task_id: UUID, status: TaskStatus) -> None:
        for shard in range(self.shards):
            if shard != self.shard:
                with contextlib.suppress(ValueError, RayError):
                    other = ray.get_actor(task_manager_name(shard), namespace=self.namespace)
                    await other.dependency_done.remote(str(task_id), status.value)

    async def _flush_changes(self) -> None:
        changed = list({id(t): t for t in self._changed}.values())
        self._changed = []
        if not changed:
            return
        ended = [t for t in changed if t.record.status.is_terminal]
        spans = [t.commit_span() for t in ended] if telemetry.enabled() else []
        with telemetry.ending(spans):
            await self._commit(
                [t.row() for t in changed],
                self._terminal_events(ended),
                [t.trace_carrier() for t in ended],
            )
        for live in changed:
            if live.record.status.is_terminal:
                self._forget(live)

    def _terminal_events(self, ended: list[LiveTask]) -> list[Event]:
        return [
            TaskResult(
                task_id=t.id,
                status=t.record.status,
                attempt=t.record.attempt,
                agent_id=t.record.assigned_to,
                result=t.record.result,
                error=t.record.error,
            )
            for t in ended
        ]

    def _known(self, task_id: UUID) -> bool:
        """Held, or ended by this incarnation lately: a row read before the end was
        committed says the task is still active, and must not bring it back."""
        return task_id in self.tasks or task_id in self._ended

    def _forget(self, live: LiveTask) -> None:
        """A finished task leaves memory; its waiters get the final view."""
        live.end_lease_span(f"task ended {live.record.status.value}")
        held = self.tasks.pop(live.id, None)
        for gone in (held, live):
            if gone is not None:
                gone.leave()
        now = time.monotonic()
        self._ended[live.id] = now
        while (oldest := next(iter(self._ended.items()), None)) and oldest[1] < now - ENDED_KEPT_S:
            del self._ended[oldest[0]]
        waiters = self._waiters.pop(live.id, None)
        if waiters:
            view = self._view(live.record)
            for future in waiters:
                if not future.done():
                    future.set_result(view)

    # ---- cancel, deadlines, delayed retries -----------------------------------------------

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a task that has not ended; a running handler is cancelled in its agent."""
        await self._up.wait()
        tid = UUID(task_id)
        live = self.tasks.get(tid)
        if live is None:
            return await self.get(task_id)
        live.cancel_asked = True
        await self._end_early(live, S.CANCELLED, "cancelled on request")
        return self._view(live.record)

    async def _end_early(self, live: LiveTask, status: TaskStatus, reason: str) -> None:
        agent = self.registry.get(live.record.assigned_to or "")
        if live.record.status in (S.ASSIGNED, S.RUNNING) and agent is not None:
            agent.handle.cancel.remote(str(live.id))
        error_type = "Cancelled" if status is S.CANCELLED else "DeadlineExceeded"
        if not TASK_TRANSITIONS.can(live.record.status, status):
            status = S.FAILED  # e.g. a pending task past its deadline
        self._finish(live, status, error={"category": "logical", "type": error_type,
                                          "reason": reason})  # fmt: skip
        await self._flush_changes()

    async def _timer_loop(self) -> None:
        recheck_at = time.monotonic() + DEPENDENCY_RECHECK_S
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if now >= recheck_at:
                recheck_at = now + DEPENDENCY_RECHECK_S
                with contextlib.suppress(Exception):  # PostgreSQL down: the next round
                    await self._recheck_other_shards_dependencies()
            while self._delayed and self._delayed[0][0] <= now:
                _, task_id = heapq.heappop(self._delayed)
                live = self.tasks.get(task_id)
                if live is not None and live.record.status is S.QUEUED:
                    self._enqueue(live)
            wall = _utcnow()
            while self._deadlines and self._deadlines[0][0] <= wall:
                _, task_id = heapq.heappop(self._deadlines)
                live = self.tasks.get(task_id)
                if live is not None and not live.record.status.is_terminal:
                    await self._end_early(live, S.TIMED_OUT, "deadline passed")
            while self._attempt_ends and self._attempt_ends[0][0] <= now:
                _, task_id, lease = heapq.heappop(self._attempt_ends)
                live = self.tasks.get(task_id)
                if live is not None and self._is_current(live, lease):
                    await self._attempt_timed_out(live)

    async def _attempt_timed_out(self, live: LiveTask) -> None:
        """An attempt ran past `attempt_timeout_s`: cancel it on its agent, retry the task
        while it has attempts left, end it `timed_out` after the last."""
        reason = f"attempt {live.record.attempt} ran past {live.record.attempt_timeout_s} s"
        if live.record.attempt >= live.record.max_attempts:
            await self._end_early(live, S.TIMED_OUT, reason)
            return
        agent = self.registry.get(live.record.assigned_to or "")
        if agent is not None:  # its outcome comes under a lease no longer current: ignored
            agent.handle.cancel.remote(str(live.id))
        error = {"category": "transient", "type": "AttemptTimedOut", "reason": reason}
        self._retry_or_fail(live, error, live.record.assigned_to)
        await self._flush_changes()

    async def _recheck_other_shards_dependencies(self) -> None:
        """Release (or fail) dependents from what PostgreSQL holds of other shards' tasks:
        a notice of theirs may be lost, or come before its dependent was registered."""
        foreign = [d for d in self._dependents if shard_of(d, self.shards) != self.shard]
        if not foreign:
            return
        rows = await self.pool.fetch(
            "SELECT id, status FROM tasks WHERE id = ANY($1::uuid[])", foreign
        )
        for row in rows:
            status = S(row["status"])
            if status.is_terminal:
                self._dependency_finished(row["id"], status)
        await self._flush_changes()

    def _report_load(self) -> None:
        """Queue depth and leases in flight, each `metrics.reporter` round."""
        metrics.shard_load(self.shard, self.by_status)

    # ---- plumbing -------------------------------------------------------------------------

    async def _commit(
        self,
        rows: list[tuple[Any, ...]],
        events: list[Event] | None = None,
        headers: list[dict[str, str] | None] | None = None,
    ) -> None:
        """Write durably, each event with its task's trace `headers`; a stale owner or a
        failure no retry can mend stops this shard (its successor rebuilds from
        PostgreSQL), as OTP would let it crash."""
        try:
            refused = await self.committer.write(rows, events or [], headers)
        except Fenced as exc:
            _log.error("tm:%s epoch %s fenced out: %s", self.shard, self.epoch, exc)
            self.exit_child("fatal", f"fenced: {exc}")
            raise
        except Exception as exc:
            _log.exception("tm:%s: a commit failed", self.shard)
            self.exit_child("fatal", f"commit failed: {exc!r}"[:500])
            raise
        if refused:  # PostgreSQL holds another lease: memory is wrong, so is this shard
            _log.error("tm:%s: %d writes refused by their lease", self.shard, len(refused))
            self.exit_child("fatal", f"{len(refused)} writes refused by their lease")

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


def _dependency_error(dep: UUID, status: TaskStatus) -> dict[str, Any]:
    return {
        "category": "logical",
        "type": "DependencyFailed",
        "reason": f"dependency {dep} ended {status.value}",
    }
