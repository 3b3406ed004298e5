"""The task queue on real Ray, PostgreSQL and agents: leases, fencing, retries,
dependencies, priorities, deadlines, cancellation, idempotency, restarts, volume."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
import ray
from helpers import child_pid, wait_for

from actors.tasks import TaskClient
from runtime.errors import LogicalError, StaleAttempt

pytestmark = pytest.mark.integration

ECHO = "actors.builtin.echo:EchoAgent"
ACTIVE = ["pending", "queued", "assigned", "running"]


@pytest.fixture
async def system(tree, system_pool: asyncpg.Pool):
    """Start a tree: core (tm:0) and a pool of echo agents; returns a factory."""
    # tasks other tests left unfinished would be adopted by this test's TaskManager
    await system_pool.execute(
        "UPDATE tasks SET status = 'cancelled' WHERE status = ANY($1::text[])", ACTIVE
    )

    async def start(agents: int = 2, shards: int = 1) -> tuple[TaskClient, Any]:
        template = tree.uid("echo")
        core = {
            "id": tree.uid("core"),
            "children": [
                {
                    "id": f"tm-{shard}",
                    "actor": "actors.task_manager:TaskManager",
                    "kwargs": {"shard": shard, "shards": shards},
                    "name": f"tm:{shard}",
                }
                for shard in range(shards)
            ],
        }
        pool = {
            "id": tree.uid("pool"),
            "strategy": "simple_one_for_one",
            "template": {"id": template, "agent": ECHO},
            "size": agents,
        }
        agents_sup = {"id": "agents", "children": [{"id": pool["id"], "supervisor": pool}]}
        root = await tree.start(
            {
                "id": tree.uid("root"),
                "children": [
                    {"id": core["id"], "supervisor": core},
                    {"id": "agents", "supervisor": agents_sup, "name": "sup:agents"},
                ],
            }
        )
        client = TaskClient(tree.namespaces[-1], shards)
        await wait_for(lambda: _agents_known(client, agents), timeout_s=60)
        return client, root

    return start


async def _agents_known(client: TaskClient, count: int) -> bool:
    return sum(s["agents"] for s in await client.statistics()) >= count * client.shards


async def completed_rows(pool: asyncpg.Pool, task_id: str) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE subject = $1 AND payload->>'status' = 'completed'",
        f"tasks.{task_id}.result",
    )


async def test_a_task_runs_and_its_result_is_recorded(system, system_pool) -> None:
    client, _ = await system()
    task = await client.submit(title="hello", required_capabilities=["echo"],
                               parameters={"say": "hi"})  # fmt: skip
    assert task["status"] == "queued"
    done = await client.wait(task["id"], timeout_s=30)
    assert done["status"] == "completed"
    assert done["result"] == {"say": "hi"}
    assert done["attempt"] == 1
    row = await system_pool.fetchrow("SELECT status, result FROM tasks WHERE id = $1",
                                     UUID(task["id"]))  # fmt: skip
    assert row["status"] == "completed" and row["result"] == {"say": "hi"}
    assert await completed_rows(system_pool, task["id"]) == 1


async def test_killed_agent_task_completes_elsewhere_and_late_result_is_refused(
    system, system_pool
) -> None:
    client, _ = await system(agents=2)
    task = await client.submit(title="slow", required_capabilities=["echo"],
                               parameters={"sleep_s": 3}, max_attempts=3)  # fmt: skip

    first = await wait_for(lambda: _running(client, task["id"]), timeout_s=30)
    victim = first["assigned_to"]
    pid = await child_pid(system_pool, victim)
    os.kill(pid, signal.SIGKILL)
    done = await client.wait(task["id"], timeout_s=60)
    assert done["status"] == "completed"
    assert done["attempt"] == 2
    assert done["assigned_to"] != victim
    assert done["attempt_errors"][0]["type"] == "AgentDied"
    tm = ray.get_actor("tm:0", namespace=client.namespace)
    with pytest.raises(StaleAttempt):
        await tm.report_result.remote(task["id"], 1, {"status": "completed", "result": "late"})
    assert (await client.get(task["id"]))["result"] == {"sleep_s": 3}
    assert await completed_rows(system_pool, task["id"]) == 1


async def test_agent_killed_mid_batch_reruns_only_the_tasks_without_an_outcome_for_free(
    system, system_pool
) -> None:
    client, _ = await system(agents=1)
    done_first, killed_in, behind = await client.submit_many(
        [
            {"title": "quick", "required_capabilities": ["echo"], "parameters": {"n": 1}},
            {"title": "slow", "required_capabilities": ["echo"], "parameters": {"sleep_s": 5}},
            {"title": "behind", "required_capabilities": ["echo"], "parameters": {"n": 3}},
        ]
    )  # one agent, one round: the three go to it in one batch, in this order
    first = await client.wait(done_first["id"], timeout_s=30)  # reported before the slow one
    assert first["status"] == "completed"
    assert (await client.get(killed_in["id"]))["status"] == "running"
    os.kill(await child_pid(system_pool, first["assigned_to"]), signal.SIGKILL)

    done = await client.wait(killed_in["id"], timeout_s=90)  # started: the attempt counts
    assert (done["status"], done["attempt"]) == ("completed", 2)
    assert done["attempt_errors"][0]["type"] == "AgentDied"
    done = await client.wait(behind["id"], timeout_s=90)  # never started: handed back free
    assert (done["status"], done["attempt"], done["attempt_errors"]) == ("completed", 1, [])
    again = await client.get(done_first["id"])
    assert again["attempt"] == 1 and again["attempt_errors"] == []  # never re-run
    for task in (done_first, killed_in, behind):
        assert await completed_rows(system_pool, task["id"]) == 1


async def test_transient_errors_are_retried_until_max_attempts(system) -> None:
    client, _ = await system()
    task = await client.submit(title="flaky", required_capabilities=["echo"],
                               parameters={"fail": "transient"}, max_attempts=3)  # fmt: skip
    done = await client.wait(task["id"], timeout_s=60)
    assert done["status"] == "failed"
    assert done["attempt"] == 3
    assert [e["category"] for e in done["attempt_errors"]] == ["transient"] * 3
    assert done["error"]["reason"] == "asked to fail (transient)"


async def test_logical_error_fails_at_once_with_its_reason(system) -> None:
    client, _ = await system()
    task = await client.submit(title="bad input", required_capabilities=["echo"],
                               parameters={"fail": "logical"}, max_attempts=5)  # fmt: skip
    done = await client.wait(task["id"], timeout_s=30)
    assert done["status"] == "failed"
    assert done["attempt"] == 1
    assert done["error"]["category"] == "logical"
    assert done["error"]["reason"] == "asked to fail (logical)"


async def test_failed_dependency_fails_its_dependents(system) -> None:
    client, _ = await system()
    parent = await client.submit(
        title="parent", required_capabilities=["echo"],
        parameters={"sleep_s": 0.5, "fail": "logical"},
    )  # fmt: skip
    child = await client.submit(title="child", required_capabilities=["echo"],
                                dependencies=[parent["id"]])  # fmt: skip
    assert child["status"] == "pending"
    done = await client.wait(child["id"], timeout_s=30)
    assert done["status"] == "failed"
    assert done["attempt"] == 0  # never ran
    assert parent["id"] in done["error"]["reason"]


async def test_dependency_order_and_priority_order_hold(system, system_pool) -> None:
    client, _ = await system(agents=1)
    blocker = await client.submit(
        title="blocker", required_capabilities=["echo"], parameters={"sleep_s": 3.0}
    )
    # the blocker holds the one agent while the rest are queued (3 s: a poll on a loaded
    # machine missed a 1 s run; had it ended already, one dispatch round keeps the order)
    await wait_for(
        lambda: _status_in(client, blocker["id"], {"running", "completed"}), timeout_s=30
    )
    low_id = str(uuid4())
    low, high, after = await client.submit_many(
        [
            {"id": low_id, "title": "low", "required_capabilities": ["echo"], "priority": 1},
            {"title": "high", "required_capabilities": ["echo"], "priority": 9},
            {"title": "after-low", "required_capabilities": ["echo"], "priority": 9,
             "dependencies": [low_id]},
        ]
    )  # fmt: skip
    for task in (blocker, low, high, after):
        assert (await client.wait(task["id"], timeout_s=60))["status"] == "completed"
    rows = await system_pool.fetch(
        "SELECT title FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY started_at",
        [UUID(t["id"]) for t in (blocker, low, high, after)],
    )
    assert [r["title"] for r in rows] == ["blocker", "high", "low", "after-low"]


async def test_deadline_ends_in_timed_out(system) -> None:
    client, _ = await system()
    from datetime import UTC, datetime, timedelta

    deadline = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    task = await client.submit(title="too slow", required_capabilities=["echo"],
                               parameters={"sleep_s": 30}, deadline=deadline)  # fmt: skip
    done = await client.wait(task["id"], timeout_s=30)
    assert done["status"] == "timed_out"
    assert done["error"]["type"] == "DeadlineExceeded"


async def test_cancel_queued_and_running_tasks(system) -> None:
    client, _ = await system(agents=1)
    running = await client.submit(title="long", required_capabilities=["echo"],
                                  parameters={"sleep_s": 30})  # fmt: skip
    await wait_for(lambda: _status_in(client, running["id"], {"running"}), timeout_s=30)
    # submitted once `long` runs, so it waits behind it (two separate leases to one agent
    # are not ordered between themselves: `waiting` could otherwise run first)
    queued = await client.submit(title="waiting", required_capabilities=["echo"])
    assert (await client.cancel(queued["id"]))["status"] == "cancelled"
    assert (await client.cancel(running["id"]))["status"] == "cancelled"
    # the agent is free again: a new task runs at once, not after 30 s
    quick = await client.submit(title="quick", required_capabilities=["echo"])
    assert (await client.wait(quick["id"], timeout_s=10))["status"] == "completed"
    assert (await client.get(running["id"]))["status"] == "cancelled"


async def test_cancel_a_task_waiting_behind_another_in_its_agents_batch(system) -> None:
    client, _ = await system(agents=1)
    long, waiting = await client.submit_many(
        [
            {"title": "long", "required_capabilities": ["echo"], "parameters": {"sleep_s": 30}},
            {"title": "waiting", "required_capabilities": ["echo"], "parameters": {"n": 2}},
        ]
    )  # one batch: `waiting` sits at the agent behind `long`
    await wait_for(lambda: _status_in(client, long["id"], {"running"}), timeout_s=30)
    assert (await client.get(waiting["id"]))["status"] == "assigned"  # leased, not started
    assert (await client.cancel(waiting["id"]))["status"] == "cancelled"
    assert (await client.cancel(long["id"]))["status"] == "cancelled"
    quick = await client.submit(title="quick", required_capabilities=["echo"])
    assert (await client.wait(quick["id"], timeout_s=10))["status"] == "completed"
    for task in (long, waiting):
        current = await client.get(task["id"])
        assert current["status"] == "cancelled" and current["result"] is None


async def _status_in(client: TaskClient, task_id: str, statuses: set[str]) -> bool:
    return (await client.get(task_id))["status"] in statuses


async def test_duplicate_idempotency_key_returns_the_first_task(system, system_pool) -> None:
    client, _ = await system()
    key = f"key-{os.urandom(4).hex()}"
    first = await client.submit(title="once", required_capabilities=["echo"], idempotency_key=key)
    second = await client.submit(title="twice", required_capabilities=["echo"],
                                 idempotency_key=key)  # fmt: skip
    assert second["id"] == first["id"]
    assert second["title"] == "once"
    assert await system_pool.fetchval(
        "SELECT count(*) FROM tasks WHERE idempotency_key = $1", key
    ) == 1  # fmt: skip


async def test_bad_submission_changes_nothing(system, system_pool) -> None:
    client, _ = await system()
    before = await system_pool.fetchval("SELECT count(*) FROM tasks")
    with pytest.raises(LogicalError, match="priority"):
        await client.submit_many([{"title": "ok"}, {"title": "bad", "priority": 12}])
    with pytest.raises(LogicalError, match="unknown task ids"):
        await client.submit(title="orphan", dependencies=["00000000-0000-4000-8000-000000000000"])
    assert await system_pool.fetchval("SELECT count(*) FROM tasks") == before


async def test_task_manager_killed_under_load_loses_nothing(system, system_pool) -> None:
    client, _root = await system(agents=2)
    submitted = await client.submit_many(
        [
            {"title": f"t{i}", "required_capabilities": ["echo"], "parameters": {"sleep_s": 0.02}}
            for i in range(200)
        ]
    )
    ids = [t["id"] for t in submitted]
    await wait_for(lambda: _some_completed(system_pool, ids, 20), timeout_s=60)
    pid = await child_pid(system_pool, "tm-0")
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: _all_ended(system_pool, ids), timeout_s=120, interval_s=0.2)
    rows = await system_pool.fetch(
        "SELECT status, count(*) AS n FROM tasks WHERE id = ANY($1::uuid[]) GROUP BY status",
        [UUID(i) for i in ids],
    )
    not_completed = await system_pool.fetch(  # what to read when this fails
        "SELECT attempt, attempt_errors FROM tasks"
        " WHERE id = ANY($1::uuid[]) AND status <> 'completed'",
        [UUID(i) for i in ids],
    )
    assert {r["status"]: r["n"] for r in rows} == {"completed": 200}, [
        dict(r) for r in not_completed
    ]
    twice = await system_pool.fetchval(
        "SELECT count(*) FROM (SELECT subject FROM outbox WHERE subject = ANY($1::text[])"
        " AND payload->>'status' = 'completed' GROUP BY subject HAVING count(*) > 1) AS d",
        [f"tasks.{i}.result" for i in ids],
    )
    assert twice == 0


async def _some_completed(pool: asyncpg.Pool, ids: list[str], at_least: int) -> bool:
    done = await pool.fetchval(
        "SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[]) AND status = 'completed'",
        [UUID(i) for i in ids],
    )
    return done >= at_least


async def _all_ended(pool: asyncpg.Pool, ids: list[str]) -> bool:
    active = await pool.fetchval(
        "SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[]) AND status = ANY($2::text[])",
        [UUID(i) for i in ids],
        ACTIVE,
    )
    return active == 0


async def test_two_shards_work(system, system_pool) -> None:
    client, _ = await system(agents=2, shards=2)
    submitted = await client.submit_many(
        [{"title": f"s{i}", "required_capabilities": ["echo"]} for i in range(40)]
    )
    assert {int(UUID(t["id"]).int % 2) for t in submitted} == {0, 1}
    done = await asyncio.gather(*(client.wait(t["id"], timeout_s=60) for t in submitted))
    assert all(t["status"] == "completed" for t in done)


async def test_ten_thousand_tasks_through_four_agents(system, system_pool) -> None:
    client, _ = await system(agents=4)
    ids: list[str] = []
    for start in range(0, 10_000, 1000):
        batch = await client.submit_many(
            [
                {"title": f"n{i}", "required_capabilities": ["echo"]}
                for i in range(start, start + 1000)
            ]
        )
        ids.extend(t["id"] for t in batch)
    await wait_for(lambda: _all_ended(system_pool, ids), timeout_s=600, interval_s=1)
    completed = await system_pool.fetchval(
        "SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[]) AND status = 'completed'",
        [UUID(i) for i in ids],
    )
    assert completed == 10_000


async def test_a_task_with_one_attempt_survives_a_task_manager_restart(system, system_pool) -> None:
    """The restarted shard adopts the lease: the agent's outcome is taken, no re-run."""
    client, _ = await system(agents=1)
    task = await client.submit(title="once", required_capabilities=["echo"],
                               parameters={"sleep_s": 2}, max_attempts=1)  # fmt: skip
    await wait_for(lambda: _status_in(client, task["id"], {"running"}), timeout_s=30)
    os.kill(await child_pid(system_pool, "tm-0"), signal.SIGKILL)

    done = await client.wait(task["id"], timeout_s=60)

    assert (done["status"], done["attempt"], done["attempt_errors"]) == ("completed", 1, [])
    assert done["lease"] == 1  # adopted, not leased again
    assert await completed_rows(system_pool, task["id"]) == 1


async def test_a_second_task_manager_on_the_shard_fences_the_first_out(system, system_pool) -> None:
    from actors.task_manager import TaskManager
    from supervisors.supervisor import remote_class

    client, _ = await system(agents=1)
    namespace = client.namespace
    intruder = remote_class(TaskManager).options(name="tm-intruder", namespace=namespace)
    intruder = intruder.remote(shard=0, shards=1)
    await intruder.rv_start.remote("tm-intruder", "test", namespace)  # takes the epoch
    epoch = await system_pool.fetchval("SELECT epoch FROM shard_owners WHERE shard = 0")

    task = await client.submit(title="after", required_capabilities=["echo"])
    # tm:0 stored it (an insert), but its lease is refused: it stops, is restarted, takes
    # the shard back, and the task runs once under the new owner
    done = await client.wait(task["id"], timeout_s=60)

    assert (done["status"], done["attempt"]) == ("completed", 1)
    assert await system_pool.fetchval("SELECT epoch FROM shard_owners WHERE shard = 0") > epoch
    reasons = await system_pool.fetch(
        "SELECT reason FROM supervisor_events WHERE child_id = 'tm-0' AND event = 'child_exited'"
    )
    assert any("fenced" in r["reason"] for r in reasons), [r["reason"] for r in reasons]
    assert await completed_rows(system_pool, task["id"]) == 1


def _id_on_shard(shard: int, shards: int = 2) -> str:
    while True:
        candidate = uuid4()
        if candidate.int % shards == shard:
            return str(candidate)


async def test_a_dependency_on_another_shard_is_released_across_shard_kills(
    system, system_pool
) -> None:
    client, _ = await system(agents=2, shards=2)
    first, second = _id_on_shard(0), _id_on_shard(1)
    await client.submit(id=first, title="first", required_capabilities=["echo"],
                        parameters={"sleep_s": 1.5})  # fmt: skip
    await client.submit(id=second, title="second", required_capabilities=["echo"],
                        dependencies=[first])  # fmt: skip
    await wait_for(lambda: _status_in(client, first, {"running"}), timeout_s=30)
    os.kill(await child_pid(system_pool, "tm-1"), signal.SIGKILL)  # the dependent's shard
    os.kill(await child_pid(system_pool, "tm-0"), signal.SIGKILL)  # and the dependency's

    done = await client.wait(second, timeout_s=60)

    assert done["status"] == "completed"
    first_done = await client.get(first)
    assert (first_done["status"], first_done["attempt"]) == ("completed", 1)
    assert first_done["finished_at"] <= done["started_at"]


async def test_a_pool_shrinking_hands_its_agents_tasks_back_without_an_attempt(
    system, system_pool
) -> None:
    client, _ = await system(agents=2)
    task = await client.submit(title="interrupted", required_capabilities=["echo"],
                               parameters={"sleep_s": 2}, max_attempts=1)  # fmt: skip
    running = await wait_for(lambda: _running(client, task["id"]), timeout_s=30)
    agents_sup = ray.get_actor("sup:agents", namespace=client.namespace)
    (pool,) = await agents_sup.which_children.remote()
    pool_sup = await agents_sup.child_handle.remote(pool["id"])

    assert await pool_sup.terminate_child.remote(running["assigned_to"])  # a graceful stop

    done = await client.wait(task["id"], timeout_s=60)
    assert (done["status"], done["attempt"], done["attempt_errors"]) == ("completed", 1, [])
    assert done["assigned_to"] != running["assigned_to"]


async def _running(client: TaskClient, task_id: str) -> dict | None:
    current = await client.get(task_id)
    return current if current["status"] == "running" else None


async def test_an_attempt_past_its_timeout_is_retried_and_the_last_ends_timed_out(
    system,
) -> None:
    client, _ = await system(agents=1)
    task = await client.submit(title="hangs", required_capabilities=["echo"],
                               parameters={"sleep_s": 30}, attempt_timeout_s=0.5,
                               max_attempts=2)  # fmt: skip

    done = await client.wait(task["id"], timeout_s=30)

    assert (done["status"], done["attempt"]) == ("timed_out", 2)
    assert [e["type"] for e in done["attempt_errors"]] == ["AttemptTimedOut"]
    quick = await client.submit(title="next", required_capabilities=["echo"])
    assert (await client.wait(quick["id"], timeout_s=10))["status"] == "completed"
