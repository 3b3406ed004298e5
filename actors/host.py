"""`AgentHost`: the supervised Ray actor that runs one `Agent`.

The host is a plain class; the supervisor makes it an actor with
`ray.remote(concurrency_groups=CONCURRENCY_GROUPS, max_concurrency=1000)(AgentHost)`.
Its life, as the supervisor drives it:

1. `AgentHost(agent_class, params, template)`: cheap, and without identity, so a warm
   standby can be created before it is known which child it will replace.
2. `rv_warm()` (optional, ahead of time): connects PostgreSQL and NATS and builds the agent.
3. `rv_start(child_id, supervisor_id)`: takes the identity; registers the agent, restores its
   saved state and records `-> starting -> running -> idle` (after `error` when the last
   incarnation crashed) with its status and announce events, all in one transaction; then
   runs `Agent.on_start` and takes work; only then connects NATS (if `rv_warm` did not)
   and starts the heartbeat on `agents.{id}.heartbeat`, so a restart answers sooner.
4. `run(task)`, or `run_many(tasks)` for a batch in one streaming call: one task at a time
   (`idle -> busy`, and `idle` again once no task came for a short linger), each start
   reported (`{"status": "started"}`) before its outcome; `cancel(task_id)` answers on the
   control group even while the handler runs; `adopt(leases)` tells a restarted task
   manager what this agent holds of its leases, then streams their outcomes.
5. `rv_stop()`: hands back what it holds (`interrupted`), `Agent.on_stop`,
   `-> stopping -> stopped`, connections closed.

Guarantees:
- Every state change is checked against `runtime.state_machines.AGENT_TRANSITIONS` before
  it is written, and written with its `AgentStatusChanged` event in one transaction
  (`actors.agent_state`).
- `run` never raises for a failure of the agent's work: it returns
  `{"status": "completed", "result": ...}`, `{"status": "failed", "error": {...}}` (the
  `TaskError.to_dict()` shape), `{"status": "cancelled"}` (only when a cancel asked) or
  `{"status": "interrupted"}` (not run, or stopped by this host: no attempt spent). A
  result that is not plain JSON, or larger than `max_result_bytes` as JSON, is a logical
  failure of that task (the agent goes on; `actors.outcomes`).
- A task belongs to the host, not to the call that brought it (`actors.work.Ledger`): it
  runs to its end if the caller dies, and its outcome is kept for `adopt`.
- A failure fails that attempt only and the agent keeps serving; `FATAL_IN_A_ROW` fatal
  failures in a row mean the agent itself is broken: it is marked `error` and reports it
  to the supervisor (`exit_child("fatal")`), which restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import re
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import ray

from actors.agent import Agent, AgentContext, _uuid_or_none
from actors.agent_state import AgentStateRecords, Lifecycle, startup_path
from actors.discovery_feed import DiscoveryFeed
from actors.host_wiring import HostWiring
from actors.messaging import Mailbox
from actors.outcomes import failed, handler_outcome
from actors.work import INTERRUPTED, STARTED, Job, Ledger, notify, stream_reports
from runtime import logs, telemetry
from runtime.bus import Bus, import_nats
from runtime.config import (
    Settings,
    load_settings,
)
from runtime.errors import (
    ConfigError,
    Conflict,
    LogicalError,
    classify,
)
from runtime.models.common import AGENT_ID_PATTERN
from runtime.models.enums import AgentState
from runtime.models.events import (
    AgentAnnounced,
    AgentErrorRaised,
    AgentHeartbeat,
    AgentStatusChanged,
    Event,
)
from runtime.models.records import AgentRecord
from runtime.store import agents as agent_store
from runtime.store import outbox
from runtime.store.pool import create_pool
from runtime.tools import ToolRegistry, ToolRunner
from supervisors.child import CONCURRENCY_GROUPS, CONTROL_GROUP, Supervised

__all__ = [
    "CONCURRENCY_GROUPS",
    "AgentHost",
    "build_models",
    "import_agent_class",
]

_log = logging.getLogger(__name__)

FATAL_IN_A_ROW = 3  # fatal failures in a row that mean the agent itself is broken
STOP_REPORT_S = 2.0  # longest a stop waits for the handed-back tasks to be reported
IDLE_LINGER_S = 0.5
REPORT_AFTER_S = 0.01  # longest a ready outcome of a batch waits for the next one

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class _Rollback(Exception):
    """Rolls a transaction back on purpose."""


# ---- pure helpers ---------------------------------------------------------------------------

_HOST_MODELS = (AgentRecord, AgentAnnounced, AgentStatusChanged, AgentHeartbeat, AgentErrorRaised)
_models_built = False


def build_models() -> None:
    """Build the validators of the models a host writes with; once per process.

    They build on first use (`defer_build`, which keeps imports cheap), ~30 ms here: a
    warm worker (its setup hook calls this) or a standby spare (`rv_warm`) does it ahead
    of time instead of on its restart path.
    """
    global _models_built
    if not _models_built:
        for model in _HOST_MODELS:
            model.model_rebuild(force=True)
        _models_built = True


def import_agent_class(path: str) -> type[Agent]:
    """The `Agent` subclass at `module:Class` or `module.Class`; ConfigError otherwise."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"agent class {path!r} is not of the form 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"agent class {path!r}: cannot import {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ConfigError(f"agent class {path!r} is not a subclass of actors.Agent")
    return cls


# ---- the actor ------------------------------------------------------------------------------


class AgentHost(AgentStateRecords, HostWiring, Supervised):
    """Runs one `Agent` under a supervisor: state machine, durable state, heartbeat."""

    def __init__(
        self,
        agent_class: str,
        params: dict[str, Any] | None = None,
        template: str | None = None,
        tools: dict[str, Any] | None = None,
        models: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.agent_class = agent_class
        self.params = dict(params or {})
        self.template = template
        self.tools_config = tools  # None: this worker's own settings
        self.models_config = models  # the model catalog, likewise
        self.agent: Agent | None = None
        self.ctx: AgentContext | None = None
        self.settings: Settings | None = None
        self._pool: asyncpg.Pool | None = None
        self._bus: Bus | None = None
        self._bus_task: asyncio.Task[None] | None = None
        self._bus_ready: asyncio.Future[Bus] | None = None
        self._template_id: UUID | None = None
        self._tools = ToolRegistry()
        self._capabilities: list[str] = []
        self._own_capabilities: list[str] = []
        self._lifecycle = Lifecycle()
        self._ready = False
        self._stopping = False
        self._warm_lock = asyncio.Lock()
        self._task_lock = asyncio.Lock()
        self._ledger = Ledger()  # shared with `cancel`, on the control group's thread
        self._drivers: set[asyncio.Task[None]] = set()
        self._streams = 0  # run_many / adopt calls still reporting
        self._fatal_in_a_row = 0
        self._unwritten: list[Event] = []  # error events PostgreSQL did not take yet
        self._heartbeat: asyncio.Task[None] | None = None
        self._mailbox: Mailbox | None = None
        self._feed: DiscoveryFeed | None = None
        self._mailbox_task: asyncio.Task[None] | None = None
        self._idle_later: asyncio.Task[None] | None = None
        self._last_work_at = 0.0  # loop time the last task ended (idle after IDLE_LINGER_S)
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    async def rv_warm(self) -> None:
        """Connect PostgreSQL and NATS and build the agent; idempotent."""
        await self._prepare()
        await asyncio.shield(self._start_bus())
        await self._prime_registration()

    async def _prime_registration(self) -> None:
        """Run the registration's statements once, rolled back, so that a standby spare's
        promotion finds them prepared on its connection (asyncpg caches them per
        connection): four round trips to PostgreSQL fewer on the promotion path."""
        assert self._pool is not None
        probe = f"rv-warm-{os.getpid()}"
        steps = startup_path(AgentState.CREATED)
        with contextlib.suppress(_Rollback, *_DB_ERRORS, Conflict):
            async with self._pool.acquire() as conn, conn.transaction():
                await agent_store.upsert_agent(conn, AgentRecord(id=probe, name=probe))
                event = AgentStatusChanged(agent_id=probe, to_state=AgentState.STARTING)
                await agent_store.record_path(conn, probe, AgentState.CREATED, steps, [event])
                raise _Rollback

    async def _prepare(self) -> None:
        """Connect PostgreSQL and build the agent; idempotent. NATS is left out: a
        restarted host takes work once its state is restored, and connects NATS (and
        loads nats, ~130 ms) after that; the heartbeat and `ctx.progress` wait for it."""
        async with self._warm_lock:
            if self.agent is not None:
                return
            self._loop = asyncio.get_running_loop()
            build_models()
            settings = load_settings()
            if not settings.database_dsn or not settings.nats_servers:
                raise ConfigError("an agent host needs RAYVISOR_DATABASE_URL and RAYVISOR_NATS_URL")
            agent = import_agent_class(self.agent_class)(**self.params)
            pool = await create_pool(settings.database_dsn, min_size=1, max_size=4)
            try:
                template = await self._resolve_template(pool)
            except BaseException:
                with contextlib.suppress(Exception):
                    await pool.close()
                raise
            self.settings, self._pool = settings, pool
            self._template_id = template.id if template else None
            self._tools = self._tool_registry()
            self._set_own_capabilities(agent, template)
            self.agent = agent

    def _bus_future(self) -> asyncio.Future[Bus]:
        """The NATS connection to come: what `ctx` waits on until `_start_bus` connects."""
        if self._bus_ready is None:
            self._bus_ready = asyncio.get_running_loop().create_future()
        return self._bus_ready

    def _start_bus(self) -> asyncio.Future[Bus]:
        """Start connecting NATS (once); the future of the connection."""
        if self._bus_task is None:
            self._bus_task = asyncio.get_running_loop().create_task(self._connect_bus())
        return self._bus_future()

    async def _connect_bus(self) -> None:
        """Connect NATS, retrying while NATS is unreachable (the host serves meanwhile)."""
        assert self.settings is not None
        # load nats in a thread: the loop keeps answering while ~130 ms of imports run
        await asyncio.to_thread(import_nats, self.settings.nats_servers)
        delay_s = 0.25
        while True:
            try:
                bus = await Bus.connect(
                    self.settings.nats_servers,
                    name="rayvisor-agent",
                    stream=self.settings.stream_name,
                )
            except Exception as exc:
                _log.warning("agent %s: NATS not reachable yet: %r", self.child_id, exc)
                await asyncio.sleep(delay_s)
                delay_s = min(5.0, delay_s * 2)
                continue
            self._bus = bus
            if not self._bus_future().done():
                self._bus_future().set_result(bus)
            return

    async def on_start(self) -> None:
        agent_id = self.child_id
        if not re.fullmatch(AGENT_ID_PATTERN, agent_id or ""):
            raise ConfigError(f"agent id {agent_id!r} must match {AGENT_ID_PATTERN}")
        await self._prepare()
        assert self.agent is not None and self._pool is not None and self.settings is not None
        self._loop = asyncio.get_running_loop()
        self._capabilities = await self._with_specializations(agent_id)
        stored = await self._register(agent_id)
        saved = stored.saved_state
        self._mailbox = Mailbox(agent_id, self._on_message)
        self._feed = DiscoveryFeed(agent_id, self._on_discovery)
        self.ctx = AgentContext(
            agent_id,
            pool=self._pool,
            bus=self._bus or self._bus_future(),
            state=saved if isinstance(saved, dict) else None,
            tools=ToolRunner(self._tools, self._pool, agent_id),
            feed=self._feed,
            connect=self._start_bus,
            models=self._model_catalog(),
            memory_max_value_bytes=self.settings.memory_max_value_bytes,
        )
        try:
            await self.agent.on_start(self.ctx)
        except Exception as exc:
            with contextlib.suppress(*_DB_ERRORS, Conflict):
                await self._transition(AgentState.FAILED, f"on_start failed: {exc!r}"[:500])
            raise
        self._ready = True
        self._start_bus()  # after the host answers: its beats and `ctx.progress` wait for it
        self._mailbox_task = self._loop.create_task(self._open_inboxes())
        interval_s = self.settings.supervision.heartbeat.interval_s
        self._heartbeat = self._loop.create_task(self._heartbeat_loop(interval_s))
        self._offer_to_task_managers()

    def _offer_to_task_managers(self) -> None:
        """Tell each TaskManager shard this agent takes work (again, after a restart).

        A shard that is not up yet finds the agent later through the supervision tree.
        """
        me = ray.get_runtime_context().current_actor
        for shard in range(self.settings.task_shards if self.settings else 1):
            try:
                tm = ray.get_actor(f"tm:{shard}", namespace=self.namespace)
            except ValueError:
                continue
            prefetch = self.agent.prefetch if self.agent is not None else 1
            tm.register_agent.remote(self.child_id, list(self._capabilities), me, prefetch)

    async def on_stop(self) -> None:
        """Hand back what this agent holds (`interrupted`: no attempt spent), then stop."""
        self._stopping = True
        try:
            for background in (self._heartbeat, self._idle_later, self._mailbox_task):
                if background is not None:
                    background.cancel()
            await self._close_inboxes()
            for handler in self._ledger.interrupt_all():
                handler.cancel()
            await self._until(lambda: not self._ledger.busy(), STOP_REPORT_S)
            await self._until(lambda: self._streams == 0, STOP_REPORT_S)
            if self.agent is not None and self.ctx is not None:
                try:
                    await self.agent.on_stop(self.ctx)
                except Exception:
                    self.ctx.log.exception("on_stop failed")
            started = bool(self.child_id) and self._pool is not None
            if started and self._lifecycle.can(AgentState.STOPPING):
                await self._record_stop()
        finally:
            await self._close_connections()

    @staticmethod
    async def _until(condition: Any, timeout_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not condition() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)

    # ---- work ----------------------------------------------------------------------------

    async def run(self, task: dict[str, Any]) -> dict[str, Any]:
        """Handle one task; see the module docstring for the shape of the outcome."""
        outcome: dict[str, Any] = {}
        async for chunk in self.run_many([task]):
            for _, reported in chunk:
                if reported.get("status") != "started":
                    outcome = reported
        return outcome

    async def run_many(self, tasks: list[dict[str, Any]]) -> AsyncIterator[list[Any]]:
        """Handle tasks one after another, in order; yields `[task_id, outcome]` pairs in
        chunks (a Ray streaming call), so one call carries a batch both ways.

        Each task's handler start is reported too (`{"status": "started"}`), in the chunk
        that carries the next outcomes. The tasks belong to this host, not to the call: if
        the caller goes away they still run, and their outcomes wait for `adopt`. Outcomes
        that are ready go back together, but never wait more than `REPORT_AFTER_S` behind
        a task still running.
        """
        loop = asyncio.get_running_loop()
        jobs: list[Job] = []
        to_run: list[Job] = []
        ready: list[Any] = []
        for task in tasks:
            if not isinstance(task, dict):
                refusal = LogicalError(f"a task must be a dict, got {type(task).__name__}")
                ready.append([str(uuid4()), failed(refusal)])
                continue
            task_id = str(task.get("id") or uuid4())
            lease = task.get("lease")
            lease = int(lease) if isinstance(lease, int) else int(task.get("attempt") or 0)
            try:
                job, new = self._ledger.admit(task_id, lease, task, loop)
            except ValueError as exc:
                ready.append([task_id, failed(LogicalError(str(exc)))])
                continue
            jobs.append(job)
            if new:
                to_run.append(job)
        if to_run:
            driver = loop.create_task(self._drive(to_run))
            self._drivers.add(driver)
            driver.add_done_callback(self._drivers.discard)
        async for chunk in self._report(jobs, ready):
            yield chunk

    async def adopt(self, leases: dict[str, int]) -> AsyncIterator[list[Any]]:
        """A task manager's new incarnation asks what this host holds of its leases
        (`task_id: lease`): at once, each one's outcome if it ended, `started` if its
        handler runs, `unknown` if this host does not hold it; then the outcomes of the
        rest as they come, in chunks as `run_many` sends them."""
        answers, pending = self._ledger.holding({str(k): int(v) for k, v in leases.items()})
        async for chunk in self._report(pending, [[k, v] for k, v in answers.items()]):
            yield chunk

    async def _report(self, jobs: list[Job], ready: list[Any]) -> AsyncIterator[list[Any]]:
        """Stream the starts and outcomes of `jobs` (after `ready`) until all have ended."""
        self._streams += 1
        try:
            async for chunk in stream_reports(jobs, ready, REPORT_AFTER_S):
                yield chunk
        finally:
            self._streams -= 1

    @ray.method(concurrency_group=CONTROL_GROUP)
    async def cancel(self, task_id: str) -> bool:
        """Cancel a running or queued task; False if this agent has no such task yet.

        This runs on the control group, so it can overtake the call that brings the task:
        such a cancel is remembered, and the task is refused as cancelled when it comes."""
        held, handler = self._ledger.cancel(str(task_id))
        if handler is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(handler.cancel)
        return held

    async def describe(self) -> dict[str, Any]:
        """Who and how this agent is, for the supervisor, the API and tests."""
        return {
            "agent_id": self.child_id or None,
            "supervisor_id": self.supervisor_id or None,
            "state": self._lifecycle.state.value,
            "capabilities": list(self._capabilities),
            "prefetch": self.agent.prefetch if self.agent is not None else 1,
            "agent_class": self.agent_class,
            "template": self.template,
            "pid": os.getpid(),
            "warm": self.agent is not None,
            "ready": self._ready,
            "active_tasks": self._ledger.active(),
            "saved_state": dict(self.ctx.state) if self.ctx is not None else None,
        }

    # ---- internals: tasks ----------------------------------------------------------------

    def _refusal(self, job: Job) -> dict[str, Any] | None:
        """The outcome of a job this agent will not start (cancelled, or handed back with
        no attempt spent), or None."""
        if job.cancel_requested:
            return {"status": "cancelled"}
        state = self._lifecycle.state
        if (job.interrupted or self._stopping or not self._ready
                or state not in (AgentState.IDLE, AgentState.BUSY)):  # fmt: skip
            return INTERRUPTED
        return None

    async def _drive(self, jobs: list[Job]) -> None:
        """Run a batch's jobs in order, one at a time across batches (the task lock)."""
        for job in jobs:
            try:
                outcome = await self._run_job(job)
            except BaseException as exc:  # never leave a job without an outcome
                outcome = INTERRUPTED
                if not isinstance(exc, asyncio.CancelledError):
                    _log.exception("agent %s: running task %s failed", self.child_id, job.task_id)
            notify(job, self._ledger.finish(job, outcome))

    async def _run_job(self, job: Job) -> dict[str, Any]:
        async with self._task_lock:
            refusal = self._refusal(job)
            if refusal is not None:
                return refusal
            if self._lifecycle.state is not AgentState.BUSY:
                try:
                    await self._transition(AgentState.BUSY, f"task {job.task_id}")
                except (*_DB_ERRORS, Conflict) as exc:  # bookkeeping: the work goes on
                    _log.warning("agent %s: cannot record busy: %r", self.child_id, exc)
            return await self._run_handler(job)

    async def _run_handler(self, job: Job) -> dict[str, Any]:
        assert self.agent is not None and self.ctx is not None
        ctx = self.ctx
        ctx.task = job.envelope
        envelope = job.envelope
        attributes = {"task.id": job.task_id, "agent.id": self.child_id,
                      "attempt": envelope.get("attempt"), "lease": envelope.get("lease"),
                      "capability": ",".join(self._capabilities) or None}  # fmt: skip
        # the handler's task copies this context: its tool calls, asks and model calls are
        # children of `agent.handle`, and its log records name the task
        with (
            telemetry.span("agent.handle", envelope.get("trace"), attributes) as span,
            logs.bound(task_id=job.task_id, agent_id=self.child_id),
        ):
            handler = asyncio.get_running_loop().create_task(self.agent.handle(envelope, ctx))
            if self._ledger.started(job, handler):
                notify(job, STARTED)
            try:
                await asyncio.wait({handler})
            finally:
                ctx.task = None
            limit = self.settings.max_result_bytes if self.settings else None
            outcome, error = handler_outcome(handler, limit)
            if span is not None and outcome.get("status") != "completed":
                telemetry.mark_error(span, error or str(outcome.get("status")))
        events: list[Event] = []
        category = classify(error) if error is not None else None
        self._fatal_in_a_row = self._fatal_in_a_row + 1 if category == "fatal" else 0
        next_state, reason = AgentState.IDLE, ""
        if error is not None:
            ctx.log.warning("task %s failed (%s): %r", job.task_id, category, error)
            events.append(
                AgentErrorRaised(
                    agent_id=self.child_id,
                    error_type=type(error).__name__,
                    message=str(error)[:2000],
                    task_id=_uuid_or_none(job.task_id),
                    category=category,
                )
            )
            if self._fatal_in_a_row >= FATAL_IN_A_ROW:
                next_state = AgentState.ERROR
                reason = f"{self._fatal_in_a_row} fatal failures in a row: {error!r}"[:500]
        try:
            if next_state is AgentState.IDLE:  # busy until the work stops coming
                await self._record_events(events)
                self._idle_soon()
            else:
                await self._transition(next_state, reason, events, keep_on_failure=True)
        except (*_DB_ERRORS, Conflict) as exc:  # the work is done: never lose its outcome
            ctx.log.warning("could not record %s after task %s: %r", next_state, job.task_id, exc)
            self._unwritten.extend(events)
        if next_state is AgentState.ERROR:
            self.exit_child("fatal", reason)
        return outcome

    def _idle_soon(self) -> None:
        """Record `idle` once no task has come for IDLE_LINGER_S: under a stream of tasks
        the agent stays `busy`, instead of writing busy/idle twice per task (and a task
        that comes while it is `busy` starts without a write)."""
        loop = asyncio.get_running_loop()
        self._last_work_at = loop.time()
        if self._idle_later is None or self._idle_later.done():
            self._idle_later = loop.create_task(self._idle_after_linger())

    async def _idle_after_linger(self) -> None:
        loop = asyncio.get_running_loop()
        delay_s = IDLE_LINGER_S
        while True:
            await asyncio.sleep(delay_s)
            delay_s = self._last_work_at + IDLE_LINGER_S - loop.time()
            if delay_s > 0:
                continue  # a task ended meanwhile: linger from its end
            delay_s = IDLE_LINGER_S
            async with self._task_lock:
                if self._ledger.busy():
                    continue
                if self._unwritten:
                    with contextlib.suppress(*_DB_ERRORS, Conflict):
                        await self._record_events(self._unwritten)
                        self._unwritten.clear()
                if self._lifecycle.state is AgentState.BUSY and not self._stopping:
                    with contextlib.suppress(*_DB_ERRORS, Conflict):
                        await self._transition(AgentState.IDLE, "no more work")
                return

    async def _record_events(self, events: list[Event]) -> None:
        if events:
            assert self._pool is not None
            async with self._pool.acquire() as conn, conn.transaction():
                await outbox.add(conn, events)

    # ---- internals: heartbeat and connections --------------------------------------------

    async def _heartbeat_loop(self, interval_s: float) -> None:
        """Publish a heartbeat every `interval_s`; the lag is how late the loop woke it."""
        loop = asyncio.get_running_loop()
        due = loop.time() + interval_s
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            lag_s = max(0.0, now - due)
            due = now + interval_s
            bus = self._bus
            if bus is None:
                continue
            event = AgentHeartbeat(
                agent_id=self.child_id,
                state=self._lifecycle.state,
                loop_lag_ms=lag_s * 1000.0,
                active_tasks=len(self._ledger.active()),
            )
            try:
                await bus.publish(event, timeout_s=interval_s)
            except Exception as exc:  # NATS down: the next beat tries again
                _log.debug("heartbeat of %s not sent: %r", self.child_id, exc)

    async def _close_connections(self) -> None:
        for pending in (self._bus_task, self._bus_ready):
            if pending is not None and not pending.done():
                pending.cancel()
        bus, pool = self._bus, self._pool
        self._bus = self._pool = None
        if bus is not None:
            with contextlib.suppress(Exception):
                await bus.close()
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5)
