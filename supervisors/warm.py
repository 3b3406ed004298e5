"""Warm standby spares and warm Ray workers: what makes a restart skip a process start.

A mixin of `Supervisor`, kept apart because none of it decides anything: `standby`
spares are pre-created actors a restart promotes, `warm_workers` are idle Ray worker
processes (bound to no child) that a creation takes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray.exceptions import RayError

from runtime.raycluster import prestart_workers
from supervisors.spec import ChildSpec, SupervisorSpec

__all__ = ["WarmSpares"]

_log = logging.getLogger(__name__)
_WARM_KEEP_ALIVE_S = 120
# a warm worker asked for less than this long ago may not be registered yet, so a creation
# then most likely started its own process and left the warm worker idle
_WARM_START_S = 2.0


class WarmSpares:
    """Standby spares and warm workers of one supervisor."""

    spec: SupervisorSpec
    children: list[Any]
    state: str
    _spares: list[Any]
    _filling: bool
    _warm: list[tuple[float, float]]
    _warm_env: str | None

    async def _create(self, spec: ChildSpec, name: str | None) -> Any:
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:
        raise NotImplementedError

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

    async def _learn_warm_env(self, child: Any) -> None:
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
