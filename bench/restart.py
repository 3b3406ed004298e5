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

The restarts are measured round by round, one kill of each subject per round, so that all
see the same load on a shared machine. `warm_hits` counts the restarts whose new process
was an idle worker already running at the kill (a plain restart that misses one, because
its supervisor's warm worker was not back up yet, pays a process start).

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
from runtime.store.migrations import migrate
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

    def runtime_env(self) -> str:
        return ray.get_runtime_context().get_runtime_env_string()


def idle_workers() -> set[int]:
    """Pids of this node's idle Ray workers (to tell a restart that took a warm one)."""
    raylet = ray._private.worker.global_worker.node.all_processes["raylet"][0].process.pid
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == raylet and title.startswith(b"ray::IDLE"):
            pids.add(int(entry.name))
    return pids


class Native:
    """Ray's own restart; with `prestart`, an idle worker is prestarted before each kill
    (in a runtime env of its own, so the plain baseline never takes it)."""

    def __init__(self, database_url: str, agent_id: str, prestart: bool = False) -> None:
        options = {"runtime_env": {"env_vars": {"BENCH_PRESTARTED": "1"}}} if prestart else {}
        self.actor = NativeCounter.options(**options).remote(database_url, agent_id)
        self.env = ray.get(self.actor.runtime_env.remote()) if prestart else None

    def before(self) -> None:
        if self.env is not None:
            prestart_workers(1, runtime_env=self.env)

    def kill(self) -> tuple[float, bool]:
        pid, _ = ray.get(self.actor.answer.remote())
        idle = idle_workers()
        began = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        new_pid, state = ray.get(self.actor.answer.remote(), timeout=60)
        assert new_pid != pid and state is not None
        return (time.perf_counter() - began) * 1000, new_pid in idle

    def close(self) -> None:
        ray.kill(self.actor)


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


class Pool:
    """A one-member pool (with `standby` spares); the member is killed and replaced."""

    child = "counter-1"

    def __init__(self, namespace: str, standby: int) -> None:
        self.namespace, self.standby = namespace, standby
        self.root = start_tree(
            pool_spec(f"bench-{namespace}", standby, {"interval_s": 1.0}), namespace
        )
        self.handle = ray.get(self.root.child_handle.remote(self.child))
        ray.get(self.handle.run.remote({"id": "seed", "parameters": {}}))  # saves count=1

    def before(self) -> None:
        if self.standby:  # let the pool refill its spare, as it would between failures
            deadline = time.monotonic() + 30
            while ray.get(self.root.snapshot.remote())["standby"] < self.standby:
                assert time.monotonic() < deadline, "standby spare never came back"
                time.sleep(0.05)

    def kill(self) -> tuple[float, bool]:
        pid = ray.get(self.handle.describe.remote())["pid"]
        idle = idle_workers()
        began = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        handle = None  # the supervisor is asked again only while it has no new child
        while True:
            if handle is None:
                handle = ray.get(self.root.child_handle.remote(self.child))
            if handle is not None:
                try:
                    info = ray.get(handle.describe.remote(), timeout=10)
                except ray.exceptions.RayError:  # the dead child's handle
                    handle = None
                else:
                    if info["pid"] == pid:
                        handle = None
                    # answering = a new process, its saved state restored, taking work
                    elif info.get("saved_state") and info.get("ready"):
                        break
            time.sleep(0.002)
        self.handle = handle
        return (time.perf_counter() - began) * 1000, info["pid"] in idle

    def close(self) -> None:
        stop_tree(self.namespace)


def measure_restarts(subjects: dict[str, Any], kills: int) -> dict[str, list[tuple[float, bool]]]:
    """Kill each subject in turn, round after round: the machine is shared and its load
    drifts, so every subject sees the same stretch of it."""
    results: dict[str, list[tuple[float, bool]]] = {name: [] for name in subjects}
    for _ in range(kills):
        for name, subject in subjects.items():
            subject.before()
            time.sleep(SETTLE_S)  # failures are spaced, as in life, not back to back
            results[name].append(subject.kill())
    for subject in subjects.values():
        subject.close()
    return results


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


async def seed_native_state(database_url: str) -> None:
    """The saved state the baseline's constructor reloads (rayvisor's pools save their own)."""
    conn = await asyncpg.connect(database_url)
    try:
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
        asyncio.run(seed_native_state(urls.database_url))
        init_ray(settings, urls.database_url, urls.nats_url, namespace="bench", num_cpus=2)
        subjects = {
            "native": Native(urls.database_url, "native-1"),
            "native_prestarted": Native(urls.database_url, "native-1", prestart=True),
            "restart": Pool("plain", 0),
            "standby": Pool("standby", 1),
        }
        results = measure_restarts(subjects, args.kills)
        hang_max, hang_bound = measure_hangs("hang", args.hangs)
        ray.shutdown()
    finally:
        stop_services(settings)
    ms = {name: [t for t, _ in runs] for name, runs in results.items()}
    figures = {
        "restart_p50_ms": percentile(ms["restart"], 50),
        "restart_p99_ms": percentile(ms["restart"], 99),
        "standby_p50_ms": percentile(ms["standby"], 50),
        "standby_p99_ms": percentile(ms["standby"], 99),
        "ray_native_p50_ms": percentile(ms["native"], 50),
        "ray_native_p99_ms": percentile(ms["native"], 99),
        "hang_detect_max_ms": round(hang_max, 1),
        "hang_bound_ms": round(hang_bound, 1),
        "kills": args.kills,
        "restart_vs_native": round(
            statistics.median(ms["restart"]) / statistics.median(ms["native"]), 3
        ),
        "standby_vs_native": round(
            statistics.median(ms["standby"]) / statistics.median(ms["native"]), 3
        ),
        # for reference: Ray's own restart when a worker is prestarted for it, and how
        # many restarts found a warm (already running) worker process
        "ray_native_prestarted_p50_ms": percentile(ms["native_prestarted"], 50),
        "ray_native_prestarted_p99_ms": percentile(ms["native_prestarted"], 99),
        "warm_hits": {name: sum(hit for _, hit in runs) for name, runs in results.items()},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
