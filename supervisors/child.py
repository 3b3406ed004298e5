"""What a supervisor needs from every child actor: a link, a ping, a graceful stop.

`Supervised` is the base of every actor a `Supervisor` starts (agent hosts, the task
manager, supervisors themselves). It gives the supervisor three ways to see a failure:

- `rv_monitor()` is called once and stays pending for the child's whole life, like an
  OTP link: if the process dies, the pending call fails with `RayActorError` within
  milliseconds; if the child ends itself, it returns the reason (`normal` or `fatal`).
- `rv_ping()` runs in its own concurrency group (its own thread and event loop), so it
  answers while the child's main loop works, and reports how long ago that loop last
  ticked: a loop stuck in a blocking call is seen as stalled, not as alive.
- `exit_child(reason)` lets the child report that it is done or broken.

Lifecycle: the supervisor creates the actor, awaits `rv_start()` (which runs `on_start`
on the main loop), and later `rv_stop()` (which runs `on_stop`) before killing it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import time
from typing import Any, Literal

import ray

from runtime import telemetry

__all__ = [
    "CONCURRENCY_GROUPS",
    "CONTROL_GROUP",
    "ChildExit",
    "Supervised",
]

CONTROL_GROUP = "rv_control"
CONCURRENCY_GROUPS = {CONTROL_GROUP: 4}
_TICK_S = 0.05

ExitReason = Literal["normal", "fatal", "shutdown"]


class ChildExit(dict):
    """The value `rv_monitor` returns: `{"reason": ..., "detail": ...}`."""


class Supervised:
    """Base class for an actor that runs under a supervisor."""

    child_id: str = ""
    supervisor_id: str = ""
    namespace: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._exit: concurrent.futures.Future[ChildExit] = concurrent.futures.Future()
        self._last_tick = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None

    # ---- called by the supervisor ------------------------------------------------

    async def rv_start(
        self, child_id: str, supervisor_id: str, namespace: str | None = None
    ) -> dict[str, Any]:
        """Start ticking and run `on_start`; returns where the child runs. `namespace` is
        the tree's Ray namespace, where the child finds its named peers."""
        self.child_id = child_id
        self.supervisor_id = supervisor_id
        self.namespace = namespace or ray.get_runtime_context().namespace
        self._last_tick = time.monotonic()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        telemetry.setup(type(self).__name__, actor=child_id)
        await self.on_start()
        context = ray.get_runtime_context()
        return {
            "pid": os.getpid(),
            "node_id": context.get_node_id(),
            "actor_id": context.get_actor_id(),
        }

    async def rv_warm(self) -> None:
        """Get ready before knowing which child this is (a standby spare); default: nothing."""

    @ray.method(concurrency_group=CONTROL_GROUP)
    async def rv_ping(self) -> float:
        """Seconds since the main event loop last ran: large means hung."""
        return time.monotonic() - self._last_tick

    @ray.method(concurrency_group=CONTROL_GROUP)
    async def rv_runtime_env(self) -> str:
        """This actor's serialized runtime env, exactly as Ray hashes it: a supervisor has
        Ray prestart worker processes with it, which only actors of this env can take."""
        return ray.get_runtime_context().get_runtime_env_string()

    @ray.method(concurrency_group=CONTROL_GROUP)
    async def rv_monitor(self) -> ChildExit:
        """Pending until the child ends itself; fails at once if its process dies."""
        return await asyncio.wrap_future(self._exit)

    async def rv_stop(self) -> None:
        """Graceful stop: run `on_stop`, then report a normal exit."""
        try:
            await self.on_stop()
        finally:
            if self._ticker is not None:
                self._ticker.cancel()
            self.exit_child("shutdown")

    # ---- for subclasses ------------------------------------------------------------

    async def on_start(self) -> None:
        """Runs on the main loop before the child counts as started."""

    async def on_stop(self) -> None:
        """Runs on a graceful stop; not run when the process is killed."""

    def exit_child(self, reason: ExitReason, detail: str = "") -> None:
        """End this child: `normal` (done), `fatal` (broken, restart me) or `shutdown`."""
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self._exit.set_result(ChildExit(reason=reason, detail=detail))

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(_TICK_S)
