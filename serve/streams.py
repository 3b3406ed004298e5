"""Server-sent events from NATS: durable subjects replayed from JetStream, others live.

An event from the JetStream stream carries its stream sequence as its SSE `id`, so a
client that reconnects with `Last-Event-ID: <id>` gets every durable event after it and
misses none. Events on subjects the stream does not keep (heartbeats, task progress) are
delivered live, without an id. A slow client holds back only its own consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from runtime.bus import Bus, is_durable
from runtime.models.events import DURABLE_SUBJECTS

__all__ = ["StreamedMessage", "subject_stream", "subjects_overlap"]

_QUEUE_SIZE = 1000


@dataclass(frozen=True)
class StreamedMessage:
    seq: int | None
    """The JetStream sequence, or None for a live-only subject."""
    subject: str
    data: bytes


def subjects_overlap(a: str, b: str) -> bool:
    """Whether some concrete subject matches both NATS patterns `a` and `b`."""
    left, right = a.split("."), b.split(".")
    for x, y in zip(left, right, strict=False):
        if ">" in (x, y):
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(left) == len(right)


async def subject_stream(
    bus: Bus, pattern: str, after_seq: int | None = None
) -> AsyncIterator[StreamedMessage]:
    """Messages on `pattern` from now on, or, given `after_seq`, the durable ones after it."""
    queue: asyncio.Queue[StreamedMessage] = asyncio.Queue(_QUEUE_SIZE)
    subscriptions = []
    pumps: list[asyncio.Task[None]] = []

    async def live(msg: Msg) -> None:
        if not is_durable(msg.subject):
            with contextlib.suppress(asyncio.QueueFull):  # live-only: a laggard loses these
                queue.put_nowait(StreamedMessage(None, msg.subject, msg.data))

    try:
        if any(subjects_overlap(pattern, durable) for durable in DURABLE_SUBJECTS):
            config = (
                ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
                if after_seq is None
                else ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1
                )
            )
            durable = await bus.js.subscribe(
                pattern, stream=bus.stream, ordered_consumer=True, config=config
            )
            subscriptions.append(durable)

            async def pump() -> None:
                async for msg in durable.messages:
                    seq = msg.metadata.sequence.stream
                    await queue.put(StreamedMessage(seq, msg.subject, msg.data))

            pumps.append(asyncio.get_running_loop().create_task(pump()))
        subscriptions.append(await bus.nc.subscribe(pattern, cb=live))
        while True:
            yield await queue.get()
    finally:
        for pump_task in pumps:
            pump_task.cancel()
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
