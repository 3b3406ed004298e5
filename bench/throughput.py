"""Durable no-op tasks per second through the task API, beside raw Ray actor calls.

One run, one local Ray: the whole tree (TaskManager, outbox relay, a pool of 4 echo
agents) takes N no-op tasks submitted through `TaskClient.submit_many` and completes them,
every transition committed to PostgreSQL; the baseline is one caller pipelining the same
payload to a plain Ray actor. Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from uuid import UUID

import asyncpg
import ray

from actors.tasks import TaskClient
from runtime.config import load_settings
from runtime.raycluster import init_ray
from runtime.services import ensure_services, stop_services
from runtime.store.migrations import migrate
from supervisors.tree import TreeSpec, build_root_spec, start_tree, stop_tree

PAYLOAD = {"title": "noop", "required_capabilities": ["echo"], "parameters": {"n": 1}}


@ray.remote
class Sink:
    def take(self, item: dict) -> dict:
        return item


def raw_ray_calls_per_s(calls: int) -> float:
    sink = Sink.remote()
    ray.get(sink.take.remote(PAYLOAD))
    began = time.perf_counter()
    ray.get([sink.take.remote(PAYLOAD) for _ in range(calls)])
    rate = calls / (time.perf_counter() - began)
    ray.kill(sink)
    return rate


async def run_tasks(client: TaskClient, database_url: str, count: int, batch: int) -> dict:
    conn = await asyncpg.connect(database_url)
    ids: list[str] = []
    began = time.perf_counter()
    for start in range(0, count, batch):
        stored = await client.submit_many([PAYLOAD] * min(batch, count - start))
        ids.extend(t["id"] for t in stored)
    uuids = [UUID(i) for i in ids]
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        active = await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[])"
            " AND status IN ('pending', 'queued', 'assigned', 'running')",
            uuids,
        )
        if active == 0:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - began
    latencies = await conn.fetch(
        "SELECT extract(epoch FROM finished_at - created_at) * 1000 AS ms FROM tasks"
        " WHERE id = ANY($1::uuid[]) AND status = 'completed' ORDER BY 1",
        uuids,
    )
    twice = await conn.fetchval(
        "SELECT count(*) FROM (SELECT subject FROM outbox WHERE subject = ANY($1::text[])"
        " AND payload->>'status' = 'completed' GROUP BY subject HAVING count(*) > 1) AS d",
        [f"tasks.{i}.result" for i in ids],
    )
    statuses = await conn.fetch(
        "SELECT status, count(*) AS n FROM tasks WHERE id = ANY($1::uuid[]) GROUP BY status",
        uuids,
    )
    await conn.close()
    done = [float(r["ms"]) for r in latencies]
    return {
        "tasks_per_s": round(len(done) / elapsed, 1),
        "latency_p50_ms": round(done[len(done) // 2], 1) if done else None,
        "latency_p99_ms": round(done[int(len(done) * 0.99)], 1) if done else None,
        "tasks": count,
        "lost": count - len(done),
        "completed_twice": twice,
        "statuses": {r["status"]: r["n"] for r in statuses},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--agents", type=int, default=4)
    args = parser.parse_args()
    if args.tasks < 1 or args.batch < 1 or args.agents < 1:
        parser.error("--tasks, --batch and --agents must be at least 1")

    settings = load_settings(home=Path(tempfile.mkdtemp(prefix="rayvisor-bench-")))
    urls = ensure_services(settings)
    try:
        asyncio.run(migrate(urls.database_url))
        init_ray(settings, urls.database_url, urls.nats_url, namespace="bench-tp", num_cpus=2)
        raw = raw_ray_calls_per_s(args.tasks)
        tree = TreeSpec.model_validate(
            {
                "pools": [
                    {"id": "echo", "agent": "actors.builtin.echo:EchoAgent", "size": args.agents}
                ]
            }
        )
        start_tree(build_root_spec(tree, settings), "bench-tp")
        client = TaskClient("bench-tp", settings.task_shards)

        async def measure() -> dict:
            deadline = time.monotonic() + 60
            while sum(s["agents"] for s in await client.statistics()) < args.agents:
                assert time.monotonic() < deadline, "agents never registered"
                await asyncio.sleep(0.1)
            await run_tasks(client, urls.database_url, min(200, args.tasks), args.batch)  # warm
            return await run_tasks(client, urls.database_url, args.tasks, args.batch)

        figures = asyncio.run(measure())
        stop_tree("bench-tp")
        ray.shutdown()
    finally:
        stop_services(settings)
    figures["raw_ray_calls_per_s"] = round(raw, 1)
    figures["ratio"] = round(figures["tasks_per_s"] / raw, 3)
    figures["agents"] = args.agents
    figures["batch_window_ms"] = settings.batch_window_ms
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
