"""Latency of one task on an idle system: submit -> completed, one task at a time.

One run, one local Ray (as bench/sse.py): embedded PostgreSQL and NATS, the tree (task
manager, relay, a pool of echo agents) and the `rayvisor` ingress. Measured one after
another, never two at once, so nothing is batched with anything:

- `taskclient`: `TaskClient.submit` then `TaskClient.wait` from the driver (each change
  committed to PostgreSQL before anyone hears of it: the submit, the lease, the result);
  and `taskclient_after_idle`: the same, `--spaced` tasks each submitted once its agent
  has gone idle (it records `busy` again before the handler runs);
- `http`: `POST /api/v1/tasks` with an API key, then the task's `tasks.{id}.result` event
  on an SSE stream (`GET /api/v1/events/stream?subject=tasks.*.result`) opened before:
  what a user without Ray sees (the outbox relay and JetStream are on this path);
- the baseline `raw_ray`: one call to a plain Ray actor (`await actor.take.remote(payload)`).

Prints one JSON object on the last line of stdout: `taskclient_p50_ms`,
`taskclient_p99_ms`, `http_p50_ms`, `http_p99_ms`, `raw_ray_p50_ms` (and a few more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

NAMESPACE = "bench-latency"
PAYLOAD = {"title": "noop", "required_capabilities": ["echo"], "parameters": {"n": 1}}
SUBJECT = "tasks.*.result"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2)


def summary(name: str, samples_s: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in samples_s]
    return {f"{name}_p50_ms": percentile(ms, 0.5), f"{name}_p99_ms": percentile(ms, 0.99)}


# ---- the three paths -----------------------------------------------------------------


async def raw_ray(rounds: int) -> list[float]:
    import ray

    @ray.remote
    class Sink:
        async def take(self, item: dict) -> dict:
            return item

    sink = Sink.remote()
    await sink.take.remote(PAYLOAD)
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        await sink.take.remote(PAYLOAD)
        samples.append(time.perf_counter() - began)
    ray.kill(sink)
    return samples


async def through_task_client(rounds: int, shards: int, pause_s: float = 0) -> list[float]:
    """Submit-to-completed of `rounds` tasks one at a time, `pause_s` apart."""
    from actors.tasks import TaskClient

    client = TaskClient(NAMESPACE, shards)
    samples = []
    for _ in range(rounds):
        await asyncio.sleep(pause_s)
        began = time.perf_counter()
        task = await client.submit(**PAYLOAD)
        done = await client.wait(task["id"], timeout_s=30)
        samples.append(time.perf_counter() - began)
        if done["status"] != "completed":
            raise SystemExit(f"task {task['id']} ended {done['status']}")
    return samples


class ResultStream:
    """One SSE stream of `tasks.*.result`: a future per task id, resolved on its event."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.early: dict[str, str] = {}  # an event that came before its POST was answered
        self.reader_task: asyncio.Task[None] | None = None

    async def open(self, host: str, port: int, key: str) -> None:
        import httpx

        query = httpx.QueryParams({"subject": SUBJECT})
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"GET /api/v1/events/stream?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if head[9:12] != b"200":
            raise SystemExit(f"the event stream answered {head[9:12].decode()}")
        self.writer = writer
        self.reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            text = line.decode(errors="replace").strip()
            if not text.startswith("event:"):
                continue  # chunk sizes, ids, data, keep-alives
            parts = text[6:].strip().split(".")
            if len(parts) == 3 and parts[2] == "result":
                future = self.waiting.pop(parts[1], None)
                if future is None:
                    self.early[parts[1]] = text
                elif not future.done():
                    future.set_result(text)

    def expect(self, task_id: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if task_id in self.early:
            future.set_result(self.early.pop(task_id))
        else:
            self.waiting[task_id] = future
        return future

    async def close(self) -> None:
        if self.reader_task is not None:
            self.reader_task.cancel()
            self.writer.close()


async def over_http(rounds: int, url: str, host: str, port: int, key: str) -> list[float]:
    import httpx

    stream = ResultStream()
    await stream.open(host, port, key)
    await asyncio.sleep(0.5)  # the server subscribes after it sends the headers
    samples = []
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as http:
        try:
            for n in range(rounds + 1):
                began = time.perf_counter()
                response = await http.post("/api/v1/tasks", json=PAYLOAD)
                response.raise_for_status()
                await asyncio.wait_for(stream.expect(response.json()["id"]), 30)
                if n:  # the first warms the connection
                    samples.append(time.perf_counter() - began)
        finally:
            await stream.close()
    return samples


# ---- the driver ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="tasks per path")
    parser.add_argument("--agents", type=int, default=2, help="echo agents")
    parser.add_argument(
        "--spaced",
        type=int,
        default=20,
        help="tasks through TaskClient each after its agents went idle (IDLE_LINGER_S)",
    )
    parser.add_argument("--no-http", action="store_true", help="skip Serve and the HTTP path")
    parser.add_argument("--quick", action="store_true", help="a tiny run (tests/bench_smoke)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.agents, args.spaced, args.no_http = 10, 1, 1, False
    if not 1 <= args.rounds <= 100_000 or not 1 <= args.agents <= 64:
        parser.error("--rounds must be within 1..100000 and --agents within 1..64")
    if not 0 <= args.spaced <= 1000:
        parser.error("--spaced must be within 0..1000")

    import ray
    from sse import free_port, make_key, wait_ready

    from actors.host import IDLE_LINGER_S
    from runtime.config import load_settings
    from runtime.raycluster import init_ray
    from runtime.services import ensure_services, stop_services
    from runtime.store.migrations import migrate
    from supervisors.tree import start_tree, stop_tree, tree_from_settings

    scratch = Path(tempfile.mkdtemp(prefix="rayvisor-bench-latency-"))
    embedded = load_settings(home=scratch / "home")
    urls = ensure_services(embedded)
    pools = [{"id": "echo", "agent": "actors.builtin.echo:EchoAgent", "size": args.agents}]
    settings = load_settings(
        home=scratch / "home",
        database_url=urls.database_url,
        nats_url=urls.nats_url,
        namespace=NAMESPACE,
        http_port=free_port(),
        tree={"pools": pools},
    )
    figures: dict[str, Any] = {}
    try:
        asyncio.run(migrate(urls.database_url))
        init_ray(settings, urls.database_url, urls.nats_url, namespace=NAMESPACE, num_cpus=2)
        start_tree(tree_from_settings(settings), NAMESPACE, 300)

        async def measure() -> None:
            from actors.tasks import TaskClient

            client = TaskClient(NAMESPACE, settings.task_shards)
            deadline = time.monotonic() + 120
            while sum(s["agents"] for s in await client.statistics()) < args.agents:
                if time.monotonic() > deadline:
                    raise SystemExit("the agents never registered")
                await asyncio.sleep(0.1)
            warm = max(5, args.rounds // 10)
            await through_task_client(warm, settings.task_shards)
            figures.update(summary("raw_ray", await raw_ray(max(args.rounds, 200))))
            figures.update(
                summary("taskclient", await through_task_client(args.rounds, settings.task_shards))
            )
            if args.spaced:  # a task that finds its agent idle, not busy from the last one
                pause_s = IDLE_LINGER_S + 0.2
                spaced = await through_task_client(args.spaced, settings.task_shards, pause_s)
                figures.update(summary("taskclient_after_idle", spaced))

        asyncio.run(measure())
        if not args.no_http:
            from serve.app import deploy

            url = deploy(settings)
            key = asyncio.run(make_key(urls.database_url))
            wait_ready(url, 120)
            samples = asyncio.run(
                over_http(args.rounds, url, settings.http_host, settings.http_port, key)
            )
            figures.update(summary("http", samples))
        stop_tree(NAMESPACE, timeout_s=60)
        ray.shutdown()
    finally:
        stop_services(embedded)
    figures.update(rounds=args.rounds, agents=args.agents, batch_window_ms=settings.batch_window_ms)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
