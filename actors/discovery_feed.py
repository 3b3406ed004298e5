"""Discoveries to an agent: a JetStream durable consumer per agent, pulled by its host.

`ctx.subscribe_discoveries(types, min_confidence)` (or an Agent class's
`discovery_subscription`) makes the consumer `discoveries-{agent_id}` on the event stream:
its filter subjects are the types (`discoveries.*.{type}`, or all), the minimum confidence
rides in its metadata, and it starts with discoveries shared from then on. The consumer
outlives the agent's process, so a restarted agent resumes where it stopped: what was
shared meanwhile is delivered, and what it had acknowledged is not delivered again. Each
discovery is acknowledged after `on_discovery` returns; one whose handler raises is
redelivered up to `MAX_DELIVER` times. An agent never receives its own discoveries.
A process killed after its handler ran but before the acknowledgement reached NATS gets
that discovery again in its next incarnation (at least once, as JetStream delivers): a
handler with lasting effects skips a discovery id it has already recorded.
A consumer left unused for `INACTIVE_S` (an agent removed for good) is deleted by NATS.
A change of filter the server will not make in place remakes the consumer, from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from runtime import telemetry
from runtime.bus import decode
from runtime.models.common import TypeName
from runtime.models.events import DiscoveryShared

if TYPE_CHECKING:
    from runtime.bus import Bus

__all__ = ["DiscoveryFeed", "DiscoverySubscription", "consumer_name"]

_log = logging.getLogger(__name__)

MAX_DELIVER = 5
ACK_WAIT_S = 10.0
"""How soon a discovery fetched by a process that died is delivered again; a handler that
takes longer keeps it by reporting progress (`in_progress`) every half of it."""
INACTIVE_S = 24 * 3600.0
_BATCH = 32
_FETCH_S = 1.0
_REMEMBERED = 10_000
_META_TYPES, _META_MIN = "rayvisor.types", "rayvisor.min_confidence"


class DiscoverySubscription(BaseModel):
    """Which discoveries an agent wants: of these types (none: all), at least this sure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    types: list[TypeName] = Field(default_factory=list)
    min_confidence: float = Field(0.0, ge=0.0, le=1.0)

    def subjects(self) -> list[str]:
        return [f"discoveries.*.{t}" for t in sorted(set(self.types))] or ["discoveries.>"]

    def metadata(self) -> dict[str, str]:
        return {_META_TYPES: ",".join(sorted(set(self.types))), _META_MIN: str(self.min_confidence)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None) -> DiscoverySubscription:
        metadata = metadata or {}
        types = [t for t in metadata.get(_META_TYPES, "").split(",") if t]
        return cls(types=types, min_confidence=float(metadata.get(_META_MIN, "0") or 0))


def consumer_name(agent_id: str) -> str:
    return f"discoveries-{agent_id}"


Handler = Callable[[DiscoveryShared], Awaitable[Any]]


class DiscoveryFeed:
    """Pulls one agent's consumer and hands each matching discovery to `handler`."""

    def __init__(self, agent_id: str, handler: Handler) -> None:
        self.agent_id = agent_id
        self._handler = handler
        self._bus: Bus | None = None
        self._subscription: DiscoverySubscription | None = None
        self._puller: asyncio.Task[None] | None = None
        self._seen: OrderedDict[UUID, None] = OrderedDict()
        self.delivered = 0
        self.dropped = 0

    @property
    def subscription(self) -> DiscoverySubscription | None:
        return self._subscription

    async def resume(self, bus: Bus, declared: DiscoverySubscription | None) -> None:
        """At start: the class's declared subscription, else the one an earlier incarnation
        made (kept in its consumer), else nothing."""
        self._bus = bus
        if declared is not None:
            await self.subscribe(declared, bus)
            return
        from nats.js.errors import NotFoundError

        try:
            info = await bus.js.consumer_info(bus.stream, consumer_name(self.agent_id))
        except NotFoundError:
            return
        self._subscription = DiscoverySubscription.from_metadata(info.config.metadata)
        self._start_pulling()

    async def subscribe(self, subscription: DiscoverySubscription, bus: Bus) -> None:
        """Make or change the consumer, and pull it."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import BadRequestError

        self._bus = bus
        config = ConsumerConfig(
            durable_name=consumer_name(self.agent_id),
            description=f"discoveries for agent {self.agent_id}",
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_deliver=MAX_DELIVER,
            filter_subjects=subscription.subjects(),
            inactive_threshold=INACTIVE_S,
            metadata=subscription.metadata(),
        )
        try:
            await bus.js.add_consumer(bus.stream, config)
        except BadRequestError:  # a change the server will not make in place: make it anew
            await self._stop_pulling()
            with contextlib.suppress(Exception):
                await bus.js.delete_consumer(bus.stream, consumer_name(self.agent_id))
            await bus.js.add_consumer(bus.stream, config)
        self._subscription = subscription
        self._start_pulling()

    async def unsubscribe(self, bus: Bus) -> None:
        """Stop, and delete the consumer: nothing more is kept for this agent."""
        from nats.js.errors import NotFoundError

        await self._stop_pulling()
        self._subscription = None
        with contextlib.suppress(NotFoundError):
            await bus.js.delete_consumer(bus.stream, consumer_name(self.agent_id))

    async def close(self) -> None:
        """Stop pulling; the consumer stays, for the next incarnation."""
        await self._stop_pulling()

    # ---- internals -----------------------------------------------------------------------

    def _require_bus(self) -> Bus:
        if self._bus is None:
            raise RuntimeError(f"agent {self.agent_id}: NATS not connected yet")
        return self._bus

    def _start_pulling(self) -> None:
        if self._puller is None or self._puller.done():
            self._puller = asyncio.get_running_loop().create_task(self._pull())

    async def _stop_pulling(self) -> None:
        puller, self._puller = self._puller, None
        if puller is not None:
            puller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await puller

    async def _pull(self) -> None:
        import nats.errors

        bus = self._require_bus()
        subscription = None
        try:
            while True:
                try:
                    if subscription is None:
                        subscription = await bus.js.pull_subscribe_bind(
                            durable=consumer_name(self.agent_id), stream=bus.stream
                        )
                    messages = await subscription.fetch(_BATCH, timeout=_FETCH_S)
                except nats.errors.TimeoutError:
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # NATS away, consumer being remade: try again soon
                    _log.debug("agent %s: fetching discoveries: %r", self.agent_id, exc)
                    subscription = None
                    await asyncio.sleep(_FETCH_S)
                    continue
                for message in messages:
                    await self._deliver(message)
        finally:  # else closing the connection waits out its drain timeout for it
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()

    async def _deliver(self, message: Any) -> None:
        discovery = decode(
            DiscoveryShared.from_json, message.data, kind="discoveries", subject=message.subject
        )
        if discovery is None:  # acknowledged: delivered again, it would be as bad
            self.dropped += 1
            await _settle(message.ack())
            return
        wanted = self._subscription or DiscoverySubscription()
        if (
            discovery.agent_id == self.agent_id
            or discovery.confidence < wanted.min_confidence
            or discovery.discovery_id in self._seen
        ):
            await _settle(message.ack())
            return
        attributes = {"agent.id": self.agent_id, "discovery.id": discovery.discovery_id,
                      "discovery.type": discovery.type}  # fmt: skip
        try:  # the handler's span joins the sharer's trace (the message's headers)
            with telemetry.span("discovery.receive", message.headers, attributes,
                                telemetry.SpanKind.CONSUMER):  # fmt: skip
                await _keeping(message, self._handler(discovery))
        except Exception:
            _log.exception(
                "agent %s: on_discovery failed for %s", self.agent_id, discovery.discovery_id
            )
            await _settle(message.nak(delay=1.0))
            return
        self._seen[discovery.discovery_id] = None
        while len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
        self.delivered += 1
        await _settle(message.ack())


async def _keeping(message: Any, handling: Awaitable[Any]) -> Any:
    """Run `handling`, telling JetStream the message is still being worked on meanwhile."""
    task = asyncio.ensure_future(handling)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=ACK_WAIT_S / 2)
            if done:
                return task.result()
            await _settle(message.in_progress())
    finally:
        task.cancel()  # a no-op once it is done; the feed closing cancels the handler too


async def _settle(acknowledgement: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):  # lost: the discovery comes again, and is skipped
        await acknowledgement
