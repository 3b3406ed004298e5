"""`Supervisor`: the Ray actor that starts, watches and restarts its children.

Guarantees, as in OTP's supervisor:
- Children start in spec order (a `simple_one_for_one` pool's members, which have no
  order, together) and stop in reverse order; a graceful stop waits the child's
  `shutdown_s`, then kills it.
- A child's death is seen within milliseconds (its pending `rv_monitor` call fails), a
  hang within `(misses + 1) * interval_s` (pings that fail, time out or see the child's
  loop stalled for more than one interval), and a fatal error when the child reports it.
- Restarts follow the strategy and the restart type; each waits the child's backoff.
  More than `max_restarts` in `period_s` either escalates (stop every child, fail, let
  the parent restart this supervisor) or opens the failing child's circuit (never for a
  child with `circuit_breaker=False`: it escalates, or restarts on its capped backoff).
- Failures overlap and each is handled whatever this supervisor is doing (starting its
  children, restarting others), unless it is stopping: restarts of different children run
  concurrently (at most `_START_SLOTS` starts at once), each child has its own lock, and a
  group restart (one_for_all, rest_for_one) takes its members' locks in start order, then
  stops and starts them in order. Each start has its own `start_timeout_s`; a start past
  it is killed and counts as a failed start, without holding up anyone else.
- Invariant: every permanent child of a supervisor that is not stopping is `running`
  (or, with a circuit breaker, `circuit_open`) within its backoff delay + its start
  (at most `start_timeout_s`, plus up to `_NAME_RETRY_S` for a dead predecessor's name)
  of its failure; a failed start only repeats that, on a longer backoff. Past the
  intensity the supervisor may escalate instead: then its parent restarts it, and it
  starts the child again.
- A child whose circuit is open is neither restarted nor given work until its timeout
  passes; then one probe start, and one healthy heartbeat closes the circuit again.
- An agent child that exits abnormally or whose circuit opens is reported to every task
  manager shard (`agent_down`), fire-and-forget, so no more work goes to it.
- A `simple_one_for_one` pool persists its members in PostgreSQL, so a restarted
  supervisor starts the same members again; `standby` spares make a restart a promotion.
- `warm_workers` idle Ray worker processes (generic, bound to no child) wait in Ray's own
  worker pool, so a restart creates its actor in one of them instead of starting a process.
- Every decision is one event, written to `supervisor_events` and the outbox (so it
  reaches `supervisors.{id}.events`) by one writer task, in order, off the restart path;
  a write that fails (PostgreSQL unreachable) is retried until it succeeds.

This module holds the mechanics (starting, stopping, deciding, restarting); the parts that
decide nothing are mixins in modules of their own: failure detection (`detection`), the
children added at run time (`dynamic`), what it reports (`reporting`) and the warm spares
(`warm`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import ray

from runtime import metrics
from runtime.config import load_settings
from runtime.models.enums import SupervisorEventKind as Kind
from runtime.models.events import SupervisorDecision
from runtime.models.records import AgentTemplate
from runtime.policies import Backoff, CircuitBreaker, CircuitState, RestartIntensity
from runtime.preload import PRELOAD_ENV
from runtime.store import agents as agent_store
from runtime.store import supervision
from runtime.store.pool import create_pool
from supervisors.child import CONCURRENCY_GROUPS, Supervised
from supervisors.child_state import Child, ChildState
from supervisors.detection import FailureDetection
from supervisors.dynamic import DynamicChildren
from supervisors.events import retry_until, write_in_order
from supervisors.link import kill
from supervisors.reporting import Reporting
from supervisors.spec import ChildSpec, OnIntensity, Restart, Strategy, SupervisorSpec
from supervisors.strategies import restart_targets
from supervisors.warm import WarmSpares

__all__ = ["ChildState", "Supervisor", "remote_class"]

_log = logging.getLogger(__name__)
_NAME_RETRY_S = 5.0
_ORPHAN_AFTER_S = 0.5  # a name held this long is not a predecessor being released
_START_SLOTS = 8  # starts (creations + on_start) of one supervisor in flight at once
_STORE_BUDGET_S = 30.0  # how long a start waits for an unreachable PostgreSQL
_DOWN = ("stopping", "stopped", "failed")  # supervisor states that handle no failure
# agent hosts run with their modules preloaded as their worker starts (runtime.preload), so
# a warm worker prestarted with this env has them loaded when a restart takes it
_AGENT_RUNTIME_ENV = {"env_vars": {PRELOAD_ENV: "actors.host:build_models,runtime.bus:import_nats"}}


_remote_classes: dict[type, Any] = {}


def remote_class(cls: type) -> Any:
    """The Ray actor class for a Supervised class, with the control concurrency group."""
    if hasattr(cls, "remote"):
        return cls
    if cls not in _remote_classes:
        _remote_classes[cls] = ray.remote(
            concurrency_groups=CONCURRENCY_GROUPS, max_concurrency=1000
        )(cls)
    return _remote_classes[cls]


def _import(path: str) -> type:
    module, _, name = path.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), name)


def _kill_orphan(name: str, namespace: str) -> None:
    """Kill the live actor holding a child's name. This supervisor killed its own
    predecessor of the child already (whose name Ray frees within milliseconds), so a
    holder still alive is an orphan: a child of a dead incarnation of this supervisor
    (its node lost) that Ray has not yet failed with its owner, which it does only once it
    declares the owner's node dead (health checks, ~15 s by default)."""
    try:
        holder = ray.get_actor(name, namespace=namespace)
    except ValueError:  # released meanwhile
        return
    _log.warning("killing %s, left over from a dead supervisor", name)
    kill(holder)


class StartTimeout(Exception):
    """A child's start took longer than its `start_timeout_s`; the actor was killed."""


class Supervisor(FailureDetection, DynamicChildren, Reporting, WarmSpares, Supervised):
    """Starts, watches and restarts its children; see the module docstring."""

    def __init__(
        self, spec: dict[str, Any], namespace: str | None = None, autostart: bool = False
    ) -> None:
        super().__init__()
        self.spec = SupervisorSpec.model_validate(spec)
        self.children: list[Child] = []
        self.intensity = RestartIntensity(self.spec.max_restarts, self.spec.period_s)
        self.state = "created"
        self.restarts = 0
        self.namespace = namespace or ray.get_runtime_context().namespace
        self._lock = asyncio.Lock()  # allocates pool member ids; children have their own
        self._slots = asyncio.Semaphore(_START_SLOTS)
        self._tm_shards = 1
        self._events: asyncio.Queue[SupervisorDecision] = asyncio.Queue()
        self._spares: list[Any] = []
        self._filling = False
        self._background: set[asyncio.Task[Any]] = set()
        self._pool: Any = None
        self._started = asyncio.Event()
        self._warm: list[tuple[float, float]] = []  # (asked at, keep-alive ends), monotonic
        self._warm_env: str | None = None  # the runtime env the warm workers are for
        if autostart:  # a root restarted by Ray rebuilds its tree by itself
            ray.get_runtime_context().current_actor.rv_start.remote(self.spec.id, "", namespace)

    # ---- lifecycle -------------------------------------------------------------------

    async def on_start(self) -> None:
        settings = load_settings()
        if settings.database_dsn is None:
            raise RuntimeError("RAYVISOR_DATABASE_URL is not set in this worker")
        self._tm_shards = settings.task_shards
        dsn = settings.database_dsn
        self._pool = await retry_until(
            lambda: create_pool(dsn, min_size=1, max_size=2),
            budget_s=_STORE_BUDGET_S,
            label=f"{self.spec.id}: connecting to PostgreSQL",
        )
        self._writer = asyncio.get_running_loop().create_task(
            write_in_order(self._events, self._record, label=self.spec.id)
        )
        self._spawn(metrics.reporter(self.namespace, self._report_metrics))
        if self.spec.template is not None and self.spec.template.agent:
            await self._record_template(self.spec.template)
        self.state = "starting"
        specs = await retry_until(
            self._initial_children, budget_s=_STORE_BUDGET_S, label=f"{self.spec.id}: children"
        )
        for spec in specs:
            self.children.append(self._new_child(spec))
        if self.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE:  # no order among members
            await asyncio.gather(*(self._first_start(c) for c in list(self.children)))
        else:
            for child in list(self.children):
                await self._first_start(child)
        if self.state in _DOWN:  # escalated (or stopped) while starting: say so
            self._started.set()
            return
        self._spawn(self._fill_standby())
        self.state = "running"
        self._started.set()
        if self.spec.warm_workers:
            self._spawn(self._keep_warm())

    async def _record_template(self, template: ChildSpec) -> None:
        """Make the pool's template known (`agent_templates`): a plan is checked against
        the capabilities the templates offer. Bookkeeping: a failure does not stop the pool."""
        try:
            agent_class = _import(template.agent or "")
            record = AgentTemplate(
                name=template.template or template.id.replace("-", "_"),
                class_path=template.agent or "",
                capabilities=sorted(getattr(agent_class, "capabilities", ())),
                parameters=dict(template.params),
                description=(agent_class.__doc__ or "").strip().split("\n")[0][:500],
            )
            await agent_store.upsert_template(self._pool, record)
        except Exception:
            _log.warning("%s: could not record its template", self.spec.id, exc_info=True)

    async def _first_start(self, child: Child) -> None:
        if self.state in _DOWN:
            return
        async with child.lock:  # a failed sibling's group restart may have started it
            if child.generation == 0 and child in self.children and self.state not in _DOWN:
                await self._start_or_handle_failure(child)

    async def wait_started(self) -> str:
        await self._started.wait()
        return self.state

    async def on_stop(self) -> None:
        await self._stop_all(reason="shutdown")
        await self._drain_events()

    async def _initial_children(self) -> list[ChildSpec]:
        if self.spec.strategy is not Strategy.SIMPLE_ONE_FOR_ONE:  # its spec's, then added
            added = await supervision.children(self._pool, self._added_key)
            static = {c.id for c in self.spec.children}
            extra = [ChildSpec.model_validate(s) for i, s in added if i not in static]
            return [*self.spec.children, *extra]
        saved = await supervision.children(self._pool, self.spec.id)
        if saved:  # which members there are; each made from the pool's template as it is now
            return [self._member_spec(child_id, spec) for child_id, spec in saved]
        specs = [self._pool_spec(n) for n in range(1, self.spec.size + 1)]
        async with self._pool.acquire() as conn, conn.transaction():  # all or none
            for spec in specs:
                await supervision.save_child(
                    conn, self.spec.id, spec.id, spec.model_dump(mode="json")
                )
        return specs

    def _member_spec(self, child_id: str, saved: dict[str, Any]) -> ChildSpec:
        """A saved pool member, from the current template: a changed rayvisor.yaml (the
        pool's params, its tools) applies to the members a restart brings back."""
        if self.spec.template is None:
            return ChildSpec.model_validate(saved)
        return self.spec.template.with_id(child_id)

    def _pool_spec(self, n: int) -> ChildSpec:
        assert self.spec.template is not None
        return self.spec.template.with_id(self.spec.pool_child_id(n))

    def _new_child(self, spec: ChildSpec) -> Child:
        b, c = self.spec.backoff, self.spec.breaker
        return Child(
            spec=spec,
            backoff=Backoff(b.min_s, b.max_s, b.jitter, b.reset_after_s),
            breaker=CircuitBreaker(c.failure_threshold, c.reset_timeout_s, c.max_reset_timeout_s),
        )

    # ---- starting and stopping one child ------------------------------------------

    def _actor_class_and_args(self, spec: ChildSpec) -> tuple[Any, tuple[Any, ...], dict]:
        if spec.supervisor is not None:
            spec_json = spec.supervisor.model_dump(mode="json")
            return remote_class(Supervisor), (spec_json, self.namespace), {}
        if spec.agent is not None:
            from actors.host import AgentHost

            args = (spec.agent, spec.params, spec.template)
            return remote_class(AgentHost), args, dict(spec.kwargs)
        return remote_class(_import(spec.actor or "")), tuple(spec.args), dict(spec.kwargs)

    async def _create(self, spec: ChildSpec, name: str | None) -> Any:
        cls, args, kwargs = self._actor_class_and_args(spec)
        options: dict[str, Any] = {"namespace": self.namespace, "num_cpus": spec.num_cpus}
        if name:
            options["name"] = name
        if spec.agent is not None:
            options["runtime_env"] = _AGENT_RUNTIME_ENV
        if spec.placement == "spread":
            options["scheduling_strategy"] = "SPREAD"
        began = time.monotonic()
        orphan_check = bool(name)
        while True:
            try:
                handle = cls.options(**options).remote(*args, **kwargs)
            except ValueError as exc:  # the dead predecessor still holds the name
                if "already" not in str(exc) or time.monotonic() - began > _NAME_RETRY_S:
                    raise
                if orphan_check and time.monotonic() - began > _ORPHAN_AFTER_S:
                    orphan_check = False
                    await asyncio.to_thread(_kill_orphan, name or "", self.namespace)
                await asyncio.sleep(0.002)
            else:
                self._warm_taken()
                return handle

    async def _start(self, child: Child) -> None:
        """Start (or promote a spare for) one child and link to it; the caller holds the
        child's lock. A start past `start_timeout_s` is killed and raises `StartTimeout`."""
        child.retire()
        child.state = ChildState.STARTING
        child.kill_reason = None
        async with self._slots:
            handle = self._take_spare(child.spec)
            if handle is None:
                handle = await self._create(child.spec, child.spec.actor_name)
            child.handle = handle
            generation = child.generation
            monitor = handle.rv_monitor.remote()
            timeout_s = child.spec.start_timeout_s
            try:
                child.info = await asyncio.wait_for(
                    handle.rv_start.remote(child.spec.id, self.spec.id, self.namespace),
                    timeout_s,
                )
            except BaseException as exc:
                if child.generation == generation:
                    child.retire()
                kill(handle)
                if isinstance(exc, TimeoutError):
                    raise StartTimeout(f"start took longer than {timeout_s}s: killed") from None
                raise
        now = time.monotonic()
        child.state = ChildState.RUNNING
        child.started_at = now
        child.backoff.started(now)
        child.tasks = [
            asyncio.create_task(self._watch(child, generation, monitor)),
            asyncio.create_task(self._heartbeat(child, generation)),
        ]
        self._emit(Kind.CHILD_STARTED, child, detail=child.info)
        if self._warm_env is None and self.spec.warm_workers:
            self._spawn(self._learn_warm_env(child))
        if self.spec.standby and len(self._spares) < self.spec.standby:
            self._spawn(self._fill_standby())  # after the promotion, not competing with it

    async def _start_or_handle_failure(self, child: Child) -> bool:
        try:
            await self._start(child)
            return True
        except Exception as exc:
            _log.warning("%s: starting %s failed: %r", self.spec.id, child.spec.id, exc)
            await self._child_exited(child, f"start failed: {exc!r}"[:500], abnormal=True)
            return False

    async def _stop(self, child: Child, reason: str) -> None:
        """Graceful stop within `shutdown_s`, then kill."""
        if child.handle is None:
            child.state = ChildState.STOPPED
            return
        child.state = ChildState.STOPPING
        handle = child.retire()
        try:
            await asyncio.wait_for(handle.rv_stop.remote(), child.spec.shutdown_s)
        except Exception as exc:
            _log.info("%s: %s did not stop gracefully: %r", self.spec.id, child.spec.id, exc)
        kill(handle)
        child.state = ChildState.STOPPED

    async def _stop_all(self, reason: str) -> None:
        if self.state not in _DOWN:
            self.state = "stopping"  # from here no failure is handled and nothing restarts
        for task in list(self._background):
            if task is not asyncio.current_task():
                task.cancel()
        for spare in self._spares:
            kill(spare)
        self._spares.clear()
        for child in reversed(list(self.children)):
            async with child.lock:  # a start in flight finishes (or times out) first
                await self._stop(child, reason)
        self.state = "stopped"
        self._emit(Kind.SUPERVISOR_STOPPED, None, reason)

    # ---- deciding what a failure means ---------------------------------------------

    async def _child_exited(self, child: Child, reason: str, abnormal: bool) -> None:
        """Decide about a child that ended; the caller holds its lock. Never waits on
        anything but the store (for a forgotten pool member): every restart is scheduled."""
        child.state = ChildState.STOPPED
        self._emit(Kind.CHILD_EXITED, child, reason, {"abnormal": abnormal})
        try:
            await self._decide(child, reason, abnormal)
        finally:
            if child.spec.agent is not None and (
                abnormal or child.state is ChildState.CIRCUIT_OPEN
            ):
                self._agent_down(child.spec.id)

    async def _decide(self, child: Child, reason: str, abnormal: bool) -> None:
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and not abnormal):
            await self._forget(child)
            return
        if self.state in _DOWN:
            return
        now = time.monotonic()
        child.probing = False
        breaker = child.spec.circuit_breaker
        if breaker and child.breaker.record_failure(now) is CircuitState.OPEN:
            self._open_circuit(child, reason)
            return
        if not self.intensity.add_restart(now):
            if self.spec.on_intensity is OnIntensity.ESCALATE:
                self.state = "failed"  # at once: no other failure schedules anything now
                self._spawn(self._escalate(child, reason))
                return
            if breaker:
                while child.breaker.record_failure(now) is not CircuitState.OPEN:
                    pass
                self._open_circuit(child, f"restart intensity exceeded: {reason}")
                return
            # never parked: restarted on its backoff, which is capped at backoff.max_s
        targets = restart_targets(self.spec.strategy, self.children, child)
        delay = child.backoff.next_delay(now)
        child.state = ChildState.RESTARTING
        self._emit(
            Kind.RESTART_SCHEDULED,
            child,
            reason,
            {"delay_s": round(delay, 4), "targets": [c.spec.id for c in targets]},
        )
        self._spawn(self._restart_after(delay, child, child.generation, targets))

    @contextlib.asynccontextmanager
    async def _locked(self, children: list[Child]) -> AsyncIterator[None]:
        """Hold the locks of `children`, taken in start order (so two group restarts never
        wait on each other crosswise)."""

        def order(c: Child) -> int:
            return self.children.index(c) if c in self.children else len(self.children)

        async with contextlib.AsyncExitStack() as stack:
            for child in sorted(children, key=order):
                await stack.enter_async_context(child.lock)
            yield

    async def _restart_after(
        self, delay: float, failed: Child, generation: int, targets: list[Child]
    ) -> None:
        """Restart `failed` (and its group) after its backoff, unless someone else (a group
        restart, terminate_child, a stop) has dealt with it meanwhile."""
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await self._restart(failed, generation, targets)
        except Exception:  # never leave a child restarting with nothing scheduled
            _log.exception("%s: restarting %s failed", self.spec.id, failed.spec.id)
            async with failed.lock:
                if failed.generation == generation and failed in self.children:
                    await self._child_exited(failed, "restart failed", abnormal=True)

    async def _restart(self, failed: Child, generation: int, targets: list[Child]) -> None:
        async with self._locked(targets):
            if self.state in _DOWN or failed not in self.children:
                return
            if failed.generation != generation:
                return  # a group restart or a probe started it again already
            for sibling in reversed(targets):
                if sibling is not failed and sibling.state is ChildState.RUNNING:
                    await self._stop(sibling, f"sibling {failed.spec.id} failed")
            for child in targets:
                if self.state in _DOWN:
                    return
                waiting = (ChildState.STOPPED, ChildState.RESTARTING)
                if child is not failed and (
                    child.state not in waiting or child not in self.children
                ):
                    continue
                if await self._start_or_handle_failure(child):
                    child.restarts += 1
                    self.restarts += 1
                    self._emit(Kind.RESTARTED, child, detail=child.info)

    def _open_circuit(self, child: Child, reason: str) -> None:
        child.state = ChildState.CIRCUIT_OPEN
        retry_in = max(0.0, (child.breaker.retry_at or 0.0) - time.monotonic())
        self._emit(Kind.CIRCUIT_OPENED, child, reason, {"retry_in_s": round(retry_in, 3)})
        self._spawn(self._half_open_later(child, child.generation, retry_in))

    async def _half_open_later(self, child: Child, generation: int, delay: float) -> None:
        await asyncio.sleep(delay)
        # a timer may fire a hair early; never leave a circuit open with nothing scheduled
        while child.breaker.state_at(time.monotonic()) is CircuitState.OPEN:
            await asyncio.sleep(max(0.001, (child.breaker.retry_at or 0) - time.monotonic()))
        async with child.lock:
            if self.state in _DOWN or child not in self.children:
                return
            if child.generation != generation or child.state is not ChildState.CIRCUIT_OPEN:
                return  # started again meanwhile (a sibling's group restart)
            now = time.monotonic()
            child.breaker.poll(now)
            if not child.breaker.try_acquire_probe(now):
                return
            self._emit(Kind.CIRCUIT_HALF_OPEN, child, "probe start")
            child.probing = True
            if await self._start_or_handle_failure(child):
                child.restarts += 1
                self.restarts += 1
                self._emit(Kind.RESTARTED, child, "probe", child.info)

    async def _escalate(self, child: Child, reason: str) -> None:
        self.state = "failed"
        self._emit(Kind.ESCALATED, child, f"restart intensity exceeded: {reason}")
        await self._stop_all(reason="escalated")
        await self._drain_events()
        if self.supervisor_id:
            self.exit_child("fatal", f"{self.spec.id} exceeded its restart intensity")
        else:  # the root has no parent: fail the process and let Ray restart it
            os._exit(1)

    async def _forget(self, child: Child) -> None:
        """A child that will not come back: leave the pool (and its persisted row)."""
        if self.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE and child in self.children:
            self.children.remove(child)
            try:
                await supervision.remove_child(self._pool, self.spec.id, child.spec.id)
            except Exception as exc:  # it is gone here; a restarted supervisor may revive it
                _log.warning("%s: could not forget %s: %r", self.spec.id, child.spec.id, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
