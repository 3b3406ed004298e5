"""The group committer's timing: a lone write on an idle committer is written at once,
while writes that come during a statement in flight wait the window and share one."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from helpers import wait_for
from test_group_commit import new_tasks, state

from runtime.store.group_commit import GroupCommitter

pytestmark = pytest.mark.integration

WINDOW_S = 1.5


async def test_a_lone_write_goes_at_once_and_writes_under_load_share_the_window(
    pool: asyncpg.Pool,
) -> None:
    lone, held, *rest = await new_tasks(pool, 12)
    committer = GroupCommitter(pool, window_s=WINDOW_S)
    blocker = await pool.acquire()
    try:
        began = time.monotonic()
        await committer.write([state(lone, "running")])
        assert time.monotonic() - began < WINDOW_S / 2  # the window is not waited
        assert (committer.immediate, committer.transactions) == (1, 1)

        # a statement in flight (held on a row lock): the writes that come meanwhile form
        # the next batch, which waits the window, then goes as one statement
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", held)
        in_flight = asyncio.ensure_future(committer.write([state(held, "running")]))
        await wait_for(lambda: committer.committing)
        began = time.monotonic()
        later = asyncio.gather(*(committer.write([state(i, "running")]) for i in rest))
        await transaction.rollback()
        assert not await in_flight
        assert not any(await later)
        assert time.monotonic() - began >= WINDOW_S
        assert committer.transactions == 3  # the lone one, the held one, all the rest
        assert committer.immediate == 2
    finally:
        await pool.release(blocker)
        await committer.close()
    statuses = await pool.fetch(
        "SELECT status FROM tasks WHERE id = ANY($1::uuid[])", [lone, held, *rest]
    )
    assert [r["status"] for r in statuses] == ["running"] * 12
