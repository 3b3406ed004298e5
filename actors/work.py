"""The work an agent host holds: each task it was given, under which lease, and how it ended.

A host's tasks outlive the call that brought them: a task manager that dies (or is
restarted) leaves its batches running on the agent, and its next incarnation adopts them
by asking the host what it holds (`Ledger.holding`). So the ledger, not the call, owns a
task's outcome: the call only waits for it, and an outcome no one was waiting for is kept
(the last `keep_done`) until a task manager asks.

- A task is held under one lease; the same task brought again under a newer lease (a
  task manager that re-queued it) takes the job over: its outcome answers the newer lease.
- `cancel` is the only way to `cancelled`; a job interrupted because the host is stopping
  ends `interrupted` (handed back, no attempt spent).
- The `cancel` method of the host runs on another thread: every method here takes the lock.

Plain Python, no Ray: unit-tested alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["INTERRUPTED", "STARTED", "Job", "JobState", "Ledger", "notify", "stream_reports"]

STARTED: dict[str, Any] = {"status": "started"}
"""The marker a host reports when a handler starts: `running` means started."""
INTERRUPTED: dict[str, Any] = {"status": "interrupted"}
"""The outcome of a job the host did not finish for a reason of its own (stopping)."""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass(eq=False)
class Job:
    task_id: str
    lease: int
    envelope: dict[str, Any]
    outcome: asyncio.Future[dict[str, Any]]
    state: JobState = JobState.QUEUED
    cancel_requested: bool = False
    interrupted: bool = False
    handler: asyncio.Task[Any] | None = None
    listeners: list[asyncio.Queue[tuple[str, dict[str, Any]]]] = field(default_factory=list)
    """The calls streaming this job's start and outcome (its run_many, an adopt)."""


class Ledger:
    """Jobs by task id: admitted, running, and the last outcomes kept for adoption."""

    def __init__(self, keep_done: int = 10_000, keep_cancels: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._done: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        self._cancelled_ahead: OrderedDict[str, None] = OrderedDict()
        self._keep_done = keep_done
        self._keep_cancels = keep_cancels

    # ---- admitting --------------------------------------------------------------------

    def admit(
        self, task_id: str, lease: int, envelope: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> tuple[Job, bool]:
        """The job for this lease, and whether it is new (to be run by the caller).

        A job held under an older lease is taken over (not new: it runs or ran already);
        a lease older than the one held is refused with ValueError.
        """
        with self._lock:
            job = self._jobs.get(task_id)
            if job is not None:
                if lease < job.lease:
                    raise ValueError(f"task {task_id}: lease {lease} is older than {job.lease}")
                job.lease = lease
                return job, False
            done = self._done.get(task_id)
            if done is not None and lease < done[0]:
                raise ValueError(f"task {task_id}: lease {lease} is older than {done[0]}")
            if done is not None and done[0] == lease:
                future = loop.create_future()
                future.set_result(done[1])
                return Job(task_id, lease, envelope, future, JobState.DONE), False
            job = Job(task_id, lease, envelope, loop.create_future())
            if self._cancelled_ahead.pop(task_id, "absent") is None:
                job.cancel_requested = True
            self._jobs[task_id] = job
            return job, True

    def started(self, job: Job, handler: asyncio.Task[Any]) -> bool:
        """Mark the job running; False if it was cancelled or interrupted before it started
        (the handler is cancelled then)."""
        with self._lock:
            job.state = JobState.RUNNING
            job.handler = handler
            if job.cancel_requested or job.interrupted:
                handler.cancel()
                return False
            return True

    def finish(self, job: Job, outcome: dict[str, Any]) -> dict[str, Any]:
        """Record the job's outcome (kept for a task manager that was not listening)."""
        if outcome.get("status") == "cancelled" and not job.cancel_requested:
            outcome = INTERRUPTED  # cancelled by nothing that asked: hand it back
        with self._lock:
            job.state = JobState.DONE
            job.handler = None
            if self._jobs.get(job.task_id) is job:
                del self._jobs[job.task_id]
            self._done[job.task_id] = (job.lease, outcome)
            self._done.move_to_end(job.task_id)
            while len(self._done) > self._keep_done:
                self._done.popitem(last=False)
        if not job.outcome.done():
            job.outcome.set_result(outcome)
        return outcome

    # ---- cancelling and stopping ----------------------------------------------------------

    def cancel(self, task_id: str) -> tuple[bool, asyncio.Task[Any] | None]:
        """Ask for a task's cancellation: (whether this host has it, its running handler).

        A cancel for a task not here yet is remembered: the task is cancelled when it comes.
        """
        with self._lock:
            job = self._jobs.get(task_id)
            if job is None:
                self._cancelled_ahead[task_id] = None
                while len(self._cancelled_ahead) > self._keep_cancels:
                    self._cancelled_ahead.popitem(last=False)
                return False, None
            job.cancel_requested = True
            return True, job.handler

    def interrupt_all(self) -> list[asyncio.Task[Any]]:
        """The host is stopping: every job ends `interrupted`; the handlers to cancel."""
        with self._lock:
            handlers = []
            for job in self._jobs.values():
                job.interrupted = True
                if job.handler is not None:
                    handlers.append(job.handler)
            return handlers

    # ---- what a task manager asks ---------------------------------------------------------

    def holding(self, leases: dict[str, int]) -> tuple[dict[str, dict[str, Any]], list[Job]]:
        """For each `task_id: lease`: its outcome if it ended under that lease, the marker
        `started` for a running job, `unknown` for one this host does not hold; and the
        jobs (queued or running) whose outcomes are still to come."""
        answers: dict[str, dict[str, Any]] = {}
        pending: list[Job] = []
        with self._lock:
            for task_id, lease in leases.items():
                job = self._jobs.get(task_id)
                if job is not None and job.lease == lease:
                    pending.append(job)
                    if job.state is JobState.RUNNING:
                        answers[task_id] = STARTED
                    continue
                done = self._done.get(task_id)
                if done is not None and done[0] == lease:
                    answers[task_id] = done[1]
                else:
                    answers[task_id] = {"status": "unknown"}
        return answers, pending

    def active(self) -> list[str]:
        with self._lock:
            return sorted(t for t, j in self._jobs.items() if j.state is JobState.RUNNING)

    def busy(self) -> bool:
        with self._lock:
            return bool(self._jobs)


# ---- reporting: what a run_many or adopt call streams back --------------------------------


def notify(job: Job, report: dict[str, Any]) -> None:
    """Pass a job's start (`STARTED`) or outcome to every call streaming it."""
    for queue in list(job.listeners):
        queue.put_nowait((job.task_id, report))


async def stream_reports(
    jobs: list[Job], ready: list[Any], report_after_s: float
) -> AsyncIterator[list[Any]]:
    """`[task_id, report]` pairs of `jobs` (after those in `ready`) in chunks, until every
    job has ended: reports that are ready go together, but never wait more than
    `report_after_s` behind a job still running."""
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    waiting: set[str] = set()
    for job in jobs:
        if job.outcome.done():
            ready.append([job.task_id, job.outcome.result()])
            continue
        job.listeners.append(queue)
        waiting.add(job.task_id)
    try:
        while waiting:
            if not ready:
                item = await queue.get()
            else:
                try:
                    item = await asyncio.wait_for(queue.get(), report_after_s)
                except TimeoutError:
                    yield ready
                    ready = []
                    continue
            while True:
                if item[1] is not STARTED:
                    waiting.discard(item[0])
                ready.append(list(item))
                if queue.empty():
                    break
                item = queue.get_nowait()
        if ready:
            yield ready
    finally:
        for job in jobs:
            with contextlib.suppress(ValueError):
                job.listeners.remove(queue)
