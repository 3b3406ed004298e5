"""Writing a supervisor's decisions: in order, and never dropped for an outage.

A decision is the record of what a supervisor did (`supervisor_events` and its outbox
event), so losing one while PostgreSQL is briefly unreachable would leave the history
wrong exactly when it matters. `write_in_order` therefore retries the head of the queue
with a capped backoff until it is written; only an error that no retry can fix (a
data, integrity or syntax error from the server) drops the one decision, so a bad row
cannot stop every later one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

__all__ = ["is_permanent", "retry_until", "write_in_order"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATE classes a retry cannot fix: data exception, integrity violation, syntax/access
_PERMANENT_CLASSES = {"22", "23", "42"}


def is_permanent(exc: BaseException) -> bool:
    """True for a server error that the same statement would hit again."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and sqlstate[:2] in _PERMANENT_CLASSES


async def write_in_order(
    queue: asyncio.Queue[T],
    write: Callable[[T], Awaitable[object]],
    *,
    label: str = "",
    min_s: float = 0.1,
    max_s: float = 2.0,
) -> None:
    """Forever: take the next item and `write` it, retrying (min_s doubling to max_s) until
    it is written; the queue's `task_done` follows each item, so `join` means all written."""
    while True:
        item = await queue.get()
        try:
            delay, failures = min_s, 0
            while True:
                try:
                    await write(item)
                    break
                except Exception as exc:
                    if is_permanent(exc):
                        _log.error("%s: dropping a decision the store refuses: %r", label, exc)
                        break
                    failures += 1
                    if failures == 1 or failures % 10 == 0:  # say it, without flooding
                        _log.warning("%s: writing a decision failed %d times (retrying): %r",
                                     label, failures, exc)  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, max_s)
        finally:
            queue.task_done()


async def retry_until(
    attempt: Callable[[], Awaitable[T]],
    *,
    budget_s: float,
    label: str = "",
    min_s: float = 0.1,
    max_s: float = 2.0,
) -> T:
    """`attempt()` until it succeeds or `budget_s` has passed (then its error is raised):
    a store that is down for a moment does not fail a supervisor's start."""
    deadline = time.monotonic() + budget_s
    delay = min_s
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if is_permanent(exc) or time.monotonic() + delay > deadline:
                raise
            _log.warning("%s: %r; retrying in %.1fs", label, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_s)
