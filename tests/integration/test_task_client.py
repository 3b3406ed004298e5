"""`TaskClient` across a SIGKILL of its task manager: the supervisor starts a new `tm:0`
under the same name, and the client's next calls (and a `wait` in flight) reach it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
import ray
from helpers import wait_for

from actors.tasks import ActorUnreachable, NamedActor, TaskClient
from runtime.config import load_settings
from supervisors.tree import tree_from_settings

pytestmark = pytest.mark.integration

ECHO = "actors.builtin.echo:EchoAgent"
ACTIVE = ["pending", "queued", "assigned", "running"]


@pytest.fixture
async def client(tree, system_pool: asyncpg.Pool) -> TaskClient:
    """The standard tree (core with tm:0, a pool of two echo agents) in a namespace of its
    own, and a client that has seen both agents registered."""
    # tasks other tests left unfinished would be adopted by this tree's task manager
    await system_pool.execute(
        "UPDATE tasks SET status = 'cancelled' WHERE status = ANY($1::text[])", ACTIVE
    )
    settings = load_settings(
        tree={"pools": [{"id": tree.uid("echo").replace("-", "_"), "agent": ECHO, "size": 2}]}
    )
    await tree.start(tree_from_settings(settings))
    client = TaskClient(tree.namespaces[-1])
    await wait_for(lambda: _agents_known(client, 2), timeout_s=60)
    return client


async def _agents_known(client: TaskClient, count: int) -> bool:
    return (await client.statistics())[0]["agents"] >= count


async def _tm_pid(namespace: str) -> int | None:
    """tm:0's pid as its supervisor reports it once the incarnation runs."""
    root = ray.get_actor("sup:root", namespace=namespace)
    node = _find_node(await root.snapshot.remote(), "tm:0")
    return node["pid"] if node and node["state"] == "running" else None


def _find_node(node: dict[str, Any], actor_name: str) -> dict[str, Any] | None:
    if node.get("actor_name") == actor_name:
        return node
    for child in node.get("children", []):
        found = _find_node(child, actor_name)
        if found is not None:
            return found
    return None


def _echo(title: str, **params: Any) -> dict[str, Any]:
    return {"title": title, "required_capabilities": ["echo"], "parameters": params}


async def test_submit_get_wait_keep_working_across_a_task_manager_sigkill(client) -> None:
    first = await client.submit(**_echo("before"))
    assert (await client.wait(first["id"], 60))["status"] == "completed"
    pid = await _tm_pid(client.namespace)
    assert pid is not None

    slow = await client.submit(**_echo("in flight", sleep_s=1.0))
    waiting = asyncio.create_task(client.wait(slow["id"], 60))
    await wait_for(lambda: _status_is(client, slow["id"], "running"), timeout_s=30)
    os.kill(pid, signal.SIGKILL)

    began = time.monotonic()
    after = await client.submit(**_echo("after"))  # waits for the new incarnation
    assert time.monotonic() - began < client.restart_wait_s
    assert (await client.get(after["id"]))["id"] == after["id"]
    assert (await client.wait(after["id"], 60))["status"] == "completed"
    # the wait cut by the kill went on at the new incarnation; the lost lease re-ran
    assert (await waiting)["status"] == "completed"
    assert (await client.get(first["id"]))["status"] == "completed"
    new_pid = await _tm_pid(client.namespace)
    assert new_pid not in (None, pid)
    assert client.managers[0].resolutions >= 2


async def test_a_resubmit_returns_what_the_lost_call_stored_and_submits_the_rest(
    client,
) -> None:
    """What a retried `submit_many` does when the first call may have committed."""
    stored = await client.submit(**_echo("stored"), id=str(uuid4()))
    fresh = {**_echo("fresh"), "id": str(uuid4())}
    again = {**_echo("stored"), "id": stored["id"]}
    answers = await client.submit_many([again, fresh])  # as a retry after a lost answer
    assert [a["id"] for a in answers] == [stored["id"], fresh["id"]]
    assert answers[0]["created_at"] == stored["created_at"]
    assert (await client.wait(fresh["id"], 60))["status"] == "completed"


async def test_a_task_manager_that_does_not_come_back_is_unreachable_after_the_bound(
    ray_session,
) -> None:
    client = TaskClient(f"nothing-{uuid4().hex[:6]}", restart_wait_s=0.5)
    began = time.monotonic()
    with pytest.raises(ActorUnreachable, match="tm:0"):
        await client.get(uuid4())
    assert 0.5 <= time.monotonic() - began < 5
    unreachable = NamedActor("sup:root", client.namespace, restart_wait_s=0.1)
    with pytest.raises(ActorUnreachable):
        await unreachable.handle()


async def _status_is(client: TaskClient, task_id: str, status: str) -> bool:
    return (await client.get(task_id))["status"] == status
