"""Agents and the supervision tree through HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import nats
import pytest
import ray
from helpers import wait_until
from ray.util.state import list_actors

from runtime.client import ApiError

pytestmark = pytest.mark.integration


def test_list_and_read_agents_with_their_history(http_system) -> None:
    with http_system.client("read") as rv:

        def ready() -> list | None:  # the fixture's agents may still be starting
            # the session's database holds other modules' (stopped) agents too
            mine = [a for a in rv.list_agents(capability="echo") if a["id"] in {"echo-1", "echo-2"}]
            started = all(a["state"] in {"idle", "busy"} for a in mine)
            return mine if len(mine) == 2 and started else None

        wait_until(ready, timeout_s=60)
        one = rv.get_agent("echo-1")
        assert one["capabilities"] == ["echo"]
        assert one["supervisor_id"] == "pool-echo"
        states = [e["to_state"] for e in rv.agent_events("echo-1")]
        assert states[:3] == ["starting", "running", "idle"]
        for bad, status in (("nobody", 404), ("not an id", 422)):
            with pytest.raises(ApiError) as refused:
                rv.get_agent(bad)
            assert refused.value.status == status


def test_spawn_from_a_template_then_stop(http_system) -> None:
    with http_system.client("write") as rv:
        spawned = rv.spawn_agent("echo")
        agent_id = spawned["agent_id"]
        assert spawned["supervisor_id"] == "pool-echo"
        wait_until(lambda: rv.get_agent(agent_id)["state"] == "idle", timeout_s=60)
        pool = next(c for c in _walk(rv.tree()) if c["id"] == "pool-echo")
        assert agent_id in {c["id"] for c in pool["children"]}
        assert rv.stop_agent(agent_id) is None
        assert rv.get_agent(agent_id)["state"] == "stopped"
        pool = next(c for c in _walk(rv.tree()) if c["id"] == "pool-echo")
        assert agent_id not in {c["id"] for c in pool["children"]}
        with pytest.raises(ApiError) as unknown:
            rv.spawn_agent("no_such_template")
        assert unknown.value.status == 422
        assert unknown.value.problem["errors"][0]["field"] == "body.template"


def test_tree_shows_every_node_and_supervisor_decisions(http_system) -> None:
    with http_system.client("read") as rv:
        tree = rv.tree()
        assert tree["id"] == "root" and tree["strategy"] == "one_for_one"
        nodes = {node["id"]: node for node in _walk(tree)}
        assert {"root", "core", "agents", "pool-echo", "tm-0", "relay", "echo-1"} <= set(nodes)
        assert nodes["pool-echo"]["strategy"] == "simple_one_for_one"
        for node in nodes.values():
            assert {"state", "restarts", "pid", "actor_id"} <= set(node)
        assert nodes["echo-1"]["breaker"] == "closed"
        decisions = rv.supervisor_events("pool-echo")
        assert {"echo-1", "echo-2"} <= {
            d["child_id"] for d in decisions if d["event"] == "child_started"
        }


def test_system_metrics(http_system) -> None:
    with http_system.client("read") as rv:
        metrics = rv.system_metrics()
    assert metrics["agents"]["total"] >= 2
    assert metrics["agents"]["idle"] + metrics["agents"]["busy"] >= 2
    assert set(metrics["tasks"]) >= {"pending", "queued", "running", "completed", "failed"}
    assert 0 <= metrics["host"]["memory_percent"] <= 100
    server = metrics["nats"]
    assert server["connected"] is True
    monitor = str(http_system.settings.nats_monitor_url).rstrip("/")
    assert server["monitor_url"] == monitor
    assert server["monitor_error"] is None
    assert server["connections"] >= 1  # this replica's, at least
    assert server["in_msgs"] >= 0 and server["out_bytes"] >= 0


def test_system_metrics_nats_rates_are_the_servers_over_the_last_interval(
    http_system, services
) -> None:
    """N messages published by another client show in the server's counters and in the
    rate over the interval that covers them (the replica samples `/varz` at most each 1 s)."""
    count, size = 3000, 100

    async def publish() -> None:
        nc = await nats.connect(services.nats_url)
        try:
            for _ in range(count):
                await nc.publish("rayvisor.test.rates", b"x" * size)
            await nc.flush()
        finally:
            await nc.close()

    with http_system.client("read") as rv:
        before = rv.system_metrics()["nats"]
        asyncio.run(publish())
        after = wait_until(
            lambda: (
                (n := rv.system_metrics()["nats"])["in_msgs"] >= before["in_msgs"] + count and n
            ),
            timeout_s=30,
            interval_s=0.2,
        )
    assert after["in_bytes"] >= before["in_bytes"] + count * size
    # the interval ends at the sample that first saw them, so it covers them all
    assert after["interval_s"] >= 1.0
    assert after["in_msgs_per_s"] >= 0.99 * count / after["interval_s"]
    assert after["in_bytes_per_s"] >= 0.99 * count * size / after["interval_s"]


def _walk(node: dict):
    yield node
    for child in node.get("children", []):
        yield from _walk(child)


def _ray_actors(namespace: str) -> list[Any]:
    """The namespace's actors as Ray's state API lists them, dead ones included."""
    return list_actors(
        address=ray.get_runtime_context().gcs_address,
        filters=[("ray_namespace", "=", namespace)],
        limit=10_000,
        raise_on_missing_output=False,
    )


def _alive_by_name(actors: list[Any]) -> dict[str, Any]:
    return {a.name: a for a in actors if a.name and a.state == "ALIVE"}


def test_ray_state_api_lists_the_tree_as_it_reports_itself(http_system) -> None:
    """Each node of the tree is the Ray actor of its name (same actor id and pid), ALIVE in
    Ray exactly when running in the tree; a child SIGKILLed and restarted keeps its name
    with a new actor and pid, and the old actor is DEAD."""
    namespace = http_system.settings.namespace
    with http_system.client("read") as rv:
        nodes = {node["actor_name"]: node for node in _walk(rv.tree())}
        alive = _alive_by_name(_ray_actors(namespace))
        assert {"sup:root", "sup:core", "tm:0", "agent:echo-1", "agent:echo-2"} <= set(nodes)
        for name, node in nodes.items():
            actor = alive.get(name)
            assert (node["state"] == "running") == (actor is not None), (name, node["state"])
            if actor is not None:
                assert (actor.actor_id, actor.pid) == (node["actor_id"], node["pid"]), name

        victim = nodes["agent:echo-1"]
        os.kill(victim["pid"], signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            node = next(n for n in _walk(rv.tree()) if n["actor_name"] == "agent:echo-1")
            back = node["state"] == "running" and node["restarts"] > victim["restarts"]
            return node if back and node["pid"] != victim["pid"] else None

        node = wait_until(restarted, timeout_s=60, interval_s=0.2)
        # the agent's own record counts the restart too (written with the decision's row)
        counted = wait_until(
            lambda: rv.get_agent("echo-1")["restart_count"] >= node["restarts"] or None,
            timeout_s=30,
            interval_s=0.2,
        )
        assert counted and node["restarts"] > victim["restarts"]
    actors = _ray_actors(namespace)
    now = _alive_by_name(actors)["agent:echo-1"]
    assert (now.actor_id, now.pid) == (node["actor_id"], node["pid"])
    assert now.actor_id != victim["actor_id"]
    old = next(a for a in actors if a.actor_id == victim["actor_id"])
    assert (old.name, old.state) == ("agent:echo-1", "DEAD")
