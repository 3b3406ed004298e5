"""`Supervisor`: the Ray actor that starts, watches and restarts its children.

Guarantees, as in OTP's supervisor:
- Children start in spec order and stop in reverse order; a graceful stop waits the
  child's `shutdown_s`, then kills it.
- A child's death is seen within milliseconds (its pending `rv_monitor` call fails), a
  hang within `(misses + 1) * interval_s` (pings that fail, time out or see the child's
  loop stalled for more than one interval), and a fatal error when the child reports it.
- Restarts follow the strategy and the restart type; each waits the child's backoff.
  More than `max_restarts` in `period_s` either escalates (stop every child, fail, let
  the parent restart this supervisor) or opens the failing child's circuit.
- A child whose circuit is open is neither restarted nor given work until its timeout
  passes; then one probe start, and one healthy heartbeat closes the circuit again.
- A `simple_one_for_one` pool persists its members in PostgreSQL, so a restarted
  supervisor starts the same members again; `standby` spares make a restart a promotion.
- `warm_workers` idle Ray worker processes (generic, bound to no child) wait in Ray's own
  worker pool, so a restart creates its actor in one of them instead of starting a process.
- Every decision is one event, written to `supervisor_events` and the outbox (so it
  reaches `supervisors.{id}.events`) by one writer task, in order, off the restart path.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import ray
from ray.exceptions import RayError
from ray.util.metrics import Counter, Gauge

from runtime.config import load_settings
from runtime.models.enums import SupervisorEventKind as Kind
from runtime.models.events import SupervisorDecision
from runtime.policies import Backoff, CircuitBreaker, CircuitState, RestartIntensity
from runtime.preload import PRELOAD_ENV
from runtime.raycluster import prestart_workers
from runtime.store import supervision
from runtime.store.pool import create_pool
from supervisors.child import CONCURRENCY_GROUPS, Supervised
from supervisors.spec import ChildKind, ChildSpec, OnIntensity, Restart, Strategy, SupervisorSpec
from supervisors.strategies import restart_targets

__all__ = ["ChildState", "Supervisor", "remote_class"]

_log = logging.getLogger(__name__)
_NAME_RETRY_S = 5.0
_START_TIMEOUT_S = 120.0
_WARM_KEEP_ALIVE_S = 120
# a warm worker asked for less than this long ago may not be registered yet, so a creation
# then most likely started its own process and left the warm worker idle
_WARM_START_S = 2.0
# agent hosts run with their modules preloaded as their worker starts (runtime.preload), so
# a warm worker prestarted with this env has them loaded when a restart takes it
_AGENT_RUNTIME_ENV = {"env_vars": {PRELOAD_ENV: "actors.host:build_models,nats"}}


class ChildState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RESTARTING = "restarting"
    CIRCUIT_OPEN = "circuit_open"


@dataclass
class _Child:
    spec: ChildSpec
    backoff: Backoff
    breaker: CircuitBreaker
    state: ChildState = ChildState.STOPPED
    handle: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    generation: int = 0  # bumped whenever the current actor is retired: stale news is ignored
    restarts: int = 0
    started_at: float = 0.0
    kill_reason: str | None = None
    probing: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def retire(self) -> Any:
        """Forget the current actor (its watcher and pings go quiet); returns its handle."""
        self.generation += 1
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
        handle, self.handle = self.handle, None
        return handle


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


class _ProcessGone(Exception):
    """A child's process ended (seen through its pidfd before Ray reported it)."""


_node_ids: list[str] = []


async def _link(monitor: Any, info: dict[str, Any]) -> Any:
    """`await monitor`; for a child on this node, also watch its process through a Linux
    pidfd and raise `_ProcessGone` the moment the process ends: Ray reports the death
    ~15-30 ms later, a pidfd at once."""
    if not _node_ids:
        _node_ids.append(ray.get_runtime_context().get_node_id())
    pid = info.get("pid")
    if not (pid and info.get("node_id") == _node_ids[0] and hasattr(os, "pidfd_open")):
        return await monitor
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # gone already, or no pidfd here: Ray's report will do
        return await monitor
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, readable)
    waiting = asyncio.ensure_future(monitor)
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            return waiting.result()
        raise _ProcessGone(f"process {pid} ended")
    finally:
        loop.remove_reader(fd)
        os.close(fd)
        waiting.cancel()
        gone.cancel()


def _kill(handle: Any) -> None:
    if handle is not None:
        with contextlib.suppress(Exception):
            ray.kill(handle, no_restart=True)


class Supervisor(Supervised):
    """Starts, watches and restarts its children; see the module docstring."""

    def __init__(
        self, spec: dict[str, Any], namespace: str | None = None, autostart: bool = False
    ) -> None:
        super().__init__()
        self.spec = SupervisorSpec.model_validate(spec)
        self.children: list[_Child] = []
        self.intensity = RestartIntensity(self.spec.max_restarts, self.spec.period_s)
        self.state = "created"
        self.restarts = 0
        self.namespace = namespace or ray.get_runtime_context().namespace
        self._lock = asyncio.Lock()
        self._events: asyncio.Queue[SupervisorDecision] = asyncio.Queue()
        self._spares: list[Any] = []
        self._filling = False
        self._background: set[asyncio.Task[Any]] = set()
        self._pool: Any = None
        self._started = asyncio.Event()
        self._warm: list[tuple[float, float]] = []  # (asked at, keep-alive ends), monotonic
        self._warm_env: str | None = None  # the runtime env the warm workers are for
        tags = ("supervisor", "child")
        self._restarts_metric = Counter(
            "rayvisor_restarts", "Children restarted, by supervisor and child", tags
        )
        self._breaker_metric = Gauge(
            "rayvisor_breaker_open", "1 while a child's circuit is open or half-open", tags
        )
        if autostart:  # a root restarted by Ray rebuilds its tree by itself
            ray.get_runtime_context().current_actor.rv_start.remote(self.spec.id, "", namespace)

    # ---- lifecycle -------------------------------------------------------------------

    async def on_start(self) -> None:
        settings = load_settings()
        if settings.database_dsn is None:
            raise RuntimeError("RAYVISOR_DATABASE_URL is not set in this worker")
        self._pool = await create_pool(settings.database_dsn, min_size=1, max_size=2)
        self._writer = asyncio.get_running_loop().create_task(self._write_events())
        self.state = "starting"
        for spec in await self._initial_children():
            self.children.append(self._new_child(spec))
        for child in self.children:
            await self._start_or_handle_failure(child)
        self._spawn(self._fill_standby())
        self.state = "running"
        self._started.set()
        if self.spec.warm_workers:
            self._spawn(self._keep_warm())

    async def wait_started(self) -> str:
        await self._started.wait()
        return self.state

    async def on_stop(self) -> None:
        await self._stop_all(reason="shutdown")
        await self._drain_events()

    async def _initial_children(self) -> list[ChildSpec]:
        if self.spec.strategy is not Strategy.SIMPLE_ONE_FOR_ONE:
            return list(self.spec.children)
        saved = await supervision.children(self._pool, self.spec.id)
        if saved:
            return [ChildSpec.model_validate(spec) for _, spec in saved]
        specs = [self._pool_spec(n) for n in range(1, self.spec.size + 1)]
        for spec in specs:
            await supervision.save_child(
                self._pool, self.spec.id, spec.id, spec.model_dump(mode="json")
            )
        return specs

    def _pool_spec(self, n: int) -> ChildSpec:
        assert self.spec.template is not None
        return self.spec.template.with_id(self.spec.pool_child_id(n))

    def _new_child(self, spec: ChildSpec) -> _Child:
        b, c = self.spec.backoff, self.spec.breaker
        return _Child(
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

            return remote_class(AgentHost), (spec.agent, spec.params, spec.template), {}
        return remote_class(_import(spec.actor or "")), tuple(spec.args), dict(spec.kwargs)

    async def _create(self, spec: ChildSpec, name: str | None) -> Any:
        cls, args, kwargs = self._actor_class_and_args(spec)
        options: dict[str, Any] = {"namespace": self.namespace, "num_cpus": spec.num_cpus}
        if name:
            options["name"] = name
        if spec.agent is not None:
            options["runtime_env"] = _AGENT_RUNTIME_ENV
        deadline = time.monotonic() + _NAME_RETRY_S
        while True:
            try:
                handle = cls.options(**options).remote(*args, **kwargs)
            except ValueError as exc:  # the dead predecessor still holds the name
                if "already" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.002)
            else:
                self._warm_taken()
                return handle

    async def _start(self, child: _Child) -> None:
        """Start (or promote a spare for) one child and link to it."""
        child.retire()
        child.state = ChildState.STARTING
        child.kill_reason = None
        handle = self._take_spare(child.spec)
        if handle is None:
            handle = await self._create(child.spec, child.spec.actor_name)
        child.handle = handle
        generation = child.generation
        monitor = handle.rv_monitor.remote()
        try:
            child.info = await asyncio.wait_for(
                handle.rv_start.remote(child.spec.id, self.spec.id, self.namespace),
                _START_TIMEOUT_S,
            )
        except BaseException:
            if child.generation == generation:
                child.retire()
            _kill(handle)
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

    async def _start_or_handle_failure(self, child: _Child) -> bool:
        try:
            await self._start(child)
            return True
        except Exception as exc:
            _log.warning("%s: starting %s failed: %r", self.spec.id, child.spec.id, exc)
            await self._child_exited(child, f"start failed: {exc!r}"[:500], abnormal=True)
            return False

    async def _stop(self, child: _Child, reason: str) -> None:
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
        _kill(handle)
        child.state = ChildState.STOPPED

    async def _stop_all(self, reason: str) -> None:
        for task in list(self._background):
            if task is not asyncio.current_task():
                task.cancel()
        for spare in self._spares:
            _kill(spare)
        self._spares.clear()
        for child in reversed(self.children):
            await self._stop(child, reason)
        self.state = "stopped"
        self._emit(Kind.SUPERVISOR_STOPPED, None, reason)

    # ---- failure detection ---------------------------------------------------------

    async def _watch(self, child: _Child, generation: int, monitor: Any) -> None:
        """The link: returns when the child ends itself, raises when its process dies."""
        try:
            exit_info = await _link(monitor, child.info)
            reason = exit_info.get("reason", "normal")
            abnormal = reason == "fatal"
            if exit_info.get("detail"):
                reason = f"{reason}: {exit_info['detail']}"
        except (RayError, _ProcessGone) as exc:
            reason = child.kill_reason or f"died: {type(exc).__name__}"
            abnormal = True
        if child.generation != generation:
            return
        async with self._lock:
            if child.generation != generation:
                return
            _kill(child.retire())
            await self._child_exited(child, reason, abnormal)

    async def _heartbeat(self, child: _Child, generation: int) -> None:
        """Ping on the child's control loop; `misses` misses in a row mean hung."""
        hb = self.spec.heartbeat
        # a healthy loop ticks every 50 ms; half an interval without a tick is a stall,
        # which keeps detection within (misses + 1) * interval
        stall_s = max(0.1, hb.interval_s / 2)
        misses = 0
        while child.generation == generation:
            began = time.monotonic()
            try:
                lag = await asyncio.wait_for(child.handle.rv_ping.remote(), hb.timeout_s)
                healthy = lag <= stall_s
            except (TimeoutError, RayError):
                healthy = False
            if child.generation != generation:
                return
            if healthy:
                misses = 0
                self._record_healthy(child)
            else:
                misses += 1
                if misses >= hb.misses:
                    child.kill_reason = f"hung: {misses} heartbeats missed"
                    _kill(child.handle)  # the watcher sees the death and restarts it
                    return
            await asyncio.sleep(max(0.0, hb.interval_s - (time.monotonic() - began)))

    def _record_healthy(self, child: _Child) -> None:
        if self.state == "running":
            self._top_up_warm()
        now = time.monotonic()
        if child.probing:
            child.probing = False
            child.breaker.record_success(now)
            self._emit(Kind.CIRCUIT_CLOSED, child, "probe healthy")
        elif child.breaker.consecutive_failures and (
            now - child.started_at >= self.spec.backoff.reset_after_s
        ):
            child.breaker.record_success(now)

    # ---- deciding what a failure means ---------------------------------------------

    async def _child_exited(self, child: _Child, reason: str, abnormal: bool) -> None:
        child.state = ChildState.STOPPED
        self._emit(Kind.CHILD_EXITED, child, reason, {"abnormal": abnormal})
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and not abnormal):
            await self._forget(child)
            return
        if self.state not in ("running", "starting"):
            return
        now = time.monotonic()
        child.probing = False
        if child.breaker.record_failure(now) is CircuitState.OPEN:
            self._open_circuit(child, reason)
            return
        if not self.intensity.add_restart(now):
            if self.spec.on_intensity is OnIntensity.ESCALATE:
                self._spawn(self._escalate(child, reason))
                return
            while child.breaker.record_failure(now) is not CircuitState.OPEN:
                pass
            self._open_circuit(child, f"restart intensity exceeded: {reason}")
            return
        targets = restart_targets(self.spec.strategy, self.children, child)
        delay = child.backoff.next_delay(now)
        child.state = ChildState.RESTARTING
        self._emit(
            Kind.RESTART_SCHEDULED,
            child,
            reason,
            {"delay_s": round(delay, 4), "targets": [c.spec.id for c in targets]},
        )
        self._spawn(self._restart_after(delay, child, targets))

    async def _restart_after(self, delay: float, failed: _Child, targets: list[_Child]) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        async with self._lock:
            if self.state != "running" or failed not in self.children:
                return
            for sibling in reversed(targets):
                if sibling is not failed and sibling.state is ChildState.RUNNING:
                    await self._stop(sibling, f"sibling {failed.spec.id} failed")
            for child in targets:
                if child is not failed and child.state is not ChildState.STOPPED:
                    continue
                if await self._start_or_handle_failure(child):
                    child.restarts += 1
                    self.restarts += 1
                    self._emit(Kind.RESTARTED, child, detail=child.info)

    def _open_circuit(self, child: _Child, reason: str) -> None:
        child.state = ChildState.CIRCUIT_OPEN
        retry_in = max(0.0, (child.breaker.retry_at or 0.0) - time.monotonic())
        self._emit(Kind.CIRCUIT_OPENED, child, reason, {"retry_in_s": round(retry_in, 3)})
        self._spawn(self._half_open_later(child, retry_in))

    async def _half_open_later(self, child: _Child, delay: float) -> None:
        await asyncio.sleep(delay)
        # a timer may fire a hair early; never leave a circuit open with nothing scheduled
        while child.breaker.state_at(time.monotonic()) is CircuitState.OPEN:
            await asyncio.sleep(max(0.001, (child.breaker.retry_at or 0) - time.monotonic()))
        async with self._lock:
            if self.state != "running" or child not in self.children:
                return
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

    async def _escalate(self, child: _Child, reason: str) -> None:
        self._emit(Kind.ESCALATED, child, f"restart intensity exceeded: {reason}")
        async with self._lock:
            self.state = "failed"
            await self._stop_all(reason="escalated")
        await self._drain_events()
        if self.supervisor_id:
            self.exit_child("fatal", f"{self.spec.id} exceeded its restart intensity")
        else:  # the root has no parent: fail the process and let Ray restart it
            os._exit(1)

    async def _forget(self, child: _Child) -> None:
        """A child that will not come back: leave the pool (and its persisted row)."""
        if self.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE and child in self.children:
            self.children.remove(child)
            await supervision.remove_child(self._pool, self.spec.id, child.spec.id)

    # ---- warm standby ----------------------------------------------------------------

    def _take_spare(self, spec: ChildSpec) -> Any:
        if self.spec.template is None or not self._spares or spec.agent != self.spec.template.agent:
            return None
        return self._spares.pop(0)

    async def _fill_standby(self) -> None:
        if self._filling:
            return
        self._filling = True
        try:
            await self._fill_standby_now()
        finally:
            self._filling = False

    async def _fill_standby_now(self) -> None:
        template = self.spec.template
        while template is not None and len(self._spares) < self.spec.standby:
            try:
                spare = await self._create(template, None)
                await spare.rv_warm.remote()
            except Exception as exc:
                _log.warning("%s: a standby spare failed to start: %r", self.spec.id, exc)
                await asyncio.sleep(1)
                continue
            self._spares.append(spare)

    # ---- warm workers ------------------------------------------------------------------

    def _warm_taken(self) -> None:
        """After an actor creation: Ray gave it the most recently idle warm worker, if one
        was up. Its replacement is asked for at the next healthy heartbeat: a process start
        then competes neither with the restart nor with the new child's first moments, and
        a child failing again and again does not churn processes."""
        if self.spec.warm_workers:
            now = time.monotonic()
            up = [w for w in self._warm if now - w[0] >= _WARM_START_S and w[1] > now]
            if up:
                self._warm.remove(max(up))

    async def _learn_warm_env(self, child: _Child) -> None:
        """Warm workers serve the agent hosts if this supervisor has any, else the rest."""
        hosts_agents = self.spec.template is not None or any(c.spec.agent for c in self.children)
        if hosts_agents and child.spec.agent is None:
            return
        try:
            env = await asyncio.wait_for(child.handle.rv_runtime_env.remote(), 10)
        except (RayError, TimeoutError, AttributeError) as exc:
            _log.info("%s: no runtime env from %s: %r", self.spec.id, child.spec.id, exc)
            return
        if self._warm_env is None:
            self._warm_env = env
            if self.state == "running":
                self._top_up_warm()

    def _top_up_warm(self) -> None:
        if self._warm_env is None:
            return
        now = time.monotonic()
        self._warm = [w for w in self._warm if w[1] > now]
        missing = self.spec.warm_workers - len(self._warm)
        if missing > 0:
            self._warm += [(now, now + _WARM_KEEP_ALIVE_S)] * missing
            self._spawn(self._prestart(missing))

    async def _prestart(self, count: int) -> None:
        try:
            await asyncio.to_thread(prestart_workers, count, _WARM_KEEP_ALIVE_S, self._warm_env)
        except Exception as exc:  # restarts still work, only without a warm process
            _log.warning("%s: could not prestart %d Ray workers: %r", self.spec.id, count, exc)

    async def _keep_warm(self) -> None:
        """Replace warm workers whose keep-alive ends (Ray may then reap them)."""
        while True:
            self._top_up_warm()
            now = time.monotonic()
            ends = min((w[1] for w in self._warm), default=now + _WARM_KEEP_ALIVE_S)
            await asyncio.sleep(max(1.0, ends - now))

    # ---- the dynamic pool (simple_one_for_one) ----------------------------------------

    async def start_child(self) -> str:
        """Add one member to the pool; it is persisted, so it survives a restart of this."""
        if self.spec.strategy is not Strategy.SIMPLE_ONE_FOR_ONE:
            raise ValueError(f"{self.spec.id} is {self.spec.strategy}, not simple_one_for_one")
        async with self._lock:
            taken = {c.spec.id for c in self.children}
            n = 1
            while self.spec.pool_child_id(n) in taken:
                n += 1
            spec = self._pool_spec(n)
            await supervision.save_child(
                self._pool, self.spec.id, spec.id, spec.model_dump(mode="json")
            )
            child = self._new_child(spec)
            self.children.append(child)
            await self._start_or_handle_failure(child)
            return spec.id

    async def terminate_child(self, child_id: str) -> bool:
        async with self._lock:
            child = self._find(child_id)
            if child is None:
                return False
            await self._stop(child, "terminated")
            self.children.remove(child)
            if self.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
                await supervision.remove_child(self._pool, self.spec.id, child_id)
            self._emit(Kind.CHILD_EXITED, child, "terminated", {"abnormal": False})
            return True

    async def resize(self, size: int) -> list[str]:
        """Grow or shrink the pool to `size` members (newest removed first)."""
        if size < 0:
            raise ValueError("size must be >= 0")
        while len(self.children) < size:
            await self.start_child()
        while len(self.children) > size:
            await self.terminate_child(self.children[-1].spec.id)
        return [c.spec.id for c in self.children]

    def _find(self, child_id: str) -> _Child | None:
        return next((c for c in self.children if c.spec.id == child_id), None)

    # ---- inspection -------------------------------------------------------------------

    async def child_handle(self, child_id: str) -> Any:
        child = self._find(child_id)
        return child.handle if child else None

    async def which_children(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "id": c.spec.id,
                "kind": c.spec.kind.value,
                "state": c.state.value,
                "restarts": c.restarts,
                "breaker": c.breaker.state_at(now).value,
                "actor_name": c.spec.actor_name,
                **c.info,
            }
            for c in self.children
        ]

    async def snapshot(self) -> dict[str, Any]:
        """This subtree: for each node its id, kind, state, restarts, breaker and placement."""
        context = ray.get_runtime_context()
        node: dict[str, Any] = {
            "id": self.spec.id,
            "kind": "supervisor",
            "strategy": self.spec.strategy.value,
            "state": self.state,
            "restarts": self.restarts,
            "actor_name": f"sup:{self.spec.id}",
            "pid": os.getpid(),
            "node_id": context.get_node_id(),
            "actor_id": context.get_actor_id(),
            "standby": len(self._spares),
            "children": [],
        }
        for entry, child in zip(await self.which_children(), self.children, strict=True):
            if child.spec.kind is ChildKind.SUPERVISOR and child.handle is not None:
                with contextlib.suppress(RayError, TimeoutError):
                    sub = await asyncio.wait_for(child.handle.snapshot.remote(), 5)
                    entry = {**sub, **{k: entry[k] for k in ("restarts", "breaker", "actor_name")}}
            node["children"].append(entry)
        return node

    async def statistics(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for c in self.children:
            states[c.state.value] = states.get(c.state.value, 0) + 1
        return {"children": len(self.children), "states": states, "restarts": self.restarts}

    # ---- events ------------------------------------------------------------------------

    def _emit(
        self,
        kind: Kind,
        child: _Child | None,
        reason: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        event = SupervisorDecision(
            supervisor_id=self.spec.id,
            child_id=child.spec.id if child else None,
            event=kind,
            reason=reason,
            detail=detail or {},
        )
        _log.info("%s %s %s %s", self.spec.id, kind.value, event.child_id or "", reason)
        self._events.put_nowait(event)
        if child is not None:
            tags = {"supervisor": self.spec.id, "child": child.spec.id}
            if kind is Kind.RESTARTED:
                self._restarts_metric.inc(1, tags)
            elif kind in (Kind.CIRCUIT_OPENED, Kind.CIRCUIT_CLOSED):
                self._breaker_metric.set(1 if kind is Kind.CIRCUIT_OPENED else 0, tags)

    async def _write_events(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await supervision.record_event(
                    self._pool,
                    event.supervisor_id,
                    event.event,
                    child_id=event.child_id,
                    reason=event.reason,
                    detail=event.detail,
                    events=[event],
                )
            except Exception:
                _log.exception("%s: could not record %s", self.spec.id, event.event)
            finally:
                self._events.task_done()

    async def _drain_events(self, timeout_s: float = 5) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._events.join(), timeout_s)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
