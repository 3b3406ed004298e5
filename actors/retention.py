"""`RetentionActor`: purges old records every `interval_s`, supervised under `sup:root`.

It runs `runtime.store.retention.purge` at start and then every `interval_s`. A run that
fails (PostgreSQL unreachable) is logged and tried again at the next interval rather than
crashing the actor: an outage is not a fault of this child. If the process dies, its
supervisor starts it again and the new incarnation purges at once; a run cut short loses
nothing, since every batch commits on its own and what is left is the next run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

from runtime.config import load_settings
from runtime.store.pool import create_pool
from runtime.store.retention import purge
from supervisors.child import Supervised

__all__ = ["RetentionActor"]

_log = logging.getLogger("rayvisor.retention")


class RetentionActor(Supervised):
    """Deletes records older than `days`, in batches of `batch_size`, every `interval_s`."""

    def __init__(
        self, days: float, interval_s: float, batch_size: int = 1000, pause_s: float = 0.1
    ) -> None:
        super().__init__()
        if days <= 0 or interval_s <= 0:
            raise ValueError(f"days and interval_s must be > 0, got {days}, {interval_s}")
        self._older_than = timedelta(days=days)
        self._interval_s, self._batch_size, self._pause_s = interval_s, batch_size, pause_s
        self._runs = self._failures = 0
        self._purged: dict[str, int] = {}
        self._last_run_at: float | None = None

    async def on_start(self) -> None:
        settings = load_settings()
        if settings.database_dsn is None:
            raise RuntimeError("RAYVISOR_DATABASE_URL must be set")
        self._pool = await create_pool(settings.database_dsn, min_size=1, max_size=1)
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def on_stop(self) -> None:
        self._stop.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._pool.close()

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self._purge_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval_s)

    async def _purge_once(self) -> None:
        began = time.monotonic()
        try:
            report = await purge(
                self._pool, self._older_than, batch_size=self._batch_size, pause_s=self._pause_s
            )
        except Exception:
            self._failures += 1
            _log.exception("retention run failed; next try in %.0f s", self._interval_s)
            return
        self._runs += 1
        self._last_run_at = time.time()
        for table, rows in report.purged.items():
            self._purged[table] = self._purged.get(table, 0) + rows
        if report.total:
            _log.info(
                "retention purged %d rows in %d batches (%.1f s): %s",
                report.total,
                report.batches,
                time.monotonic() - began,
                {t: n for t, n in report.purged.items() if n},
            )

    async def statistics(self) -> dict[str, Any]:
        """Runs done and failed, rows purged per table since this incarnation started."""
        return {
            "runs": self._runs,
            "failures": self._failures,
            "purged": dict(self._purged),
            "last_run_at": self._last_run_at,
        }
