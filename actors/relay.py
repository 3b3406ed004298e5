"""`OutboxRelayActor`: the outbox relay as a supervised child of `sup:core`."""

from __future__ import annotations

import asyncio

from runtime import metrics
from runtime.bus import Bus, OutboxRelay
from runtime.config import load_settings
from runtime.store.outbox import oldest_pending_age_s
from runtime.store.pool import create_pool
from supervisors.child import Supervised

__all__ = ["OutboxRelayActor"]


class OutboxRelayActor(Supervised):
    """Publishes the outbox to JetStream until stopped; a crash loses nothing (rows stay)."""

    async def on_start(self) -> None:
        settings = load_settings()
        if settings.database_dsn is None or settings.nats_servers is None:
            raise RuntimeError("RAYVISOR_DATABASE_URL and RAYVISOR_NATS_URL must be set")
        self._pool = await create_pool(settings.database_dsn, min_size=1, max_size=2)
        self._bus = await Bus.connect(
            settings.nats_servers, name="rayvisor-relay", stream=settings.stream_name
        )
        await self._bus.ensure_stream(
            settings.stream_max_age_s, max_consumers=settings.stream_max_consumers
        )
        self._relay = OutboxRelay(
            self._pool,
            self._bus,
            batch_size=settings.outbox_batch_size,
            poll_s=settings.outbox_poll_s,
        )
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._relay.run(self._stop))
        self._metrics = asyncio.get_running_loop().create_task(
            metrics.reporter(self.namespace, self._report_lag)
        )

    async def on_stop(self) -> None:
        self._metrics.cancel()
        self._stop.set()
        self._relay.wake()
        await self._task
        await self._bus.close()
        await self._pool.close()

    async def _report_lag(self) -> None:
        """The relay's lag: the age of the oldest row not published yet."""
        metrics.relay_lag(await asyncio.wait_for(oldest_pending_age_s(self._pool), 2.0))

    async def statistics(self) -> dict[str, int]:
        return {"published": self._relay.published, "failures": self._relay.failures}
