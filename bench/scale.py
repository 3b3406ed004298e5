"""Cost curves: what more agents, shards, clients and failures cost, in one run.

One local Ray (2 CPUs here), embedded PostgreSQL and NATS, measured in turn:

- pools: a pool of N echo agents (a simple_one_for_one root of its own) started from
  nothing until every member has run `on_start` (`pool_start_s`, one per `--pools` size);
  in the first pool, once idle, each agent host's USS (psutil) beside an idle plain Ray
  actor's of the same job (`host_uss_mib`, `ray_actor_uss_mib`, `host_uss_ratio`);
  in the largest pool, K members SIGKILLed at once and each one's time until its
  replacement runs (`restart_p50_ms`, one per `--kills` count, the largest pool refilled
  between);
- throughput: durable no-op tasks through the whole tree (task managers, relay, an echo
  pool resized to each of `--agents`) with 1 and 2 task-manager shards (`tasks_per_s`,
  a row per shard count, bench/throughput.py's measurement);
- SSE: bench/sse.py's run with `--sse-clients` streams on the last tree
  (`sse_p99_delivery_ms`).

Draws `docs/scale.png` from the figures (`--plot`, the default path; `--no-plot` to skip),
and prints one JSON object on the last line of stdout. `--quick` is a tiny run for
tests/bench_smoke.py: the same keys, figures that mean little.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "bench-scale"
ECHO = "actors.builtin.echo:EchoAgent"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", default="1,2,4,8", help="pool sizes for throughput")
    parser.add_argument("--shards", default="1,2", help="task-manager shard counts")
    parser.add_argument("--tasks", type=int, default=1500, help="tasks per throughput point")
    parser.add_argument("--pools", default="10,50,100", help="pool sizes to start")
    parser.add_argument("--kills", default="1,10,50", help="agents killed at once")
    parser.add_argument("--sse-clients", type=int, default=100)
    parser.add_argument("--sse-duration", type=float, default=10.0)
    parser.add_argument("--plot", default=str(ROOT / "docs" / "scale.png"))
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (tests/bench_smoke)")
    args = parser.parse_args()
    if args.quick:
        args.agents, args.shards, args.tasks = "1,2", "1", 100
        args.pools, args.kills = "2", "1"
        args.sse_clients, args.sse_duration = 5, 1.0
        args.no_plot = True
    try:
        for name in ("agents", "shards", "pools", "kills"):
            values = [int(v) for v in getattr(args, name).split(",") if v.strip()]
            if not values or min(values) < 1 or max(values) > 500:
                raise ValueError(name)
            setattr(args, name, values)
    except ValueError:
        parser.error("--agents, --shards, --pools and --kills are comma-separated 1..500")
    if max(args.kills) > max(args.pools):
        parser.error("--kills must not exceed the largest of --pools")
    if not 1 <= args.tasks <= 100_000 or not 1 <= args.sse_clients <= 5000:
        parser.error("--tasks must be within 1..100000 and --sse-clients within 1..5000")
    return args


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def mib(n: float) -> float:
    return round(n / 2**20, 1)


# ---- pools: start, memory, restarts ------------------------------------------------------


def pool_spec(pool_id: str, size: int) -> Any:
    from supervisors.spec import SupervisorSpec

    return SupervisorSpec.model_validate(
        {
            "id": pool_id,
            "strategy": "simple_one_for_one",
            "template": {"id": "echo", "agent": ECHO},
            "size": size,
            "max_restarts": 100_000,
            "period_s": 1,
            "backoff": {"min_s": 0, "max_s": 0},
            "breaker": {"failure_threshold": 100_000},
        }
    )


def uss_of(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_full_info().uss


def running_pids(root: Any) -> dict[str, int]:
    import ray

    return {
        c["id"]: c["pid"]
        for c in ray.get(root.which_children.remote(), timeout=60)
        if c["state"] == "running" and c.get("pid")
    }


def kill_at_once(root: Any, size: int, count: int, timeout_s: float) -> list[float]:
    """SIGKILL `count` members together; each one's seconds until a new process runs it."""
    before = running_pids(root)
    if len(before) < size:
        raise SystemExit(f"only {len(before)} of {size} members running before the kill")
    victims = dict(list(before.items())[:count])
    began = time.perf_counter()
    for pid in victims.values():
        os.kill(pid, signal.SIGKILL)
    back: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(back) < len(victims):
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(victims) - len(back)} of {count} killed never came back")
        now = running_pids(root)
        at = time.perf_counter() - began
        for child, pid in victims.items():
            if child not in back and now.get(child, pid) != pid:
                back[child] = at
        time.sleep(0.01)
    return list(back.values())


def progress(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def drop_pool(root: Any, pids: list[int], timeout_s: float = 60) -> None:
    """Kill the pool's root: its members are its actors and go with it (a graceful stop
    of 100 members one by one is not what is measured); wait until their processes end."""
    import psutil
    import ray

    ray.kill(root, no_restart=True)
    deadline = time.monotonic() + timeout_s
    while any(psutil.pid_exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def measure_pools(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from supervisors.tree import start_tree

    @ray.remote(num_cpus=0)
    class Idle:
        def pid(self) -> int:
            return os.getpid()

    idle = Idle.remote()
    idle_pid = ray.get(idle.pid.remote())
    figures: dict[str, Any] = {"pool_sizes": args.pools, "pool_start_s": [], "kills": args.kills}
    largest = max(args.pools)
    for n, size in enumerate(args.pools):
        namespace = f"{NAMESPACE}-pool-{size}"
        began = time.perf_counter()
        root = start_tree(pool_spec(f"scale-{size}", size), namespace, timeout_s=600)
        pids = running_pids(root)
        if len(pids) < size:
            raise SystemExit(f"pool of {size}: {len(pids)} members running")
        figures["pool_start_s"].append(round(time.perf_counter() - began, 2))
        progress(f"pool of {size} started in {figures['pool_start_s'][-1]} s")
        if n == 0:  # the hosts idle (heartbeats only), beside the idle plain actor
            time.sleep(3)
            hosts = [uss_of(p) for p in pids.values()]
            figures["host_uss_mib"] = mib(statistics.median(hosts))
            figures["ray_actor_uss_mib"] = mib(uss_of(idle_pid))
            figures["host_uss_ratio"] = round(statistics.median(hosts) / uss_of(idle_pid), 2)
        if size == largest:
            figures["restart_p50_ms"], figures["restart_p99_ms"] = [], []
            time.sleep(3)  # as in life, not at the pool's start: its warm workers are up
            for count in args.kills:
                times = kill_at_once(root, size, count, timeout_s=300)
                figures["restart_p50_ms"].append(round(percentile(times, 0.5) * 1000, 1))
                figures["restart_p99_ms"].append(round(percentile(times, 0.99) * 1000, 1))
                progress(f"{count} killed: p50 {figures['restart_p50_ms'][-1]} ms")
                time.sleep(2)  # failures are spaced: the pool's warm workers come back
        drop_pool(root, list(running_pids(root).values()))
    ray.kill(idle)
    return figures


# ---- throughput by agents and shards -----------------------------------------------------


def throughput_row(args: argparse.Namespace, settings: Any, database_url: str) -> list[float]:
    """Tasks/s through the tree for each of `args.agents`, with `settings.task_shards`
    shards; the tree stays up (the caller stops it)."""
    import ray

    from actors.tasks import TaskClient
    from supervisors.tree import pool_actor_name, start_tree, tree_from_settings

    start_tree(tree_from_settings(settings), NAMESPACE, 300)
    pool = ray.get_actor(pool_actor_name("echo"), namespace=NAMESPACE)
    client = TaskClient(NAMESPACE, settings.task_shards)
    row = []
    for agents in args.agents:
        ray.get(pool.resize.remote(agents), timeout=300)
        done = asyncio.run(tasks_through(client, agents, database_url, args.tasks))
        if done["lost"] or done["completed_twice"]:
            raise SystemExit(f"{settings.task_shards} shards, {agents} agents: {done}")
        row.append(done["tasks_per_s"])
        progress(f"{settings.task_shards} shard(s), {agents} agents: {row[-1]} tasks/s")
    return row


async def tasks_through(client: Any, agents: int, database_url: str, count: int) -> dict:
    """Once every shard knows `agents` agents: a warm-up, then `count` tasks measured."""
    from throughput import run_tasks

    deadline = time.monotonic() + 120
    while min(s["agents"] for s in await client.statistics()) < agents:
        if time.monotonic() > deadline:
            raise SystemExit(f"{agents} agents never registered")
        await asyncio.sleep(0.1)
    await run_tasks(client, database_url, min(100, count), 100)
    return await run_tasks(client, database_url, count, 500)


# ---- the plot ----------------------------------------------------------------------------


def plot(figures: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    ax = axes[0][0]
    for shards, row in zip(figures["shards"], figures["tasks_per_s"], strict=True):
        ax.plot(figures["agents"], row, marker="o", label=f"{shards} shard(s)")
    ax.set(title="durable no-op tasks/s", xlabel="agents", ylabel="tasks/s")
    ax.set_xticks(figures["agents"])
    ax.legend()
    ax = axes[0][1]
    ax.plot(figures["pool_sizes"], figures["pool_start_s"], marker="o")
    ax.set(title="time to start a pool", xlabel="agents in the pool", ylabel="s")
    ax = axes[1][0]
    ax.plot(figures["kills"], figures["restart_p50_ms"], marker="o", label="p50")
    ax.plot(figures["kills"], figures["restart_p99_ms"], marker="x", ls="--", label="p99")
    ax.set(
        title=f"restart, agents killed at once (pool of {max(figures['pool_sizes'])})",
        xlabel="agents killed",
        ylabel="ms until running again",
    )
    ax.legend()
    ax = axes[1][1]
    bars = {
        "agent host": figures["host_uss_mib"],
        "idle Ray actor": figures["ray_actor_uss_mib"],
    }
    ax.bar(list(bars), list(bars.values()), color=["tab:blue", "tab:gray"])
    ax.set(
        title=f"USS per process (ratio {figures['host_uss_ratio']}); "
        f"SSE p99 at {figures['sse_clients']} clients: {figures['sse_p99_delivery_ms']} ms",
        ylabel="MiB",
    )
    ax.title.set_fontsize(9)
    for ax, xs in ((axes[0][1], figures["pool_sizes"]), (axes[1][0], figures["kills"])):
        ax.set_xticks(xs)
    for ax in (axes[0][0], axes[0][1], axes[1][0]):
        ax.set_ylim(bottom=0)
    fig.suptitle("rayvisor cost curves (bench/scale.py, 2 cores, one local Ray)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# ---- the driver --------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    import ray
    import sse

    from runtime.config import load_settings
    from runtime.raycluster import init_ray
    from runtime.services import ensure_services, stop_services
    from runtime.store.migrations import migrate
    from supervisors.tree import stop_tree

    began = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="rayvisor-bench-scale-")) / "home"
    embedded = load_settings(home=home)
    urls = ensure_services(embedded)
    figures: dict[str, Any] = {"agents": args.agents, "shards": args.shards, "tasks_per_s": []}
    try:
        asyncio.run(migrate(urls.database_url))
        for n, shards in enumerate(args.shards):
            # one Ray per shard count: its workers read RAYVISOR_TASK_SHARDS as they start
            os.environ["RAYVISOR_TASK_SHARDS"] = str(shards)
            settings = load_settings(
                home=home,
                database_url=urls.database_url,
                nats_url=urls.nats_url,
                namespace=NAMESPACE,
                http_port=sse.free_port(),
                tree={"pools": [{"id": "echo", "agent": ECHO, "size": args.agents[0]}]},
            )
            init_ray(settings, urls.database_url, urls.nats_url, namespace=NAMESPACE, num_cpus=2)
            try:
                if n == 0:
                    figures.update(measure_pools(args))
                figures["tasks_per_s"].append(throughput_row(args, settings, urls.database_url))
                if n == len(args.shards) - 1:  # the streams, on this tree
                    sse_args = sse.parse_args(
                        ["--clients", str(args.sse_clients), "--duration",
                         str(args.sse_duration), "--grace", "10"]
                    )  # fmt: skip
                    found = sse.measure_streams(
                        settings, urls.nats_url, urls.database_url, sse_args
                    )
                    figures.update(
                        sse_clients=found["clients"],
                        sse_p99_delivery_ms=found["p99_delivery_ms"],
                        sse_p50_delivery_ms=found["p50_delivery_ms"],
                        sse_missing=found["missing"],
                    )
                    progress(f"SSE: {found}")
                stop_tree(NAMESPACE, timeout_s=120)
            finally:
                ray.shutdown()
    finally:
        stop_services(embedded)
    figures["took_s"] = round(time.monotonic() - began, 1)
    if not args.no_plot:
        plot(figures, Path(args.plot))
        figures["plot"] = os.path.relpath(Path(args.plot).resolve(), ROOT)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
