"""Durable no-op tasks per second through the task API, beside raw Ray actor calls.

One run, one local Ray: the whole tree (TaskManager, outbox relay, a pool of 4 echo
agents) takes N no-op tasks submitted through `TaskClient.submit_many` and completes them,
every transition committed to PostgreSQL; the baseline is one caller pipelining the same
payload to a plain Ray actor. With `--tracing`, the same run again with every process
exporting its spans to a loopback OTLP receiver, every task traced (`traced_tasks_per_s`,
`tracing_ratio`), and once more sampling `--sample` of the tasks at their root
(`sampled_tracing_ratio`).
Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from uuid import UUID

import asyncpg
import ray

from actors.tasks import TaskClient
from runtime.config import Settings, load_settings
from runtime.raycluster import init_ray
from runtime.services import ServiceUrls, ensure_services, stop_services
from runtime.store.migrations import migrate
from supervisors.tree import TreeSpec, build_root_spec, start_tree, stop_tree

NAMESPACE = "bench-tp"
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


async def _ended(client: TaskClient) -> int:
    return sum(s["completed"] + s["failed"] for s in await client.statistics())


async def run_tasks(client: TaskClient, database_url: str, count: int, batch: int) -> dict:
    conn = await asyncpg.connect(database_url)
    ended_before = await _ended(client)
    ids: list[str] = []
    began = time.perf_counter()
    for start in range(0, count, batch):
        stored = await client.submit_many([PAYLOAD] * min(batch, count - start))
        ids.extend(t["id"] for t in stored)
    uuids = [UUID(i) for i in ids]
    deadline = time.monotonic() + 480
    # the shards' own counters say when they are done: polling PostgreSQL for 10^4 ids
    # every few ms would take the CPU this measures (the check below is the record's)
    while time.monotonic() < deadline and await _ended(client) < ended_before + count:
        await asyncio.sleep(0.02)
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


class SpanSink:
    """A loopback OTLP/HTTP receiver that answers at once and keeps the bodies (counted
    after the run), standing in for a collector."""

    def __init__(self) -> None:
        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> int:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        count = 0
        for body in self.bodies:
            request = ExportTraceServiceRequest.FromString(body)
            count += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return count


def measure_system(
    settings: Settings, urls: ServiceUrls, args: argparse.Namespace, raw_calls: int = 0
) -> dict:
    """Start Ray and the tree, run the tasks, stop both (the `OTEL_*` variables of this
    process at the start decide whether it is traced); first `raw_calls` raw Ray calls."""
    init_ray(settings, urls.database_url, urls.nats_url, namespace=NAMESPACE, num_cpus=2)
    try:
        raw = raw_ray_calls_per_s(raw_calls) if raw_calls else None
        tree = TreeSpec.model_validate(
            {"pools": [{"id": "echo", "agent": "actors.builtin.echo:EchoAgent",
                        "size": args.agents}]}
        )  # fmt: skip
        start_tree(build_root_spec(tree, settings), NAMESPACE)
        client = TaskClient(NAMESPACE, settings.task_shards)

        async def measure() -> dict:
            deadline = time.monotonic() + 60
            while sum(s["agents"] for s in await client.statistics()) < args.agents:
                assert time.monotonic() < deadline, "agents never registered"
                await asyncio.sleep(0.1)
            await run_tasks(client, urls.database_url, min(200, args.tasks), args.batch)  # warm
            return await run_tasks(client, urls.database_url, args.tasks, args.batch)

        figures = asyncio.run(measure())
        stop_tree(NAMESPACE)
        if raw is not None:
            figures["raw_ray_calls_per_s"] = round(raw, 1)
            figures["ratio"] = round(figures["tasks_per_s"] / raw, 3)
        return figures
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="run again with every process exporting its spans (OTLP/HTTP) to a loopback "
        "receiver, and report the traced rate beside the untraced one",
    )
    parser.add_argument(
        "--sample",
        type=float,
        default=0.1,
        help="with --tracing, a third run sampling this share of tasks (head sampling)",
    )
    args = parser.parse_args()
    if not 0 < args.sample <= 1:
        parser.error("--sample must be in (0, 1]")
    if args.tasks < 1 or args.batch < 1 or args.agents < 1:
        parser.error("--tasks, --batch and --agents must be at least 1")
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]  # the first run is the untraced one

    settings = load_settings(home=Path(tempfile.mkdtemp(prefix="rayvisor-bench-")))
    urls = ensure_services(settings)
    try:
        asyncio.run(migrate(urls.database_url))
        figures = measure_system(settings, urls, args, raw_calls=args.tasks)
        if args.tracing:
            sink = SpanSink()
            os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
            traced = measure_system(settings, urls, args)  # every task traced (the default)
            figures["traced_tasks_per_s"] = traced["tasks_per_s"]
            figures["tracing_ratio"] = round(traced["tasks_per_s"] / figures["tasks_per_s"], 3)
            figures["spans_exported"] = sink.spans()
            os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
            os.environ["OTEL_TRACES_SAMPLER_ARG"] = str(args.sample)
            sampled = measure_system(settings, urls, args)
            figures["sampled_traced_tasks_per_s"] = sampled["tasks_per_s"]
            figures["sampled_tracing_ratio"] = round(
                sampled["tasks_per_s"] / figures["tasks_per_s"], 3
            )
            figures["trace_sample"] = args.sample
            figures["traced_lost"] = traced["lost"] + sampled["lost"]
    finally:
        stop_services(settings)
    figures["agents"] = args.agents
    figures["batch_window_ms"] = settings.batch_window_ms
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
