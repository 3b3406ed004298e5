"""The link between a supervisor and a child: Ray's report of its death, sped up by a
pidfd when the child runs on the supervisor's node."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import ray

__all__ = ["ProcessGone", "kill", "link"]


class ProcessGone(Exception):
    """A child's process ended (seen through its pidfd before Ray reported it)."""


_node_ids: list[str] = []


async def link(monitor: Any, info: dict[str, Any]) -> Any:
    """`await monitor`; for a child on this node, also watch its process through a Linux
    pidfd and raise `ProcessGone` the moment the process ends: Ray reports the death
    ~15-30 ms later, a pidfd at once."""
    if not _node_ids:
        _node_ids.append(ray.get_runtime_context().get_node_id())
    pid = info.get("pid")
    if not (pid and info.get("node_id") == _node_ids[0] and hasattr(os, "pidfd_open")):
        return await monitor
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # gone already, or no pidfd here: Ray's report will do
        return await monitor
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, readable)
    waiting = asyncio.ensure_future(monitor)
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            return waiting.result()
        raise ProcessGone(f"process {pid} ended")
    finally:
        loop.remove_reader(fd)
        os.close(fd)
        waiting.cancel()
        gone.cancel()


def kill(handle: Any) -> None:
    if handle is not None:
        with contextlib.suppress(Exception):
            ray.kill(handle, no_restart=True)
