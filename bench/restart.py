"""Kill -> replacement answering with its saved state: rayvisor beside Ray's own restart.

Measured in one run on one local Ray:
- plain restart: an agent in a pool is SIGKILLed; the supervisor's link fires, a new
  AgentHost is created, loads its saved state, and answers;
- standby promotion: the same with `standby: 1`, so a warmed spare takes the child's place;
- Ray's own restart of an actor with max_restarts=-1 and max_task_retries=-1, one call
  waiting across the restart, the restarted actor also loading its state from PostgreSQL;
- for reference, Ray's own restart again with one idle worker prestarted for it before
  each kill (what a supervisor's `warm_workers` does, minus the preloaded modules);
- hang detection: a child's event loop blocked; time until the supervisor reports it,
  beside the bound (misses + 1) * interval.

Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import ray

from runtime.config import load_settings
from runtime.raycluster import init_ray, prestart_workers
from runtime.services import ensure_services, stop_services
from runtime.store.migrations import apply_migrations
from supervisors.spec import SupervisorSpec
from supervisors.tree import start_tree, stop_tree

COUNTER = "actors.builtin.echo:CounterAgent"
SETTLE_S = 1.5


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return round(ordered[index], 1)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class NativeCounter:
    """The baseline: Ray restarts it; its constructor reloads the saved state."""

    def __init__(self, database_url: str, agent_id: str) -> None:
        async def load() -> Any:
            conn = await asyncpg.connect(database_url)
            try:
                return await conn.fetchval("SELECT saved_state FROM agents WHERE id = $1", agent_id)
            finally:
                await conn.close()

        self.state = asyncio.run(load())

    def answer(self) -> tuple[int, Any]:
        return os.getpid(), self.state


def measure_native(
    database_url: str, agent_id: str, kills: int, prestart: bool = False
) -> list[float]:
    actor = NativeCounter.remote(database_url, agent_id)
    times = []
    for _ in range(kills):
        if prestart:  # an idle worker of the job's runtime env, for the restart to take
            prestart_workers(1)
        time.sleep(SETTLE_S)
        pid, _ = ray.get(actor.answer.remote())
        began = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        new_pid, state = ray.get(actor.answer.remote(), timeout=60)
        assert new_pid != pid and state is not None
        times.append((time.perf_counter() - began) * 1000)
    ray.kill(actor)
    return times


def pool_spec(pool_id: str, standby: int, heartbeat: dict[str, Any]) -> SupervisorSpec:
    return SupervisorSpec.model_validate(
        {
            "id": pool_id,
            "strategy": "simple_one_for_one",
            "template": {"id": "counter", "agent": COUNTER},
            "size": 1,
            "standby": standby,
            "max_restarts": 100_000,
            "period_s": 1,
            "backoff": {"min_s": 0, "max_s": 0},
            "breaker": {"failure_threshold": 100_000},
            "heartbeat": heartbeat,
        }
    )


def measure_supervised(namespace: str, standby: int, kills: int) -> list[float]:
    sup_id = f"bench-{namespace}"
    root = start_tree(pool_spec(sup_id, standby, {"interval_s": 1.0}), namespace)
    child = "counter-1"
    handle = ray.get(root.child_handle.remote(child))
    ray.get(handle.run.remote({"id": "seed", "parameters": {}}))  # saves count=1
    times = []
    for _ in range(kills):
        time.sleep(SETTLE_S)  # failures are spaced, as in life, not back to back
        if standby:  # let the pool refill its spare, as it would between failures
            deadline = time.monotonic() + 30
            while ray.get(root.snapshot.remote())["standby"] < standby:
                assert time.monotonic() < deadline, "standby spare never came back"
                time.sleep(0.05)
        pid = ray.get(handle.describe.remote())["pid"]
        began = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        while True:
            handle = ray.get(root.child_handle.remote(child))
            if handle is not None:
                try:
                    info = ray.get(handle.describe.remote(), timeout=10)
                    # answering = a new process, its saved state restored, taking work
                    if info["pid"] != pid and info.get("saved_state") and info.get("ready"):
                        break
                except ray.exceptions.RayError:
                    pass
            time.sleep(0.002)
        times.append((time.perf_counter() - began) * 1000)
    stop_tree(namespace)
    return times


def measure_hangs(namespace: str, hangs: int) -> tuple[float, float]:
    heartbeat = {"interval_s": 0.5, "timeout_s": 1.0, "misses": 3}
    bound_ms = (heartbeat["misses"] + 1) * heartbeat["interval_s"] * 1000
    sup_id = f"bench-hang-{namespace}"
    spec = SupervisorSpec.model_validate(
        {
            "id": sup_id,
            "children": [{"id": "stuck", "actor": "actors.builtin.probe:ProbeWorker"}],
            "max_restarts": 1000,
            "backoff": {"min_s": 0, "max_s": 0},
            "breaker": {"failure_threshold": 1000},
            "heartbeat": heartbeat,
        }
    )
    root = start_tree(spec, namespace)
    detections = []
    for _ in range(hangs):
        handle = ray.get(root.child_handle.remote("stuck"))
        pid = ray.get(handle.whoami.remote())["pid"]
        handle.hang.remote(30)
        began = time.perf_counter()
        while True:  # the process is killed the moment the hang is declared
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.002)
        detections.append((time.perf_counter() - began) * 1000)
        deadline = time.monotonic() + 30
        while True:
            children = ray.get(root.which_children.remote())
            if children[0]["state"] == "running" and children[0].get("pid") != pid:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    stop_tree(namespace)
    return max(detections), bound_ms


async def migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
        await conn.execute(
            "INSERT INTO agents (id, name, saved_state) VALUES ('native-1', 'native', '{\"n\": 1}')"
            " ON CONFLICT (id) DO NOTHING"
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--hangs", type=int, default=5)
    args = parser.parse_args()
    if args.kills < 1 or args.hangs < 1:
        parser.error("--kills and --hangs must be at least 1")

    home = Path(tempfile.mkdtemp(prefix="rayvisor-bench-"))
    settings = load_settings(home=home)
    urls = ensure_services(settings)
    try:
        asyncio.run(migrate(urls.database_url))
        init_ray(settings, urls.database_url, urls.nats_url, namespace="bench", num_cpus=2)
        native = measure_native(urls.database_url, "native-1", args.kills)
        native_warm = measure_native(urls.database_url, "native-1", args.kills, prestart=True)
        plain = measure_supervised("plain", 0, args.kills)
        standby = measure_supervised("standby", 1, args.kills)
        hang_max, hang_bound = measure_hangs("hang", args.hangs)
        ray.shutdown()
    finally:
        stop_services(settings)
    figures = {
        "restart_p50_ms": percentile(plain, 50),
        "restart_p99_ms": percentile(plain, 99),
        "standby_p50_ms": percentile(standby, 50),
        "standby_p99_ms": percentile(standby, 99),
        "ray_native_p50_ms": percentile(native, 50),
        "ray_native_p99_ms": percentile(native, 99),
        "ray_native_prestarted_p50_ms": percentile(native_warm, 50),
        "ray_native_prestarted_p99_ms": percentile(native_warm, 99),
        "hang_detect_max_ms": round(hang_max, 1),
        "hang_bound_ms": round(hang_bound, 1),
        "kills": args.kills,
        "restart_vs_native": round(statistics.median(plain) / statistics.median(native), 3),
        "standby_vs_native": round(statistics.median(standby) / statistics.median(native), 3),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
