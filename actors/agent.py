"""`Agent`, the class users subclass, and `AgentContext`, what an agent may do.

An agent is plain async Python: it declares `capabilities` and implements `handle(task,
ctx)`. It knows nothing of Ray: an `AgentHost` (`actors.host`) runs it inside a supervised
actor, owns its state machine and heartbeat, and gives it an `AgentContext`.

Guarantees an agent can rely on:
- `ctx.state` holds the state last saved with `ctx.save_state()`, restored after a restart
  (the state is saved as JSON: a value JSON cannot carry is refused with a ValueError).
- `handle` runs on the host's event loop: blocking or CPU-bound work must go through
  `ctx.run_blocking`, or the supervisor sees a stalled loop and takes the agent for hung.
- A `LogicalError` (or a ValueError/TypeError/KeyError) fails the task, not the agent; a
  `TransientError` is retried; a `FatalError` or any other exception means the agent is
  unfit: the task is retried elsewhere and the agent is restarted (`runtime.errors`).
- `on_discovery` and `on_message` run beside the current task, with `ctx.task` None.

What `ctx` offers beyond that lives in its own module: messages (`actors.messaging`),
discoveries to agents (`actors.discovery_feed`), tools (`runtime.tools`), shared memory
(`runtime.memory`), models (`runtime.llm`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar
from uuid import UUID

from actors.discovery_feed import DiscoveryFeed, DiscoverySubscription
from actors.messaging import Messenger
from runtime.errors import LogicalError, NotFound
from runtime.llm import ModelClient
from runtime.memory import DEFAULT_MAX_VALUE_BYTES, SharedMemory
from runtime.models.common import check_question
from runtime.models.events import DiscoveryShared, TaskProgress
from runtime.models.records import Discovery, Message
from runtime.store import agents as agent_store
from runtime.store import discoveries

if TYPE_CHECKING:
    import asyncpg

    from runtime.bus import Bus
    from runtime.config import ModelSettings
    from runtime.tools import ToolRunner

__all__ = ["Agent", "AgentContext"]

P = ParamSpec("P")
R = TypeVar("R")

_BUS_WAIT_S = 5.0  # how long `progress` waits for a host that is still connecting NATS


class Agent(ABC):
    """Subclass this: set `capabilities`, implement `handle`.

    The constructor receives the template's parameters as keyword arguments and keeps them
    in `self.params`; it must be cheap (no I/O): connections belong in `on_start`.
    """

    capabilities: ClassVar[frozenset[str] | set[str]] = frozenset()
    """What this agent can do; a task is matched on its `required_capabilities`."""
    discovery_subscription: ClassVar[DiscoverySubscription | dict[str, Any] | None] = None
    """Discoveries this agent receives in `on_discovery` from its start, e.g.
    `{"types": ["pattern"], "min_confidence": 0.8}` (or call `ctx.subscribe_discoveries`)."""
    prefetch: ClassVar[int] = 32
    """Tasks the TaskManager may hand this agent at once: one runs, the rest wait at the
    agent, so it goes straight to the next one (1 = strictly one at a time). They travel
    in batches of up to half of it, one call each way per batch. An agent whose tasks are
    long should lower it, so that waiting tasks are not held behind its running one."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("discovery_subscription")
        if isinstance(declared, dict):
            try:
                cls.discovery_subscription = DiscoverySubscription.model_validate(declared)
            except ValueError as exc:
                raise TypeError(f"{cls.__name__}.discovery_subscription: {exc}") from None
        caps = cls.__dict__.get("capabilities")
        if caps is None:
            return
        if isinstance(caps, str) or not isinstance(caps, set | frozenset | list | tuple):
            raise TypeError(f"{cls.__name__}.capabilities must be a set of strings, got {caps!r}")
        if not all(isinstance(c, str) and c.strip() for c in caps):
            raise TypeError(f"{cls.__name__}.capabilities must hold non-empty strings: {caps!r}")
        cls.capabilities = frozenset(c.strip() for c in caps)

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = params

    @abstractmethod
    async def handle(self, task: dict[str, Any], ctx: AgentContext) -> Any:
        """Do one task; return a JSON-serialisable result or raise a `TaskError`."""

    async def on_start(self, ctx: AgentContext) -> None:  # noqa: B027 (an optional hook)
        """Runs once the agent is registered and its state restored, before any task."""

    async def on_stop(self, ctx: AgentContext) -> None:  # noqa: B027 (an optional hook)
        """Runs on a graceful stop; not run when the process is killed."""

    async def on_discovery(self, discovery: DiscoveryShared, ctx: AgentContext) -> None:  # noqa: B027
        """A discovery another agent shared, matching this agent's subscription. Runs beside
        the current task, with `ctx.task` None; an exception has it delivered again."""

    async def on_message(self, message: Message, ctx: AgentContext) -> dict[str, Any] | None:
        """Answer another agent's `ask` (the returned object is the answer) or take its
        `tell`. Runs beside the current task, with `ctx.task` None. Raise a `TaskError` to
        fail the ask: the asker gets a LogicalError for a logical one, else transient."""
        raise LogicalError(f"{type(self).__name__} does not take messages (no on_message)")


class AgentContext:
    """What an agent may do. Thin: it delegates to the host's pool and bus.

    `task` is the task being handled (None between tasks); `state` is the durable state.
    """

    def __init__(
        self,
        agent_id: str,
        *,
        pool: asyncpg.Pool | None,
        bus: Bus | asyncio.Future[Bus] | None,
        state: dict[str, Any] | None = None,
        tools: ToolRunner | None = None,
        feed: DiscoveryFeed | None = None,
        connect: Callable[[], object] | None = None,
        models: dict[str, ModelSettings] | None = None,
        memory_max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self.agent_id = agent_id
        self.task: dict[str, Any] | None = None
        self.state: dict[str, Any] = dict(state or {})
        self.log = logging.getLogger(f"rayvisor.agent.{agent_id}")
        self._pool = pool
        self._bus = bus
        self._tools = tools
        self._messages: Messenger | None = None
        self._feed = feed
        self._connect = connect
        self._models = dict(models or {})
        self._model_clients: dict[str, ModelClient] = {}
        self._memory_max_value_bytes = memory_max_value_bytes

    # ---- durable state -------------------------------------------------------------------

    async def save_state(self, state: dict[str, Any] | None = None) -> None:
        """Persist `state` (which becomes `self.state`) or else `self.state`."""
        if state is not None:
            if not isinstance(state, dict):
                raise TypeError(f"state must be a dict, got {type(state).__name__}")
            self.state = state
        _require_json(self.state, "state")
        if not await agent_store.save_state(self._require_pool(), self.agent_id, self.state):
            raise NotFound(f"agent {self.agent_id} has no row to save its state in")

    # ---- events --------------------------------------------------------------------------

    async def progress(self, fraction: float, message: str = "") -> None:
        """Report how far the current task is, 0.0 to 1.0 (core NATS, not kept)."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise TypeError(f"progress must be a number, got {type(fraction).__name__}")
        if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress must be between 0.0 and 1.0, got {fraction}")
        task_id = self._require_task_id("progress")
        event = TaskProgress(
            task_id=task_id,
            agent_id=self.agent_id,
            attempt=max(1, int((self.task or {}).get("attempt") or 1)),
            progress=float(fraction),
            message=message,
        )
        bus = await self._require_bus()
        await bus.publish(event)

    async def share_discovery(
        self,
        type: str,
        content: str,
        confidence: float,
        data: dict[str, Any] | None = None,
    ) -> UUID:
        """Record a discovery and publish it on `discoveries.{agent_id}.{type}`; its id.

        The row and its event are written in one transaction (the outbox relay publishes
        the event), so a discovery is never stored without being published or vice versa.
        """
        check_question(type, dict(data or {}))
        task = self.task or {}
        discovery = Discovery(
            agent_id=self.agent_id,
            type=type,
            content=content,
            confidence=confidence,
            data=dict(data or {}),
            task_id=_uuid_or_none(task.get("id")),
            project_id=_uuid_or_none(task.get("project_id")),
        )
        _require_json(discovery.data, "discovery data")
        event = DiscoveryShared(
            discovery_id=discovery.id,
            agent_id=discovery.agent_id,
            type=discovery.type,
            content=discovery.content,
            confidence=discovery.confidence,
            data=discovery.data,
            task_id=discovery.task_id,
            project_id=discovery.project_id,
        )
        await discoveries.add(self._require_pool(), discovery, events=(event,))
        return discovery.id

    async def subscribe_discoveries(
        self, types: list[str] | None = None, min_confidence: float = 0.0
    ) -> None:
        """Receive other agents' discoveries of `types` (all, if none) at least this sure in
        `on_discovery`, from now on and across restarts; calling again changes the filter."""
        subscription = DiscoverySubscription(types=list(types or []), min_confidence=min_confidence)
        await self._require_feed().subscribe(subscription, await self._require_bus())

    async def unsubscribe_discoveries(self) -> None:
        """Receive no more discoveries (the durable consumer is deleted)."""
        await self._require_feed().unsubscribe(await self._require_bus())

    async def dependency_results(self) -> list[Any]:
        """The results of the tasks this one depends on, in the order of its
        `dependencies` (a project step reads what the steps before it found)."""
        ids = [_uuid_or_none(d) for d in (self.task or {}).get("dependencies") or []]
        if not ids:
            return []
        rows = await self._require_pool().fetch(
            "SELECT id, result FROM tasks WHERE id = ANY($1::uuid[])", [i for i in ids if i]
        )
        by_id = {row["id"]: row["result"] for row in rows}
        return [by_id.get(i) for i in ids]

    # ---- tools ---------------------------------------------------------------------------

    async def tool(self, name: str, /, **arguments: Any) -> Any:
        """Call the registered tool `name` with `arguments`; its output.

        The call is validated against the tool's parameters, waits for the tool's rate
        limit, is refused while its circuit is open (`ToolUnavailable`, a TransientError),
        and is recorded in `tool_executions` with the current task, whatever its outcome.
        """
        if self._tools is None:
            raise RuntimeError(f"agent {self.agent_id}: no tools (not started)")
        return await self._tools.call(name, arguments, _uuid_or_none((self.task or {}).get("id")))

    # ---- messages ------------------------------------------------------------------------

    async def ask(
        self, to: str, payload: dict[str, Any], timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Ask agent `to` (an agent id, or a capability: a live agent offering it) and wait
        for its `on_message` answer; `AskTimeout` (transient) past `timeout_s`. A target
        that restarts meanwhile is asked again (see `actors.messaging`)."""
        return await self._messenger().ask(to, payload, timeout_s)

    async def tell(self, to: str, payload: dict[str, Any], timeout_s: float = 10.0) -> None:
        """Send `payload` to agent `to` (id or capability) one way: returns once the target
        has it, without waiting for its handling; `AskTimeout` if it never arrives."""
        await self._messenger().tell(to, payload, timeout_s)

    def detached(self) -> AgentContext:
        """This context without the current task: for work beside the task (messages)."""
        twin = copy.copy(self)
        twin.task = None
        return twin

    def _messenger(self) -> Messenger:
        if self._messages is None:
            self._messages = Messenger(self.agent_id, self._require_pool(), self._require_bus)
        return self._messages

    # ---- models --------------------------------------------------------------------------

    def default_model(self) -> str:
        """The first model of the catalog; a LogicalError when there is none."""
        if not self._models:
            raise LogicalError("no model is configured (models: in rayvisor.yaml)")
        return next(iter(self._models))

    def model(self, name: str) -> BoundModel:
        """The model `name` of the catalog (`models:` in rayvisor.yaml): `await
        ctx.model("fast").chat([{"role": "user", "content": "..."}], max_tokens=200)`.
        Calls are rate limited, retried on 429/5xx, circuit-broken and recorded
        (`runtime.llm`)."""
        client = self._model_clients.get(name)
        if client is None:
            settings = self._models.get(name)
            if settings is None:
                known = ", ".join(sorted(self._models)) or "none configured"
                raise LogicalError(f"no model {name!r} in the catalog ({known})")
            client = ModelClient(name, settings, self._require_pool(), self.agent_id)
            self._model_clients[name] = client
        return BoundModel(client, self)

    # ---- shared memory -------------------------------------------------------------------

    def memory(self, scope: str) -> SharedMemory:
        """The keys of `scope` in the system's shared memory (see `runtime.memory`): `get`,
        `put(key, value, expected_revision)`, `delete`, `update(key, fn, on_conflict)`,
        `watch(prefix)`. Shared by every agent that names the same scope."""
        return SharedMemory(self._require_bus, scope, max_value_bytes=self._memory_max_value_bytes)

    # ---- work ----------------------------------------------------------------------------

    async def run_blocking(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking or CPU-bound `fn` in a thread; the event loop keeps ticking."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ---- internals -----------------------------------------------------------------------

    def _require_task_id(self, what: str) -> UUID:
        if self.task is None:
            raise RuntimeError(f"{what} is only available while a task is being handled")
        task_id = _uuid_or_none(self.task.get("id"))
        if task_id is None:
            raise ValueError(f"{what} needs the task's 'id' as a UUID, got {self.task.get('id')!r}")
        return task_id

    def _require_feed(self) -> DiscoveryFeed:
        if self._feed is None:
            raise RuntimeError(f"agent {self.agent_id}: no discovery feed (not started)")
        return self._feed

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"agent {self.agent_id}: no database connection (not started)")
        return self._pool

    async def _require_bus(self) -> Bus:
        """The bus; a host that is still connecting NATS passes a future of it."""
        bus = self._bus
        if bus is None:
            raise RuntimeError(f"agent {self.agent_id}: no NATS connection (not started)")
        if isinstance(bus, asyncio.Future):
            if not bus.done() and self._connect is not None:
                self._connect()  # asked for before the host connects on its own: connect now
            try:
                bus = await asyncio.wait_for(asyncio.shield(bus), _BUS_WAIT_S)
            except TimeoutError:
                raise RuntimeError(f"agent {self.agent_id}: NATS not connected yet") from None
            self._bus = bus
        return bus


class BoundModel:
    """A model client that records its calls against the context's current task."""

    def __init__(self, client: ModelClient, ctx: AgentContext) -> None:
        self.client = client
        self._ctx = ctx

    async def chat(self, messages: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
        task_id = _uuid_or_none((self._ctx.task or {}).get("id"))
        return await self.client.chat(messages, task_id, **options)


def _uuid_or_none(value: Any) -> UUID | None:
    if value is None or isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _require_json(value: Any, what: str) -> None:
    """ValueError naming the problem if `value` is not plain JSON."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from None
