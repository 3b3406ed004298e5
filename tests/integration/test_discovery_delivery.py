"""Discoveries to agents on real Ray, PostgreSQL and NATS: a subscribed agent gets what
matches its filter and nothing else, an unsubscribed one gets nothing, a SIGKILLed
subscriber gets what was shared while it was down and nothing twice; a question becomes a
task that completes."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from helpers import child_pid, delete_stream, wait_for

from actors.agent import AgentContext
from actors.tasks import TaskClient
from runtime.config import load_settings
from supervisors.tree import tree_from_settings

pytestmark = pytest.mark.integration

ECHO = "actors.builtin.echo:EchoAgent"


@pytest.fixture(scope="module")
async def event_stream(services) -> AsyncIterator[None]:
    """The system's event stream (the relay makes it), deleted once the tree has stopped:
    streams of other tests may not take its subjects."""
    yield
    await delete_stream(services.nats_url, load_settings().stream_name)


@pytest.fixture(scope="module")
async def system(event_stream, module_tree, system_pool: asyncpg.Pool) -> dict[str, Any]:
    """A listener (subscribed to `pattern` at >= 0.5), a deaf agent and an answerer, shared
    by the module's tests (each checks what it shared)."""
    tree = module_tree

    def pool(name: str, **params: Any) -> dict[str, Any]:
        return {"id": tree.uid(name).replace("-", "_"), "agent": ECHO, "params": params}

    pools = [
        pool("listener", capabilities=["listener"],
             subscribe={"types": ["pattern"], "min_confidence": 0.5}),
        pool("deaf", capabilities=["deaf"]),
        pool("answer"),
    ]  # fmt: skip
    settings = load_settings(tree={"pools": pools})
    await tree.start(tree_from_settings(settings))
    ids = {p["id"].split("_")[0]: p["id"].replace("_", "-") + "-1" for p in pools}
    await wait_for(lambda: _live(system_pool, list(ids.values())), timeout_s=90)
    sharer = AgentContext(f"sharer-{uuid.uuid4().hex[:6]}", pool=system_pool, bus=None)
    return {"ids": ids, "sharer": sharer, "tasks": TaskClient(tree.namespaces[-1])}


async def _live(pool: asyncpg.Pool, ids: list[str]) -> bool:
    states = await pool.fetch("SELECT state FROM agents WHERE id = ANY($1::text[])", ids)
    return len(states) == len(ids) and all(r["state"] in ("idle", "busy") for r in states)


async def seen_by(pool: asyncpg.Pool, agent_id: str) -> list[str]:
    state = await pool.fetchval("SELECT saved_state FROM agents WHERE id = $1", agent_id)
    return list((state or {}).get("discoveries", []))


async def test_a_subscribed_agent_gets_what_matches_and_an_unsubscribed_one_nothing(
    system, system_pool
) -> None:
    share = system["sharer"].share_discovery
    listener, deaf = system["ids"]["listener"], system["ids"]["deaf"]
    wanted = await share("pattern", "burst of failed logins from 173.234.31.186", 0.9)
    hunch = await share("pattern", "a hunch", 0.3)  # below the listener's min_confidence
    note = await share("note", "another type", 0.95)  # a type it did not ask for
    last = await share("pattern", "invalid users from 183.62.140.253", 0.5)  # exactly at min
    # in order on one stream: once the last has arrived, the others were decided on
    await wait_for(lambda: _has(system_pool, listener, last), timeout_s=60)
    mine = {str(d) for d in (wanted, hunch, note, last)}  # of what this test shared
    assert [d for d in await seen_by(system_pool, listener) if d in mine] == [
        str(wanted),
        str(last),
    ]
    assert await seen_by(system_pool, deaf) == []


async def test_a_killed_subscriber_gets_what_was_shared_meanwhile_once(system, system_pool) -> None:
    share = system["sharer"].share_discovery
    listener = system["ids"]["listener"]
    before = await share("pattern", "before the kill", 0.9)
    await wait_for(lambda: _has(system_pool, listener, before), timeout_s=60)
    os.kill(await child_pid(system_pool, listener), signal.SIGKILL)
    meanwhile = [await share("pattern", f"while down {n}", 0.9) for n in range(3)]
    after = await share("pattern", "after the restart", 0.9)
    shared = [str(d) for d in (before, *meanwhile, after)]
    # one fetched by the killed process comes again after its ack wait: order may change
    seen = await wait_for(
        lambda: _all_seen(system_pool, listener, shared), timeout_s=120, interval_s=0.2
    )
    mine = [d for d in seen if d in shared]  # the listener also holds earlier tests' finds
    assert sorted(mine) == sorted(shared)  # each once: none lost, none twice


async def test_a_question_becomes_a_task_that_completes(system, system_pool) -> None:
    question = await system["sharer"].share_discovery(
        "question", "Which address tried the most passwords?", 0.8,
        data={"capability": "echo", "parameters": {"path": "OpenSSH_2k.log"}},
    )  # fmt: skip
    task_id = await wait_for(
        lambda: system_pool.fetchval(
            "SELECT routed_task_id FROM discoveries WHERE id = $1", question
        ),
        timeout_s=60,
    )
    done = await system["tasks"].wait(task_id, 60)
    assert done["status"] == "completed", done["error"]
    assert done["assigned_to"] == system["ids"]["answer"]
    assert done["parameters"] == {
        "path": "OpenSSH_2k.log",
        "question": "Which address tried the most passwords?",
        "discovery_id": str(question),
    }
    assert done["idempotency_key"] == f"discovery:{question}"
    with pytest.raises(ValueError, match=r"a question needs data\.capability"):
        await system["sharer"].share_discovery("question", "Who knows?", 0.5)


async def _all_seen(pool: asyncpg.Pool, agent_id: str, ids: list[str]) -> list[str] | None:
    seen = await seen_by(pool, agent_id)
    return seen if set(ids) <= set(seen) else None


async def _has(pool: asyncpg.Pool, agent_id: str, discovery_id: uuid.UUID) -> bool:
    return str(discovery_id) in await seen_by(pool, agent_id)
