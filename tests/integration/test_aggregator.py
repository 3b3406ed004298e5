"""Fan-out through the Aggregator on real Ray, PostgreSQL and the built-in log agents: the
reduction of chunks equals one pass over the whole file, and the parent completes exactly
once while a chunk agent, the Aggregator and the task manager are SIGKILLed mid-run."""

from __future__ import annotations

import os
import signal
from importlib import resources
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from helpers import child_pid, wait_for

from actors.tasks import TaskClient
from runtime.config import load_settings
from supervisors.tree import tree_from_settings

pytestmark = pytest.mark.integration

ACTIVE = ["pending", "queued", "assigned", "running"]
SSH_LOG = str(Path(str(resources.files("actors.builtin") / "data" / "loghub" / "OpenSSH_2k.log")))


@pytest.fixture(scope="module")
async def system(module_tree, system_pool: asyncpg.Pool):
    """Core (tm:0, agg:0) and pools of the chunking, log_analysis (3) and reduce agents,
    shared by the module's tests (the one that kills the shard and the aggregator waits
    for its parent, which needs both back)."""
    tree = module_tree
    await system_pool.execute(
        "UPDATE tasks SET status = 'cancelled' WHERE status = ANY($1::text[])", ACTIVE
    )
    await system_pool.execute(
        "UPDATE projects SET status = 'cancelled'"
        " WHERE status IN ('pending', 'planning', 'running')"
    )

    def pool(name: str, agent: str, size: int) -> dict[str, Any]:
        return {"id": tree.uid(name).replace("-", "_"), "agent": agent, "size": size}

    settings = load_settings(
        tree={
            "relay": False,
            "pools": [
                pool("chunking", "actors.builtin.chunking:ChunkingAgent", 1),
                pool("logs", "actors.builtin.log_analysis:LogAnalysisAgent", 3),
                pool("reduce", "actors.builtin.reduce:ReduceAgent", 1),
            ],
        }
    )
    await tree.start(tree_from_settings(settings))
    client = TaskClient(tree.namespaces[-1])
    await wait_for(lambda: _agents_known(client, 6), timeout_s=90)  # 5 agents + agg:0
    return client


async def _agents_known(client: TaskClient, count: int) -> bool:
    return (await client.statistics())[0]["agents"] >= count


def fan_out(chunks: int = 8, **chunk_parameters: Any) -> dict[str, Any]:
    return {
        "title": "analyse OpenSSH_2k.log",
        "fan_out": {
            "chunking_parameters": {"path": SSH_LOG, "chunks": chunks},
            "capability": "log_analysis",
            "chunk_parameters": {"share": False, **chunk_parameters},
            "reduce_parameters": {"share": False},
        },
    }


async def result_events(pool: asyncpg.Pool, task_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT payload->>'status' AS status FROM outbox WHERE subject = $1",
        f"tasks.{task_id}.result",
    )
    return [r["status"] for r in rows]


async def children(pool: asyncpg.Pool, parent_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, title, status, attempt, assigned_to, attempt_errors FROM tasks"
        " WHERE parent_id = $1 ORDER BY title",
        UUID(parent_id),
    )


async def test_the_reduction_of_8_chunks_equals_one_pass(system, system_pool) -> None:
    client: TaskClient = system
    whole, parent = await client.submit_many(
        [
            {"title": "whole", "required_capabilities": ["log_analysis"],
             "parameters": {"path": SSH_LOG, "share": False}},
            fan_out(8),
        ]
    )  # fmt: skip
    assert parent["required_capabilities"] == ["fan_out"]
    whole = await client.wait(whole["id"], 60)
    parent = await client.wait(parent["id"], 120)
    assert whole["status"] == "completed", whole["error"]
    assert parent["status"] == "completed", parent["error"]
    assert parent["assigned_to"] == "agg-0"
    assert parent["result"]["findings"] == whole["result"]["findings"]
    top = parent["result"]["findings"]["top_addresses"][0]
    assert (top["address"], top["count"]) == ("183.62.140.253", 286)
    made = await children(system_pool, parent["id"])
    titles = [r["title"] for r in made]
    assert len(made) == 10  # the split, 8 chunks, the reduce
    assert sum(": chunk " in t for t in titles) == 8
    assert {r["status"] for r in made} == {"completed"}
    chunk_agents = {r["assigned_to"] for r in made if ": chunk " in r["title"]}
    assert len(chunk_agents) >= 2  # in parallel on different agents
    assert await result_events(system_pool, parent["id"]) == ["completed"]


async def test_the_parent_completes_once_while_a_chunk_agent_the_aggregator_and_tm_die(
    system, system_pool
) -> None:
    client: TaskClient = system
    whole = await client.submit(
        title="whole", required_capabilities=["log_analysis"],
        parameters={"path": SSH_LOG, "share": False},
    )  # fmt: skip
    parent = await client.submit(**fan_out(8, pace_s=1.0))
    parent_id = parent["id"]

    async def chunks_in(*statuses: str) -> list[asyncpg.Record]:
        return [r for r in await children(system_pool, parent_id)
                if ": chunk " in r["title"] and r["status"] in statuses]  # fmt: skip

    running = await wait_for(lambda: chunks_in("running"), timeout_s=60)
    victim = running[0]
    os.kill(await child_pid(system_pool, victim["assigned_to"]), signal.SIGKILL)
    await wait_for(lambda: _at_least(chunks_in("completed"), 3), timeout_s=90)
    os.kill(await child_pid(system_pool, "agg-0"), signal.SIGKILL)
    await wait_for(lambda: _at_least(chunks_in("completed"), 5), timeout_s=90)
    os.kill(await child_pid(system_pool, "tm-0"), signal.SIGKILL)

    done = await client.wait(parent_id, 180)
    assert done["status"] == "completed", done["error"]
    whole = await client.wait(whole["id"], 60)
    assert done["result"]["findings"] == whole["result"]["findings"]
    assert await result_events(system_pool, parent_id) == ["completed"]
    made = await children(system_pool, parent_id)
    assert len(made) == 10 and {r["status"] for r in made} == {"completed"}
    for child in made:  # each child completed once
        assert await result_events(system_pool, str(child["id"])) == ["completed"]
    rerun = next(r for r in made if r["id"] == victim["id"])
    assert rerun["attempt"] == 2
    assert rerun["attempt_errors"][0]["type"] == "AgentDied"


async def test_a_chunk_that_fails_fails_the_parent_naming_it(system, system_pool) -> None:
    client: TaskClient = system
    parent = await client.submit(**fan_out(4, top_n=0))  # each chunk refuses it
    done = await client.wait(parent["id"], 90)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "ChunkFailed"
    assert done["error"]["reason"].startswith("chunk ")
    assert "'top_n'" in done["error"]["reason"]
    assert done["attempt"] == 1  # the chunks had their attempts; the parent is not re-run
    assert await result_events(system_pool, parent["id"]) == ["failed"]


async def _at_least(rows: Any, count: int) -> bool:
    return len(await rows) >= count
