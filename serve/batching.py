"""Concurrent `POST /api/v1/tasks` requests share one `submit_many` call.

One submit per request costs the task manager one round trip and one transaction each;
under load the requests that arrive while calls are in flight go together in the next
one (as group commit does for writes), so a lone request waits for nothing and a burst
costs a few calls. A batch refused as a whole (one item names an unknown dependency, say)
is retried item by item, so each request gets its own answer and no other is refused
for it; a batch refused because its shard did not come back within the restart bound is
not (each item would wait that bound again).
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.tasks import ActorUnreachable, TaskClient

__all__ = ["SubmitBatcher"]

_Entry = tuple[dict[str, Any], "asyncio.Future[dict[str, Any]]"]


class SubmitBatcher:
    def __init__(self, tasks: TaskClient, max_batch: int = 256, max_in_flight: int = 4) -> None:
        self.tasks = tasks
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.calls = 0
        self._pending: list[_Entry] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    async def submit(self, item: dict[str, Any]) -> dict[str, Any]:
        """Store one task (as `TaskClient.submit`), batched with whatever else is waiting."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._send_what_fits()
        return await future

    def _send_what_fits(self, _: object = None) -> None:
        """Up to `max_in_flight` calls at once: a commit's latency, not its count, is
        what a burst waits for."""
        while self._pending and len(self._in_flight) < self.max_in_flight:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            call = asyncio.get_running_loop().create_task(self._send(batch))
            self._in_flight.add(call)
            call.add_done_callback(self._in_flight.discard)
            call.add_done_callback(self._send_what_fits)

    async def _send(self, batch: list[_Entry]) -> None:
        self.calls += 1
        try:
            stored = await self.tasks.submit_many([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, ActorUnreachable):
                # a shard that stayed down past the restart bound is down for each item
                # too: one at a time would make every request wait that bound again
                for _, future in batch:
                    _settle(future, error=exc)
            else:  # find whose it is: each alone
                await asyncio.gather(*(self._send([entry]) for entry in batch))
            return
        for (_, future), task in zip(batch, stored, strict=True):
            _settle(future, result=task)


def _settle(
    future: asyncio.Future[dict[str, Any]],
    result: dict[str, Any] | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():  # the request went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
