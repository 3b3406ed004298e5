"""`ProbeWorker`: the smallest supervised worker, for demos, tests and benchmarks.

It does nothing but answer, and can be told to fail in each way a supervisor must
handle: a crash of its process, a hang of its event loop, a normal or a fatal exit.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from supervisors.child import Supervised

__all__ = ["ProbeWorker"]


class ProbeWorker(Supervised):
    def __init__(self, label: str = "", fail_start: bool = False) -> None:
        super().__init__()
        self.label = label
        self.fail_start = fail_start

    async def on_start(self) -> None:
        if self.fail_start:
            raise RuntimeError("told to fail at start")

    async def whoami(self) -> dict[str, Any]:
        return {"child_id": self.child_id, "pid": os.getpid(), "label": self.label}

    async def crash(self) -> None:
        os._exit(1)

    async def hang(self, seconds: float) -> None:
        time.sleep(seconds)  # blocks the event loop on purpose: looks hung

    async def work(self, seconds: float) -> bool:
        await asyncio.to_thread(time.sleep, seconds)  # busy, but off the event loop
        return True

    async def finish(self, reason: str = "normal", detail: str = "") -> None:
        self.exit_child(reason, detail)  # type: ignore[arg-type]
