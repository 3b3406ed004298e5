"""Lose a worker node of a three-node Ray cluster while tasks run; print what happened.

Run by `tests/cluster/test_node_loss.py` in a subprocess (the test session already has a
Ray of its own per xdist worker): this process starts a Ray cluster of three nodes on
127.0.0.1 (`ray.cluster_utils.Cluster`: a head and two workers, one CPU and a custom
resource each, under a temp dir of its own, on free ports), connects to it, and starts
the standard tree against the PostgreSQL database and NATS it is given:

```
sup:root, sup:core (tm:0, agg:0, relay), sup:agents   where Ray's default puts them
  sup:pool:echo     (4 agents, spread)                  spread
  sup:pool:echo_b   (2 agents, spread)                  spread
```

The victim is the worker node (not the driver's, nor the root's when there is a choice)
that holds the most supervisors, then agents: a supervisor that dies with it takes its
whole subtree along (Ray's owner fate-sharing), wherever its children run. With tasks
running it is SIGKILLed (`remove_node(allow_graceful=False)`: its raylet and every
worker on it, as a crashed machine), the tree is watched until it is whole again (every
supervisor and child running, nothing on the dead node), every task is waited for, the
node comes back (`add_node`) and agents are started until one lands on it. The last
stdout line is one JSON object of facts and figures; the test asserts on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

NAMESPACE = "node-loss"
ECHO = "actors.builtin.echo:EchoAgent"
POOLS = [
    {"id": "echo", "agent": ECHO, "size": 4, "placement": "spread"},
    {"id": "echo_b", "agent": ECHO, "size": 2, "placement": "spread"},
]
AGENTS = sum(p["size"] for p in POOLS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_ports() -> dict[str, Any]:
    """Loopback, and a node's agent ports chosen here: a raylet waits at most 15 s (hard
    coded) for its agents' port files (ray-project/ray#65983), and ports given here at
    least leave it nothing to choose."""
    names = ("dashboard_agent_listen_port", "metrics_agent_port", "metrics_export_port",
             "runtime_env_agent_port")  # fmt: skip
    return {"node_ip_address": "127.0.0.1", **{name: free_port() for name in names}}


def retried(start: Any, attempts: int = 3) -> Any:
    """A node start, again after a failure: its raylet gives up when its dashboard agent
    takes over 15 s to start (hard coded in Ray), which happens on an overloaded machine."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except Exception as exc:
            if attempt == attempts:
                raise
            log(f"a node did not start ({exc!r}); again")
    raise AssertionError("unreachable")


def log(message: str) -> None:
    print(f"[node-loss {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def flatten(node: dict[str, Any], parent: str | None = None) -> list[dict[str, Any]]:
    """The snapshot's nodes, each with its parent supervisor's id."""
    rows = [{**{k: v for k, v in node.items() if k != "children"}, "parent": parent}]
    for child in node.get("children", []):
        rows += (
            flatten(child, node["id"])
            if child.get("kind") == "supervisor"
            else [{**child, "parent": node["id"]}]
        )
    return rows


def whole(nodes: list[dict[str, Any]], dead: str | None) -> bool:
    """Every supervisor and child running, all agents there, none on the dead node."""
    agents = [n for n in nodes if str(n.get("actor_name", "")).startswith("agent:")]
    return (
        len(agents) == AGENTS
        and all(n.get("state") == "running" for n in nodes)
        and all(n.get("node_id") and n.get("node_id") != dead for n in nodes)
    )


async def snapshot(root: Any) -> list[dict[str, Any]]:
    try:
        return flatten(await asyncio.wait_for(root.snapshot.remote(), 5))
    except Exception:  # the root is busy or a subtree answers late: ask again
        return []


async def until(condition: Any, timeout_s: float, every_s: float = 0.1) -> float | None:
    """Seconds until `condition()` held, or None past `timeout_s`."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if await condition():
            return time.monotonic() - began
        await asyncio.sleep(every_s)
    return None


async def run(
    cluster: Any, workers: list[Any], args: argparse.Namespace, facts: dict[str, Any]
) -> dict[str, Any]:
    """The scenario; fills `facts` as it goes (a failure part-way keeps what was seen)."""
    import asyncpg
    import ray

    from actors.tasks import TaskClient
    from supervisors.tree import get_root

    root = get_root(NAMESPACE)
    driver_node = ray.get_runtime_context().get_node_id()
    latest: list[dict[str, Any]] = []

    async def ready() -> bool:
        latest[:] = await snapshot(root)
        return whole(latest, None)

    facts["ready_s"] = await until(ready, 120, 0.25)
    if facts["ready_s"] is None:
        facts["error"] = "the tree never became whole"
        facts["tree"] = latest
        return facts
    before = {n["id"]: n for n in latest}

    def weight(node: Any) -> tuple[int, int]:
        held = [n for n in latest if n.get("node_id") == node.node_id]
        return sum(n.get("kind") == "supervisor" for n in held), len(held)

    # not the root's node if there is a choice: losing the root restarts the whole tree
    # (Ray restarts the detached root), a slower case than the one measured here
    root_node = next(n.get("node_id") for n in latest if n["id"] == "root")
    candidates = [w for w in workers if w.node_id != driver_node]
    candidates = [w for w in candidates if w.node_id != root_node] or candidates
    victim = max(candidates, key=weight)
    dead = victim.node_id
    facts |= {"victim": dead, "driver_node": driver_node}
    facts["before"] = [{k: n.get(k) for k in ("id", "parent", "node_id", "kind")} for n in latest]
    on_victim = [n["id"] for n in latest if n.get("node_id") == dead]
    facts["on_victim_before"] = on_victim

    client = TaskClient(NAMESPACE)

    async def agents_known() -> bool:
        return (await client.statistics())[0]["agents"] >= AGENTS

    await until(agents_known, 60, 0.25)
    tasks = await client.submit_many(
        [
            {
                "title": f"node-loss {i}",
                "required_capabilities": ["echo"],
                "parameters": {"n": i, "sleep_s": args.sleep_s},
                "idempotency_key": f"node-loss-{i}",
            }
            for i in range(args.tasks)
        ]
    )
    ids = [t["id"] for t in tasks]
    victim_agents = {
        n["id"] for n in latest if n["id"] in on_victim and n.get("kind") != "supervisor"
    }
    conn = await asyncpg.connect(args.database_url)
    try:

        async def running_on_victim() -> bool:
            rows = await conn.fetch(
                "SELECT assigned_to FROM tasks WHERE status = 'running' AND id = ANY($1::uuid[])",
                ids,
            )
            return any(r["assigned_to"] in victim_agents for r in rows)

        facts["running_on_victim"] = await until(running_on_victim, 60) is not None

        began = time.monotonic()
        await asyncio.to_thread(cluster.remove_node, victim, False)  # SIGKILL, as a crash
        facts["remove_node_s"] = round(time.monotonic() - began, 2)
        log(f"node {dead[:8]} removed; watching the tree")

        async def recovered() -> bool:
            latest[:] = await snapshot(root)
            return whole(latest, dead)

        took = await until(recovered, args.recover_timeout)
        facts["recovery_s"] = None if took is None else round(took + facts["remove_node_s"], 2)
        facts["after"] = [
            {k: n.get(k) for k in ("id", "parent", "node_id", "state", "actor_id")} for n in latest
        ]
        facts["restarted_here"] = sorted(
            n["id"]
            for n in latest
            if n["id"] in before and n.get("actor_id") != before[n["id"]].get("actor_id")
        )
        log(f"tree whole after {facts['recovery_s']}s")

        outcomes = await asyncio.gather(*(client.wait(i, args.recover_timeout + 60) for i in ids))
        facts["statuses"] = dict(Counter(o["status"] for o in outcomes))
        rows = await conn.fetch(
            "SELECT id::text, status, attempt, result, attempt_errors, parameters FROM tasks"
            " WHERE id = ANY($1::uuid[])",
            ids,
        )
        facts["tasks"] = [
            {
                "id": r["id"],
                "status": r["status"],
                "attempt": r["attempt"],
                "result_matches": _json(r["result"]) == _json(r["parameters"]),
                "attempt_errors": len(_json(r["attempt_errors"]) or []),
            }
            for r in rows
        ]
        results = await conn.fetch(
            "SELECT payload->>'task_id' AS task_id, count(*) AS n FROM outbox"
            " WHERE subject LIKE 'tasks.%.result' GROUP BY 1"
        )
        facts["result_events"] = {r["task_id"]: r["n"] for r in results if r["task_id"] in ids}
        events = await conn.fetch(
            "SELECT supervisor_id, child_id, event, reason FROM supervisor_events"
            " WHERE event IN ('child_exited', 'restarted') ORDER BY id"
        )
        facts["supervisor_events"] = [dict(e) for e in events]
    finally:
        await conn.close()

    # the node comes back: new agents may be placed on it
    began = time.monotonic()
    # on this thread: a node's start installs signal handlers
    back = retried(lambda: cluster.add_node(num_cpus=1, resources={"worker_c": 1}, **node_ports()))
    facts["add_node_s"] = round(time.monotonic() - began, 2)
    pool = ray.get_actor("sup:pool:echo", namespace=NAMESPACE)
    placed: list[str] = []
    began = time.monotonic()
    for _ in range(args.max_spawns):
        child_id = await pool.start_child.remote()
        placed.append(child_id)
        members = {c["id"]: c for c in await pool.which_children.remote()}
        if members.get(child_id, {}).get("node_id") == back.node_id:
            facts["new_node_agent"] = child_id
            break
    facts["new_node_spawns"] = len(placed)
    facts["new_node_s"] = round(time.monotonic() - began, 2)
    return facts


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True, help="a database with the schema")
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--tasks", type=int, default=12, help="tasks submitted before the loss")
    parser.add_argument("--sleep-s", type=float, default=3.0, help="each task's duration")
    parser.add_argument("--recover-timeout", type=float, default=60.0, help="bound, seconds")
    parser.add_argument("--max-spawns", type=int, default=12, help="agents tried on the new node")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    began = time.monotonic()
    # everything of this Ray (sockets, logs, its address file) under a directory of its own
    scratch = Path(tempfile.mkdtemp(prefix="rvnl-", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(scratch)
    (scratch / "ray").mkdir()
    # Ray turns an address on 127.0.0.1 into the machine's own IP before connecting, unless
    # it is told that this "cluster" is one machine's: then it stays on loopback
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

    import ray
    from ray.cluster_utils import Cluster

    from runtime.config import load_settings
    from runtime.raycluster import init_ray
    from supervisors.spec import SupervisorSpec
    from supervisors.tree import start_tree, stop_tree, tree_from_settings

    cluster = None
    facts: dict[str, Any] = {}
    try:
        cluster = retried(
            lambda: Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": 1,
                    "resources": {"head": 1},
                    "gcs_server_port": free_port(),
                    "include_dashboard": False,
                    "dashboard_port": free_port(),
                    "temp_dir": str(scratch),
                    **node_ports(),
                },
            )
        )
        workers = [
            retried(
                lambda name=name: cluster.add_node(num_cpus=1, resources={name: 1}, **node_ports())
            )
            for name in ("worker_a", "worker_b")
        ]
        cluster.wait_for_nodes()
        log(f"cluster up at {cluster.address}")
        facts["cluster_s"] = round(time.monotonic() - began, 1)
        settings = load_settings(
            home=scratch / "home",
            database_url=args.database_url,
            nats_url=args.nats_url,
            namespace=NAMESPACE,
            ray_address=cluster.address,
            tree={"pools": POOLS},
        )
        init_ray(settings, args.database_url, args.nats_url, _node_ip_address="127.0.0.1")
        spec = tree_from_settings(settings).model_dump(mode="json")
        agents = next(c for c in spec["children"] if c["id"] == "agents")["supervisor"]
        for pool in agents["children"]:  # the pool supervisors spread too
            pool["placement"] = "spread"
        start_tree(SupervisorSpec.model_validate(spec), NAMESPACE, 120)
        facts["tree_s"] = round(time.monotonic() - began, 1)
        asyncio.run(run(cluster, workers, args, facts))
        try:
            stop_tree(NAMESPACE, timeout_s=30)
        except Exception as exc:
            log(f"cleanup: {exc!r}")
    except Exception as exc:
        facts["error"] = repr(exc)
        traceback.print_exc()
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    facts["wall_s"] = round(time.monotonic() - began, 1)
    print(json.dumps(facts, default=str))


if __name__ == "__main__":
    main()
