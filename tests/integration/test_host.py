"""`AgentHost` in a real Ray actor, on real PostgreSQL and NATS, created as a supervisor would."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import ray
from helpers import wait_for, worker_runtime_env

from actors.agent_state import CRASH_REASON
from actors.host import FATAL_IN_A_ROW, AgentHost
from runtime.bus import Bus
from runtime.models.events import AgentHeartbeat, Event, TaskProgress
from runtime.store import agents as agent_store
from supervisors.child import CONCURRENCY_GROUPS

pytestmark = pytest.mark.integration

NAMESPACE = "rayvisor-test"
ECHO = "actors.builtin.echo:EchoAgent"
COUNTER = "actors.builtin.echo:CounterAgent"
HEARTBEAT_S = 0.2

HostActor = ray.remote(concurrency_groups=CONCURRENCY_GROUPS, max_concurrency=1000)(AgentHost)


@pytest.fixture
def start_host(ray_actors: None, services: Any, database_url: str) -> Callable[..., Any]:
    """Create, and by default start, a host pointed at this module's database."""

    async def start(
        agent_class: str = ECHO,
        child_id: str | None = None,
        *,
        params: dict[str, Any] | None = None,
        started: bool = True,
    ) -> tuple[Any, str]:
        child_id = child_id or f"host-{uuid.uuid4().hex[:10]}"
        env = {
            "RAYVISOR_DATABASE_URL": database_url,
            "RAYVISOR_NATS_URL": services.nats_url,
            "RAYVISOR_HOME": str(services.home),
            "RAYVISOR_SUPERVISION__HEARTBEAT__INTERVAL_S": str(HEARTBEAT_S),
        }
        handle = HostActor.options(
            name=f"agent:{child_id}:{uuid.uuid4().hex[:6]}",
            namespace=NAMESPACE,
            runtime_env=worker_runtime_env(env),
        ).remote(agent_class, params)
        if started:
            where = await handle.rv_start.remote(child_id, "sup-test")
            assert where["pid"] > 0
        return handle, child_id

    return start


def task(**parameters: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "attempt": 1, "parameters": parameters}


async def transitions(pool: asyncpg.Pool, agent_id: str) -> list[tuple[str, str, str]]:
    return [
        (str(e.from_state), str(e.to_state), e.reason)
        for e in await agent_store.history(pool, agent_id)
    ]


async def outbox_payloads(pool: asyncpg.Pool, subject: str) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT payload FROM outbox WHERE subject = $1 ORDER BY seq", subject)
    return [row["payload"] for row in rows]


async def collect(bus: Bus, subject: str) -> list[Event]:
    received: list[Event] = []

    async def keep(event: Event, msg: Any) -> None:
        received.append(event)

    await bus.subscribe(subject, keep)
    await bus.nc.flush()
    return received


async def test_start_records_the_way_to_idle_with_its_events(
    start_host: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    host, agent_id = await start_host(COUNTER)

    assert [(f, t) for f, t, _ in await transitions(pool, agent_id)] == [
        ("created", "starting"),
        ("starting", "running"),
        ("running", "idle"),
    ]
    record = await agent_store.get_agent(pool, agent_id)
    assert record is not None
    assert (record.state, record.capabilities, record.supervisor_id) == (
        "idle",
        ["count"],
        "sup-test",
    )
    statuses = await outbox_payloads(pool, f"agents.{agent_id}.status")
    assert [(s["from_state"], s["to_state"]) for s in statuses] == [
        ("created", "starting"),
        ("starting", "running"),
        ("running", "idle"),
    ]
    announced = [
        a
        for a in await outbox_payloads(pool, "agents.discovery.announce")
        if a["agent_id"] == agent_id
    ]
    assert len(announced) == 1
    assert announced[0]["capabilities"] == ["count"]
    described = await host.describe.remote()
    assert described["agent_id"] == agent_id
    assert described["state"] == "idle"
    assert described["capabilities"] == ["count"]
    assert described["saved_state"] == {}


async def test_a_warm_spare_takes_its_identity_at_start(
    start_host: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    spare, _ = await start_host(ECHO, started=False)
    await spare.rv_warm.remote()
    await spare.rv_warm.remote()  # idempotent
    described = await spare.describe.remote()
    assert (described["agent_id"], described["warm"], described["state"]) == (None, True, "created")
    assert await spare.run.remote(task()) == {"status": "interrupted"}  # handed back

    agent_id = f"spare-{uuid.uuid4().hex[:8]}"
    await spare.rv_start.remote(agent_id, "sup-test")
    assert (await spare.describe.remote())["state"] == "idle"
    assert (await agent_store.get_agent(pool, agent_id)).state == "idle"


async def test_run_returns_the_result_and_goes_busy_then_idle(
    start_host: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    host, agent_id = await start_host(ECHO)

    outcome = await host.run.remote(task(x=1, words=["a", "b"]))

    assert outcome == {"status": "completed", "result": {"x": 1, "words": ["a", "b"]}}
    await wait_for(lambda: _state_is(host, "idle"), timeout_s=10)  # after a short linger
    # the host knows it is idle just before the row says so: wait for the row
    await wait_for(
        lambda: _last_transitions_are(pool, agent_id, [("idle", "busy"), ("busy", "idle")]),
        timeout_s=10,
    )


async def test_concurrent_runs_take_turns(
    start_host: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    host, agent_id = await start_host(ECHO)

    outcomes = await asyncio.gather(*(host.run.remote(task(n=n, sleep_s=0.05)) for n in range(5)))

    assert sorted(o["result"]["n"] for o in outcomes) == [0, 1, 2, 3, 4]
    await wait_for(lambda: _state_is(host, "idle"), timeout_s=10)
    # one burst of work is one busy period, not a busy/idle pair per task
    await wait_for(
        lambda: _last_transitions_are(pool, agent_id, [("idle", "busy"), ("busy", "idle")]),
        timeout_s=10,
    )
    states = [t for _, t, _ in await transitions(pool, agent_id)][3:]
    assert states == ["busy", "idle"]


async def test_saved_state_survives_a_kill(
    start_host: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    host, agent_id = await start_host(COUNTER)
    assert (await host.run.remote(task()))["result"] == 1
    assert (await host.run.remote(task()))["result"] == 2
    await wait_for(lambda: _stored_state_is(pool, agent_id, "idle"), timeout_s=10)

    ray.kill(host, no_restart=True)
    replacement, _ = await start_host(COUNTER, agent_id)

    assert (await replacement.describe.remote())["saved_state"] == {"count": 2}
    assert (await replacement.run.remote(task()))["result"] == 3
    history = await transitions(pool, agent_id)
    restart = history.index(("idle", "error", CRASH_REASON))
    assert [t for _, t, _ in history[restart + 1 : restart + 4]] == ["starting", "running", "idle"]
    assert (await agent_store.load_state(pool, agent_id)) == {"count": 3}


async def test_ping_answers_while_work_runs_off_the_loop_and_sees_a_blocked_loop(
    start_host: Callable[..., Any],
) -> None:
    host, _ = await start_host(ECHO)

    working = host.run.remote(task(work_s=1.0))
    await wait_for(lambda: _active(host), timeout_s=10)
    lags = []
    while not _done(working):
        lags.append(await asyncio.wait_for(host.rv_ping.remote(), 1.0))
    assert (await working)["status"] == "completed"
    assert len(lags) >= 5
    assert max(lags) < 0.5

    blocking = host.run.remote(task(block_s=2.0))
    lag = await wait_for(lambda: _lag_over(host, 0.5), timeout_s=10)
    assert lag > 0.5
    assert (await blocking)["status"] == "completed"
    await wait_for(lambda: _lag_under(host, 0.2), timeout_s=10)


async def test_cancel_stops_a_sleeping_handler(
    start_host: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    host, agent_id = await start_host(ECHO)
    sleeping = task(sleep_s=60)

    running = host.run.remote(sleeping)
    await wait_for(lambda: _active(host, sleeping["id"]), timeout_s=10)
    assert await host.cancel.remote(sleeping["id"]) is True

    assert await asyncio.wait_for(running, 10) == {"status": "cancelled"}
    assert await host.cancel.remote(sleeping["id"]) is False
    await wait_for(lambda: _state_is(host, "idle"), timeout_s=10)
    assert (await host.run.remote(task(after=True)))["result"] == {"after": True}
    await wait_for(lambda: _state_is(host, "idle"), timeout_s=10)
    await wait_for(
        lambda: _last_transitions_are(pool, agent_id, [("idle", "busy"), ("busy", "idle")] * 2),
        timeout_s=10,
    )


async def test_heartbeats_arrive_on_nats(start_host: Callable[..., Any], bus: Bus) -> None:
    agent_id = f"beat-{uuid.uuid4().hex[:8]}"
    received = await collect(bus, f"agents.{agent_id}.heartbeat")

    host, _ = await start_host(ECHO, agent_id)  # keep the handle: the actor lives while it does

    await wait_for(lambda: len(received) >= 3, timeout_s=10)
    beat = received[-1]
    assert isinstance(beat, AgentHeartbeat)
    assert (beat.agent_id, beat.state, beat.active_tasks) == (agent_id, "idle", 0)
    assert 0 <= beat.loop_lag_ms < 1000
    assert (await host.describe.remote())["state"] == "idle"
    gaps = [(b.timestamp - a.timestamp).total_seconds() for a, b in itertools.pairwise(received)]
    assert all(0.1 < gap < 1.0 for gap in gaps), gaps


async def test_progress_is_published_for_the_task(start_host: Callable[..., Any], bus: Bus) -> None:
    host, agent_id = await start_host(ECHO)
    with_progress = task(progress=4)
    received = await collect(bus, f"tasks.{with_progress['id']}.progress")

    assert (await host.run.remote(with_progress))["status"] == "completed"

    await wait_for(lambda: len(received) == 4, timeout_s=10)
    assert all(isinstance(e, TaskProgress) and e.agent_id == agent_id for e in received)
    assert [e.progress for e in received] == [0.25, 0.5, 0.75, 1.0]


async def test_a_discovery_is_stored_with_its_event(
    start_host: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    host, agent_id = await start_host(ECHO)
    found = {"type": "pattern", "content": "burst of failed logins", "confidence": 0.9}

    assert (await host.run.remote({"parameters": {"discover": found}}))["status"] == "completed"

    row = await pool.fetchrow(
        "SELECT id, type, content FROM discoveries WHERE agent_id = $1", agent_id
    )
    assert (row["type"], row["content"]) == ("pattern", "burst of failed logins")
    shared = await outbox_payloads(pool, f"discoveries.{agent_id}.pattern")
    assert [s["discovery_id"] for s in shared] == [str(row["id"])]


async def test_a_non_json_result_is_a_logical_failure(
    start_host: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    host, agent_id = await start_host(ECHO)

    outcome = await host.run.remote(task(not_json=True))

    assert outcome["status"] == "failed"
    assert outcome["error"]["category"] == "logical"
    assert "not JSON-serialisable" in outcome["error"]["reason"]
    await wait_for(lambda: _state_is(host, "idle"), timeout_s=10)
    errors = await outbox_payloads(pool, f"agents.{agent_id}.events.error")
    assert [(e["category"], e["error_type"]) for e in errors] == [("logical", "LogicalError")]
    assert (await host.run.remote(task(ok=1)))["status"] == "completed"


async def test_a_cancel_that_overtakes_its_task_still_cancels_it(
    start_host: Callable[..., Any],
) -> None:
    host, _ = await start_host(ECHO)
    early = task(sleep_s=30)

    assert await host.cancel.remote(early["id"]) is False  # not here yet
    assert await host.run.remote(early) == {"status": "cancelled"}
    assert (await host.run.remote(task(ok=1)))["status"] == "completed"


async def test_a_result_postgresql_cannot_store_is_a_logical_failure(
    start_host: Callable[..., Any],
) -> None:
    host, _ = await start_host(ECHO)

    outcome = await host.run.remote(task(text="a\x00b"))  # echoed back as the result

    assert outcome["status"] == "failed"
    assert outcome["error"]["category"] == "logical"
    assert "text holds a NUL" in outcome["error"]["reason"]
    assert (await host.run.remote(task(ok=1)))["status"] == "completed"


async def test_transient_and_logical_failures_leave_the_agent_serving(
    start_host: Callable[..., Any],
) -> None:
    host, _ = await start_host(ECHO)

    for kind in ("transient", "logical"):
        outcome = await host.run.remote(task(fail=kind))
        assert outcome["status"] == "failed"
        assert outcome["error"] == {
            "category": kind,
            "type": f"{kind.capitalize()}Error",
            "reason": f"asked to fail ({kind})",
            "detail": {"requested": kind},
        }
    await wait_for(lambda: _state_is(host, "idle"), timeout_s=10)


async def test_a_fatal_failure_fails_that_attempt_and_the_agent_keeps_serving(
    start_host: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    host, agent_id = await start_host(ECHO)

    outcome = await host.run.remote(task(fail="fatal"))

    assert outcome["error"]["category"] == "fatal"  # retried on another agent by the TM
    assert (await host.run.remote(task(ok=1)))["status"] == "completed"
    assert "error" not in [to for _, to, _ in await transitions(pool, agent_id)]


async def test_fatal_failures_in_a_row_mark_the_agent_and_tell_the_supervisor(
    start_host: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    host, agent_id = await start_host(ECHO)
    monitor = host.rv_monitor.remote()

    batch = [task(fail="fatal") for _ in range(FATAL_IN_A_ROW)] + [task(n=2)]
    chunks = await chunks_of(host.run_many.remote(batch))

    outcomes = _outcomes(chunks)
    assert [o["error"]["category"] for _, o in outcomes[:-1]] == ["fatal"] * FATAL_IN_A_ROW
    assert outcomes[-1][1] == {"status": "interrupted"}  # not started: handed back, free
    assert (await asyncio.wait_for(monitor, 10))["reason"] == "fatal"
    assert (await transitions(pool, agent_id))[-1][:2] == ("busy", "error")
    assert await host.run.remote(task()) == {"status": "interrupted"}


async def chunks_of(call: Any) -> list[list[list[Any]]]:
    """Every chunk a `run_many` streaming call yields, in order."""
    return [await ref async for ref in call]


async def test_run_many_sends_ready_outcomes_before_a_slow_task_ends(
    start_host: Callable[..., Any],
) -> None:
    host, _ = await start_host(ECHO)
    quick, slow, last = task(n=1), task(n=2, sleep_s=1.0), task(n=3)

    chunks = await chunks_of(host.run_many.remote([quick, slow, last]))

    # the quick outcome travels in a chunk before the one that ends the slow task (the
    # quick start may go alone first, on a loaded machine)
    quick_done = [quick["id"], {"status": "completed", "result": {"n": 1}}]
    at = next(i for i, chunk in enumerate(chunks) if quick_done in chunk)
    slow_done = [slow["id"], {"status": "completed", "result": {"n": 2, "sleep_s": 1.0}}]
    slow_at = next(i for i, chunk in enumerate(chunks) if slow_done in chunk)
    assert at < slow_at, chunks
    assert [quick["id"], {"status": "started"}] in chunks[0]  # each start is told too
    outcomes = _outcomes(chunks)
    assert [task_id for task_id, _ in outcomes] == [quick["id"], slow["id"], last["id"]]
    assert all(outcome["status"] == "completed" for _, outcome in outcomes)
    started = [t for chunk in chunks for t, o in chunk if o == {"status": "started"}]
    assert started == [quick["id"], slow["id"], last["id"]]


async def test_run_many_cancels_a_task_waiting_in_its_batch(
    start_host: Callable[..., Any],
) -> None:
    host, _ = await start_host(ECHO)
    sleeping, waiting = task(sleep_s=60), task(n=2)
    call = chunks_of(host.run_many.remote([sleeping, waiting]))
    gathered = asyncio.ensure_future(call)
    await wait_for(lambda: _active(host, sleeping["id"]), timeout_s=10)

    assert await host.cancel.remote(waiting["id"]) is True  # queued behind the sleeper
    assert await host.cancel.remote(sleeping["id"]) is True

    chunks = await asyncio.wait_for(gathered, 10)
    assert _outcomes(chunks) == [
        [sleeping["id"], {"status": "cancelled"}],
        [waiting["id"], {"status": "cancelled"}],
    ]


async def test_a_stop_hands_back_what_the_agent_holds_without_cancelling_it(
    start_host: Callable[..., Any],
) -> None:
    host, _ = await start_host(ECHO)
    running, waiting = task(sleep_s=60), task(n=2)
    gathered = asyncio.ensure_future(chunks_of(host.run_many.remote([running, waiting])))
    await wait_for(lambda: _active(host, running["id"]), timeout_s=10)

    await host.rv_stop.remote()

    chunks = await asyncio.wait_for(gathered, 10)
    assert _outcomes(chunks) == [
        [running["id"], {"status": "interrupted"}],  # not `cancelled`: nobody asked
        [waiting["id"], {"status": "interrupted"}],
    ]


async def test_a_new_task_manager_adopts_what_an_agent_holds(
    start_host: Callable[..., Any],
) -> None:
    """The call that brought the tasks is gone (its task manager died); `adopt` tells what
    ended, what runs (then its outcome) and what this agent never had."""
    host, _ = await start_host(ECHO)
    quick, slow, never = task(n=1), task(n=2, sleep_s=1.0), task(n=3)
    orphan = host.run_many.remote([quick, slow])
    await wait_for(lambda: _active(host, slow["id"]), timeout_s=10)

    leases = {quick["id"]: 1, slow["id"]: 1, never["id"]: 1}
    chunks = await chunks_of(host.adopt.remote(leases))

    first = dict((t, o) for t, o in chunks[0])
    assert first[quick["id"]] == {"status": "completed", "result": {"n": 1}}
    assert first[slow["id"]] == {"status": "started"}
    assert first[never["id"]] == {"status": "unknown"}
    slow_done = {"status": "completed", "result": {"n": 2, "sleep_s": 1.0}}
    assert dict(_outcomes(chunks))[slow["id"]] == slow_done
    del orphan
    # the outcome is kept: asked again (another restart), it is told at once
    again = await chunks_of(host.adopt.remote({slow["id"]: 1}))
    assert again == [[[slow["id"], slow_done]]]


async def test_a_task_brought_again_under_a_newer_lease_takes_the_job_over(
    start_host: Callable[..., Any],
) -> None:
    host, _ = await start_host(ECHO)
    slow = task(n=7, sleep_s=1.0)
    first = asyncio.ensure_future(chunks_of(host.run_many.remote([{**slow, "lease": 1}])))
    await wait_for(lambda: _active(host, slow["id"]), timeout_s=10)

    chunks = await chunks_of(host.run_many.remote([{**slow, "lease": 2}]))

    done = {"status": "completed", "result": {"n": 7, "sleep_s": 1.0}}
    assert _outcomes(chunks) == [[slow["id"], done]]
    assert (await host.describe.remote())["active_tasks"] == []  # it ran once
    await asyncio.wait_for(first, 10)
    stale = await host.run.remote({**slow, "lease": 1})
    assert stale["status"] == "failed" and "older" in stale["error"]["reason"]


async def test_stop_records_stopping_then_stopped(
    start_host: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    host, agent_id = await start_host(COUNTER)
    monitor = host.rv_monitor.remote()

    await host.rv_stop.remote()

    assert (await asyncio.wait_for(monitor, 10))["reason"] == "shutdown"
    assert [t for _, t, _ in await transitions(pool, agent_id)][-2:] == ["stopping", "stopped"]
    statuses = await outbox_payloads(pool, f"agents.{agent_id}.status")
    assert [s["to_state"] for s in statuses][-2:] == ["stopping", "stopped"]

    restarted, _ = await start_host(COUNTER, agent_id)
    assert [t for _, t, _ in await transitions(pool, agent_id)][-4:] == [
        "stopped",
        "starting",
        "running",
        "idle",
    ]
    assert (await restarted.describe.remote())["state"] == "idle"


# ---- helpers ----------------------------------------------------------------------------------


def _outcomes(chunks: list[list[list[Any]]]) -> list[list[Any]]:
    """The outcomes a streaming call reported, in order, without the start markers."""
    return [pair for chunk in chunks for pair in chunk if pair[1] != {"status": "started"}]


def _done(ref: ray.ObjectRef) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)


async def _active(host: Any, task_id: str | None = None) -> bool:
    active = (await host.describe.remote())["active_tasks"]
    return task_id in active if task_id else bool(active)


async def _lag_over(host: Any, seconds: float) -> float | None:
    lag = await host.rv_ping.remote()
    return lag if lag > seconds else None


async def _lag_under(host: Any, seconds: float) -> bool:
    return await host.rv_ping.remote() < seconds


async def _last_transitions_are(
    pool: asyncpg.Pool, agent_id: str, expected: list[tuple[str, str]]
) -> bool:
    return [(f, t) for f, t, _ in await transitions(pool, agent_id)][-len(expected) :] == expected


async def _stored_state_is(pool: asyncpg.Pool, agent_id: str, state: str) -> bool:
    return (await agent_store.get_agent(pool, agent_id)).state == state


async def _state_is(host: Any, state: str) -> bool:
    return (await host.describe.remote())["state"] == state
