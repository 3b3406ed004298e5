"""`TaskClient`: the Python API to the task queue for code in the cluster.

It routes each task to its TaskManager shard by id (`id.int % shards`), so a task's
every call goes to the one actor that owns it.

A shard is a supervised actor: when its process dies the supervisor starts a new actor
under the same name (`tm:0`), and a cached handle would point at the dead one forever.
So every call goes through a `NamedActor`, which drops the handle on `RayActorError`
(the actor died, before or during the call) or `ActorUnavailableError`, resolves the
name again and retries on the new incarnation, for at most `restart_wait_s`; past that
it raises `ActorUnreachable` (the HTTP API answers 503 with `Retry-After`). Only calls
that are safe to repeat are retried: reads, `cancel`, `wait` (with what is left of its
timeout) and `submit_many` / `submit_batch` (tasks carry their ids: a retry gets what
the lost call stored as stored, and stores the rest).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar
from uuid import UUID, uuid4

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from actors.task_manager import shard_of, task_manager_name
from runtime import telemetry
from runtime.errors import LogicalError

__all__ = [
    "RESTART_WAIT_S",
    "UNREACHABLE",
    "ActorUnreachable",
    "NamedActor",
    "Submitted",
    "TaskClient",
]

T = TypeVar("T")

RESTART_WAIT_S = 10.0
"""How long a caller waits for a supervisor to bring a named actor back."""
_FIRST_BACKOFF_S = 0.02
_MAX_BACKOFF_S = 0.5

UNREACHABLE: tuple[type[BaseException], ...] = (RayActorError, ActorUnavailableError)
"""Errors that mean "this incarnation is gone or not answering", not "the call failed"."""


class ActorUnreachable(RuntimeError):
    """A named actor did not answer within the restart bound (callers answer 503)."""

    def __init__(self, name: str, waited_s: float, cause: BaseException | None) -> None:
        super().__init__(f"{name} did not answer within {waited_s:.1f} s: {cause!r}"[:500])
        self.name = name
        self.waited_s = waited_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorUnreachable, (self.name, self.waited_s, None))


class Submitted(NamedTuple):
    """One item of `TaskClient.submit_batch`: the task as stored and whether this call
    made it (False: its idempotency key had made it before), or why it was refused."""

    task: dict[str, Any] | None
    created: bool
    error: LogicalError | None = None


class _NotRunning(Exception):
    """The name is not registered yet, or its actor has not finished starting."""


class NamedActor:
    """Whatever actor currently holds `name` in `namespace`, found again after it died.

    A restarted actor is registered under its name before its `rv_start` has finished:
    the actors reached this way (task managers) hold calls until they have started.
    """

    def __init__(self, name: str, namespace: str, restart_wait_s: float = RESTART_WAIT_S) -> None:
        self.name = name
        self.namespace = namespace
        self.restart_wait_s = restart_wait_s
        self.resolutions = 0
        """How many times the name was resolved (1 + the restarts this caller saw)."""
        self._handle: Any | None = None
        self._resolving: asyncio.Task[Any] | None = None

    async def handle(self) -> Any:
        """The current incarnation's handle, waiting up to `restart_wait_s` for one."""
        return await self.call(_identity)

    def forget(self, handle: Any) -> None:
        """Drop `handle` if it is the cached one (a newer one may be cached already)."""
        if self._handle is handle:
            self._handle = None

    async def call(self, op: Callable[[Any], Awaitable[T]], *, retry: bool = True) -> T:
        """`op(handle)`, retried on the next incarnation while the actor is restarted.

        `retry=False` for calls that must not run twice: only resolving the name waits
        then, and an actor that dies during the call fails it.
        """
        deadline: float | None = None
        backoff = _FIRST_BACKOFF_S
        while True:
            handle = None
            try:
                handle = await self._resolve()
                return await op(handle)
            except (*UNREACHABLE, _NotRunning) as exc:
                if isinstance(exc, RayTaskError):  # raised inside the actor: it is alive
                    raise
                if handle is not None:
                    self.forget(handle)
                if handle is not None and not retry and not isinstance(exc, _NotRunning):
                    raise
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.restart_wait_s
                if now >= deadline:
                    cause = exc.__cause__ if isinstance(exc, _NotRunning) else exc
                    raise ActorUnreachable(self.name, self.restart_wait_s, cause) from exc
                await asyncio.sleep(min(backoff, deadline - now))
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _resolve(self) -> Any:
        if self._handle is not None:
            return self._handle
        # concurrent callers of one loop share one resolution (and one snapshot call)
        loop = asyncio.get_running_loop()
        pending = self._resolving
        if pending is None or pending.done() or pending.get_loop() is not loop:
            pending = self._resolving = loop.create_task(self._lookup())
        return await asyncio.shield(pending)

    async def _lookup(self) -> Any:
        # ray.get_actor asks the GCS and blocks: off the loop (a replica serves meanwhile)
        try:
            handle = await asyncio.to_thread(ray.get_actor, self.name, namespace=self.namespace)
        except ValueError as exc:
            raise _NotRunning(f"no actor named {self.name}") from exc
        self.resolutions += 1
        self._handle = handle
        return handle


async def _identity(handle: Any) -> Any:
    return handle


class TaskClient:
    def __init__(
        self, namespace: str, shards: int = 1, restart_wait_s: float = RESTART_WAIT_S
    ) -> None:
        self.namespace = namespace
        self.shards = shards
        self.restart_wait_s = restart_wait_s
        self.managers = [
            NamedActor(task_manager_name(s), namespace, restart_wait_s) for s in range(shards)
        ]

    def _owner(self, task_id: str | UUID) -> NamedActor:
        return self.managers[shard_of(UUID(str(task_id)), self.shards)]

    async def submit(self, **task: Any) -> dict[str, Any]:
        """Submit one task (the fields of TaskCreate); returns it as stored."""
        return (await self.submit_many([task]))[0]

    async def submit_many(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Submit many tasks, one call per shard; results in the order given.

        All or nothing per shard: one invalid item (or unknown dependency) raises
        `LogicalError` and its shard stores none of them, while other shards may have
        stored theirs. `submit_batch` answers each item on its own instead.
        """
        by_shard = self._by_shard(tasks)
        answers = await asyncio.gather(
            *(self._submit_to(s, [i for _, i in items]) for s, items in by_shard.items())
        )
        out: list[dict[str, Any]] = [{} for _ in tasks]
        for (_, items), stored in zip(by_shard.items(), answers, strict=True):
            for (index, _), task in zip(items, stored, strict=True):
                out[index] = task
        return out

    async def submit_batch(self, tasks: list[dict[str, Any]]) -> list[Submitted]:
        """Submit many tasks, each answered on its own (results in the order given).

        One call per shard, as `submit_many`; a shard's part that is refused (an invalid
        item, an unknown dependency or parent) is split in halves until each refused item
        is alone, so every valid item is stored whatever its neighbours are. An item whose
        `idempotency_key` made a task already gets that task with `created` False. An
        error other than a refusal (a shard not back within the restart bound) is raised:
        what was stored stays stored, and the same items again (with their keys or ids)
        are answered as stored.
        """
        by_shard = self._by_shard(tasks)
        answers = await asyncio.gather(
            *(self._submit_split(s, [i for _, i in items]) for s, items in by_shard.items())
        )
        out: list[Submitted] = [Submitted(None, False) for _ in tasks]
        for (_, items), submitted in zip(by_shard.items(), answers, strict=True):
            for (index, _), one in zip(items, submitted, strict=True):
                out[index] = one
        return out

    def _by_shard(self, tasks: list[dict[str, Any]]) -> dict[int, list[tuple[int, dict[str, Any]]]]:
        """Each task (given its id, and the caller's trace) by shard, with its index."""
        by_shard: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        trace = {"trace_context": carrier} if (carrier := telemetry.carrier()) else {}
        for index, task in enumerate(tasks):
            item = {**trace, **task, "id": str(task.get("id") or uuid4())}
            by_shard.setdefault(shard_of(UUID(item["id"]), self.shards), []).append((index, item))
        return by_shard

    async def _submit_split(self, shard: int, items: list[dict[str, Any]]) -> list[Submitted]:
        try:
            stored = await self._submit_to(shard, items)
        except Exception as exc:
            cause = getattr(exc, "cause", None) if isinstance(exc, RayTaskError) else exc
            if not isinstance(cause, LogicalError):
                raise
            if len(items) == 1:
                return [Submitted(None, False, cause)]
            half = len(items) // 2
            first, rest = await asyncio.gather(
                self._submit_split(shard, items[:half]), self._submit_split(shard, items[half:])
            )
            return first + rest
        return [
            Submitted(task, task["id"] == item["id"])
            for item, task in zip(items, stored, strict=True)
        ]

    async def _submit_to(self, shard: int, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # safe to repeat: a task stored by a call whose answer was lost is returned as stored
        return await self.managers[shard].call(lambda tm: tm.submit_many.remote(items))

    async def get(self, task_id: str | UUID) -> dict[str, Any]:
        return await self._owner(task_id).call(lambda tm: tm.get.remote(str(task_id)))

    async def wait(self, task_id: str | UUID, timeout_s: float = 60) -> dict[str, Any]:
        """The task once it has ended (completed, failed, cancelled, timed_out); a wait cut
        by a restart of its shard goes on at the new one for what is left of `timeout_s`."""
        deadline = time.monotonic() + timeout_s

        def op(tm: Any) -> Awaitable[dict[str, Any]]:
            return tm.wait.remote(str(task_id), max(0.0, deadline - time.monotonic()))

        return await self._owner(task_id).call(op)

    async def cancel(self, task_id: str | UUID) -> dict[str, Any]:
        return await self._owner(task_id).call(lambda tm: tm.cancel.remote(str(task_id)))

    async def list(
        self,
        status: str | None = None,
        capability: str | None = None,
        limit: int = 50,
        after: tuple[str, str] | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        return await self.managers[0].call(
            lambda tm: tm.list_tasks.remote(status, capability, limit, after, newest_first)
        )

    async def statistics(self) -> list[dict[str, Any]]:
        return await asyncio.gather(
            *(m.call(lambda tm: tm.statistics.remote()) for m in self.managers)
        )
