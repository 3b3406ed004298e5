"""SSE fan-out: `--clients` concurrent streams of `GET /api/v1/events/stream` held for
`--duration` seconds while tasks run; is every event delivered to every client, how late?

One run, one local Ray (as bench/http.py): embedded PostgreSQL and NATS, the tree (task
manager, relay, a pool of echo agents), the `rayvisor` ingress deployed by
`serve.app.deploy`, and a separate load process (raw HTTP/1.1 over asyncio streams, so
the clients cost the 2 cores as little as they can) that:

1. opens the streams on `--subject` (default `tasks.>`), at most 50 connects at a time,
   and waits until every one is subscribed (the stream's consumer count, read from
   JetStream: the server subscribes after it sends the headers);
2. subscribes itself to the same subject straight on JetStream: the reference, which
   says which events there were (by stream sequence, the SSE `id`) and when each reached
   a subscriber without HTTP;
3. submits echo tasks over HTTP at `--rate` per second for `--duration` seconds, then
   waits (bounded) for each task's result event, and for every client to have every
   event the reference saw (bounded by `--grace`).

Prints one JSON object on the last line of stdout: `clients`, `events` (durable events the
reference saw), `delivered` (client x event pairs received), `missing` (expected pairs not
received), `p99_delivery_ms` (a client's receipt after the reference's: what the HTTP
path adds), and the raw baseline `baseline_p99_ms`, the reference's own delay from the
event's timestamp (outbox, relay, JetStream: what any subscriber waits). Live-only events
(no `id`) are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

NAMESPACE = "bench-sse"
TASK_BODY = {"title": "sse", "required_capabilities": ["echo"]}
CONNECT_SLOTS = 50


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of tasks")
    parser.add_argument("--rate", type=float, default=2.0, help="tasks submitted per second")
    parser.add_argument("--agents", type=int, default=2, help="echo agents")
    parser.add_argument("--subject", default="tasks.>")
    parser.add_argument("--grace", type=float, default=30.0, help="max wait for stragglers")
    parser.add_argument("--connect-timeout", type=float, default=180.0)
    parser.add_argument("--client", help=argparse.SUPPRESS)  # the load process's arguments
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 20_000:
        parser.error("--clients must be within 1..20000")
    if not 0 < args.duration <= 3600 or not 0 < args.rate <= 1000:
        parser.error("--duration must be within (0, 3600] and --rate within (0, 1000]")
    return args


# ---- the load process ------------------------------------------------------------------


class SseClient:
    """One stream: records when each event id first arrived (monotonic seconds)."""

    def __init__(self) -> None:
        self.received: dict[int, float] = {}
        self.connected = asyncio.Event()
        self.error: str | None = None

    async def run(self, host: str, port: int, request: bytes, slots: asyncio.Semaphore) -> None:
        try:
            async with slots:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if head[9:12] != b"200":
                    raise RuntimeError(f"status {head[9:12].decode()}")
            self.connected.set()
            await self._read(reader, b"transfer-encoding: chunked" in head.lower())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:200]
            self.connected.set()

    async def _read(self, reader: asyncio.StreamReader, chunked: bool) -> None:
        buffer = b""
        while True:
            if chunked:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    return
                data = (await reader.readexactly(size + 2))[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    return
            buffer = (buffer + data).replace(b"\r\n", b"\n")
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                for line in block.split(b"\n"):
                    if line.startswith(b"id:"):
                        seq = int(line[3:].strip())
                        self.received.setdefault(seq, time.monotonic())


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def load(cfg: dict[str, Any]) -> dict[str, Any]:
    import httpx
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy

    host, port = cfg["host"], cfg["port"]
    auth = f"Bearer {cfg['key']}"
    query = httpx.QueryParams({"subject": cfg["subject"]})
    request = (
        f"GET /api/v1/events/stream?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: {auth}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    nc = await nats.connect(cfg["nats_url"])
    js = nc.jetstream()
    stream = cfg["stream"]
    consumers_before = (await js.stream_info(stream)).state.consumer_count
    clients = [SseClient() for _ in range(cfg["clients"])]
    slots = asyncio.Semaphore(CONNECT_SLOTS)
    runners = [asyncio.create_task(c.run(host, port, request, slots)) for c in clients]
    began = time.monotonic()
    deadline = began + cfg["connect_timeout"]
    await asyncio.wait_for(
        asyncio.gather(*(c.connected.wait() for c in clients)), max(1.0, deadline - began)
    )
    failed = [c.error for c in clients if c.error]
    if failed:
        raise SystemExit(f"{len(failed)} streams failed to open, e.g. {failed[0]}")
    while (await js.stream_info(stream)).state.consumer_count < consumers_before + len(clients):
        if time.monotonic() > deadline:
            raise SystemExit("the streams' consumers did not all appear on JetStream")
        await asyncio.sleep(0.2)
    connect_s = time.monotonic() - began

    reference: dict[int, float] = {}
    baseline: list[float] = []
    results: set[str] = set()

    async def on_reference(msg: Any) -> None:
        reference.setdefault(msg.metadata.sequence.stream, time.monotonic())
        payload = json.loads(msg.data)
        stamp = payload.get("timestamp")
        if stamp:
            baseline.append(time.time() - datetime.fromisoformat(stamp).timestamp())
        if msg.subject.endswith(".result"):
            results.add(msg.subject.split(".")[1])

    ref_sub = await js.subscribe(
        cfg["subject"],
        stream=stream,
        ordered_consumer=True,
        cb=on_reference,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )
    submitted: list[str] = []
    errors: dict[str, int] = {}
    async with httpx.AsyncClient(
        base_url=f"http://{host}:{port}", headers={"Authorization": auth}, timeout=30
    ) as http:
        window = time.monotonic()
        total = max(1, round(cfg["duration"] * cfg["rate"]))
        for n in range(total):  # one every 1/rate s, on schedule, bounded in count
            await asyncio.sleep(max(0.0, window + n / cfg["rate"] - time.monotonic()))
            try:
                response = await http.post("/api/v1/tasks", json=TASK_BODY)
                response.raise_for_status()
                submitted.append(response.json()["id"])
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    ends_by = time.monotonic() + 60 + cfg["grace"]
    while not set(submitted) <= results and time.monotonic() < ends_by:
        await asyncio.sleep(0.1)
    await ref_sub.unsubscribe()
    expected = dict(reference)
    ends_by = time.monotonic() + cfg["grace"]
    while time.monotonic() < ends_by and any(
        len(expected.keys() - c.received.keys()) for c in clients
    ):
        await asyncio.sleep(0.2)
    for runner in runners:
        runner.cancel()
    await asyncio.gather(*runners, return_exceptions=True)
    await nc.close()

    delays = [
        max(0.0, c.received[seq] - at) for c in clients for seq, at in expected.items()
        if seq in c.received
    ]  # fmt: skip
    delivered = len(delays)
    p99 = percentile(delays, 0.99)
    base = percentile(baseline, 0.99)
    return {
        "clients": len(clients),
        "events": len(expected),
        "delivered": delivered,
        "missing": len(expected) * len(clients) - delivered,
        "p99_delivery_ms": round(p99 * 1000, 1) if p99 is not None else None,
        "p50_delivery_ms": round((percentile(delays, 0.5) or 0) * 1000, 1),
        "baseline_p99_ms": round(base * 1000, 1) if base is not None else None,
        "tasks": len(submitted),
        "tasks_finished": len(set(submitted) & results),
        "submit_errors": errors,
        "connect_s": round(connect_s, 1),
    }


def run_load(encoded: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(load(json.loads(encoded)))))


# ---- the driver ------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def make_key(database_url: str) -> str:
    from runtime.models.enums import Scope
    from runtime.store import api_keys
    from runtime.store.pool import create_pool

    pool = await create_pool(database_url, max_size=2)
    try:  # no rate limit worth the name: the bench measures the streams, not the bucket
        _, key = await api_keys.create(
            pool, "bench-sse", [Scope.READ, Scope.WRITE], rate_per_s=1e9, burst=1_000_000_000
        )
        return key
    finally:
        await pool.close()


def wait_ready(url: str, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} not ready within {timeout_s} s")
        time.sleep(0.2)


def measure_streams(settings: Any, nats_url: str, database_url: str, args: Any) -> dict[str, Any]:
    """Deploy the ingress on a running Ray and tree (`settings.namespace`), hold
    `args.clients` streams while tasks run (`args`: as `parse_args` gives), in a load process
    of its own; its figures. Used by bench/scale.py too."""
    from serve.app import deploy

    url = deploy(settings)
    key = asyncio.run(make_key(database_url))
    wait_ready(url, 120)
    cfg = {
        "host": settings.http_host,
        "port": settings.http_port,
        "key": key,
        "nats_url": nats_url,
        "stream": settings.stream_name,
        "subject": args.subject,
        "clients": args.clients,
        "duration": args.duration,
        "rate": args.rate,
        "grace": args.grace,
        "connect_timeout": args.connect_timeout,
    }
    limit = args.connect_timeout + args.duration + 2 * args.grace + 180
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--client", json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=limit,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the load process failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.client:
        run_load(args.client)
        return
    import ray

    from runtime.config import load_settings
    from runtime.raycluster import init_ray
    from runtime.services import ensure_services, stop_services
    from runtime.store.migrations import migrate
    from supervisors.tree import start_tree, stop_tree, tree_from_settings

    scratch = Path(tempfile.mkdtemp(prefix="rayvisor-bench-sse-"))
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
    try:
        asyncio.run(migrate(urls.database_url))
        init_ray(settings, urls.database_url, urls.nats_url, namespace=NAMESPACE, num_cpus=2)
        start_tree(tree_from_settings(settings), NAMESPACE, 300)
        figures = measure_streams(settings, urls.nats_url, urls.database_url, args)
        stop_tree(NAMESPACE, timeout_s=60)
        ray.shutdown()
    finally:
        stop_services(embedded)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
