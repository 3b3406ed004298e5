"""The ledger of an agent host's jobs, without Ray: leases, take-overs, cancels, stops."""

from __future__ import annotations

import asyncio

import pytest

from actors.work import INTERRUPTED, STARTED, JobState, Ledger


async def test_a_job_is_admitted_once_and_a_newer_lease_takes_it_over() -> None:
    ledger, loop = Ledger(), asyncio.get_running_loop()
    job, new = ledger.admit("t1", 1, {}, loop)
    assert new
    again, new = ledger.admit("t1", 2, {}, loop)
    assert again is job and not new and job.lease == 2
    with pytest.raises(ValueError, match="older"):
        ledger.admit("t1", 1, {}, loop)


async def test_an_outcome_is_kept_for_the_lease_it_ended_under() -> None:
    ledger, loop = Ledger(keep_done=2), asyncio.get_running_loop()
    job, _ = ledger.admit("t1", 3, {}, loop)
    ledger.finish(job, {"status": "completed", "result": 1})
    answers, pending = ledger.holding({"t1": 3, "t2": 1})
    assert answers == {"t1": {"status": "completed", "result": 1}, "t2": {"status": "unknown"}}
    assert pending == []
    replay, new = ledger.admit("t1", 3, {}, loop)
    assert not new and replay.state is JobState.DONE and replay.outcome.result()["result"] == 1
    with pytest.raises(ValueError, match="older"):
        ledger.admit("t1", 2, {}, loop)
    for n in range(2, 5):  # only the last `keep_done` outcomes are kept
        other, _ = ledger.admit(f"t{n}", 1, {}, loop)
        ledger.finish(other, {"status": "completed"})
    assert ledger.holding({"t1": 3})[0] == {"t1": {"status": "unknown"}}


async def test_running_jobs_are_reported_started_and_pending() -> None:
    ledger, loop = Ledger(), asyncio.get_running_loop()
    job, _ = ledger.admit("t1", 1, {}, loop)
    handler = loop.create_task(asyncio.Event().wait())  # runs until cancelled
    assert ledger.started(job, handler)
    answers, pending = ledger.holding({"t1": 1})
    assert answers == {"t1": STARTED} and pending == [job]
    assert ledger.active() == ["t1"]
    handler.cancel()


async def test_only_a_cancel_ends_a_job_cancelled() -> None:
    ledger, loop = Ledger(), asyncio.get_running_loop()
    asked, _ = ledger.admit("asked", 1, {}, loop)
    assert ledger.cancel("asked") == (True, None)
    assert ledger.finish(asked, {"status": "cancelled"}) == {"status": "cancelled"}
    unasked, _ = ledger.admit("unasked", 1, {}, loop)
    assert ledger.finish(unasked, {"status": "cancelled"}) == INTERRUPTED


async def test_a_cancel_that_comes_first_is_remembered() -> None:
    ledger, loop = Ledger(), asyncio.get_running_loop()
    assert ledger.cancel("early") == (False, None)
    job, _ = ledger.admit("early", 1, {}, loop)
    assert job.cancel_requested
    handler = loop.create_task(asyncio.Event().wait())  # runs until cancelled
    assert not ledger.started(job, handler)  # cancelled before it started
    await asyncio.sleep(0)
    assert handler.cancelled()


async def test_a_stop_interrupts_every_job() -> None:
    ledger, loop = Ledger(), asyncio.get_running_loop()
    running, _ = ledger.admit("running", 1, {}, loop)
    queued, _ = ledger.admit("queued", 1, {}, loop)
    handler = loop.create_task(asyncio.Event().wait())  # runs until cancelled
    ledger.started(running, handler)
    assert ledger.interrupt_all() == [handler]
    assert queued.interrupted and running.interrupted
    handler.cancel()
