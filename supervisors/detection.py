"""How a supervisor sees a child fail: the link (a pending `rv_monitor` call that fails
when the process dies) and the heartbeat (pings on the child's control loop that fail,
time out or find its main loop stalled).

A mixin of `Supervisor`: it only reports an exit (`_on_exit`); what the exit means is the
supervisor's decision.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ray.exceptions import RayError

from runtime.models.enums import SupervisorEventKind as Kind
from supervisors.child_state import Child
from supervisors.link import ProcessGone, kill, link
from supervisors.spec import SupervisorSpec

__all__ = ["FailureDetection"]


class FailureDetection:
    """The link and the heartbeat of each running child."""

    spec: SupervisorSpec
    state: str

    if TYPE_CHECKING:  # the supervisor's own, used here

        async def _child_exited(self, child: Child, reason: str, abnormal: bool) -> None: ...

        def _emit(
            self, kind: Kind, child: Child | None, reason: str = "", detail: Any = None
        ) -> None: ...

        def _top_up_warm(self) -> None: ...

    async def _watch(self, child: Child, generation: int, monitor: Any) -> None:
        """The link: returns when the child ends itself, raises when its process dies."""
        try:
            exit_info = await link(monitor, child.info)
            reason = exit_info.get("reason", "normal")
            abnormal = reason == "fatal"
            if exit_info.get("detail"):
                reason = f"{reason}: {exit_info['detail']}"
        except (RayError, ProcessGone) as exc:
            reason = child.kill_reason or f"died: {type(exc).__name__}"
            abnormal = True
        await self._on_exit(child, generation, reason, abnormal)

    async def _on_exit(self, child: Child, generation: int, reason: str, abnormal: bool) -> None:
        """The one door for a running child's end (from its watcher or its heartbeat);
        the first report of a generation wins, later ones are stale."""
        if child.generation != generation:
            return
        async with child.lock:
            if child.generation != generation:
                return
            kill(child.retire())
            await self._child_exited(child, reason, abnormal)

    async def _heartbeat(self, child: Child, generation: int) -> None:
        """Ping on the child's control loop; `misses` misses in a row mean hung."""
        hb = self.spec.heartbeat
        # a healthy loop ticks every 50 ms; a whole interval without a tick is a stall
        # (shorter lags are a loaded machine's, and killing the child would only add to
        # the load), which keeps detection within about (misses + 1) * interval
        stall_s = max(0.1, hb.interval_s)
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
                    kill(child.handle)
                    # handled here, not left to Ray's report of the death, which may lag
                    await self._on_exit(child, generation, child.kill_reason, True)
                    return
            await asyncio.sleep(max(0.0, hb.interval_s - (time.monotonic() - began)))

    def _record_healthy(self, child: Child) -> None:
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
