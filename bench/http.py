"""HTTP ingress: `POST /api/v1/tasks` per second and its p50/p99, beside a trivial endpoint.

One run, one local Ray: embedded PostgreSQL and NATS, the tree (task manager, relay, a pool
of echo agents, so submitted tasks do complete), the `rayvisor` ingress deployed by
`serve.app.deploy`, and in the same Serve instance a second app, a FastAPI ingress under
`/trivial` with the same replicas and max_ongoing_requests. The limit is the same trivial
endpoint under plain uvicorn in a separate process.

The trivial endpoint is a POST that reads the same JSON body as the task submit (into a
pydantic model) and answers {"ok": true}: through Serve's proxy a replica fetches a
request's body from the proxy with one more actor call, so reading a body costs a
request about twice a bodiless GET's CPU (measured here: proxy 3.2 vs 1.8 ms, replica 2.6
vs 1.4 ms), whatever the route does. The trivial GET is measured too (`trivial_get_*`).

The load generator is a separate process too (raw HTTP/1.1 keep-alive over asyncio
streams, so the client costs the 2 cores as little as it can): `--concurrency`
connections, each bounded in requests and time; the first `--warmup` seconds are not
counted. Measurements alternate trivial/tasks for `--rounds` rounds, the figures pool the
rounds. Everything is on 127.0.0.1. Prints one JSON object on the last line of stdout.

Bulk ingest (`batch_tasks_per_s`): `--batch-clients` connections (4) send `--batch-tasks`
no-op echo tasks (10,000) through `POST /api/v1/tasks/batch`, `--batch-size` (200) a
request, each connection one request at a time; counted from the first request's start
until the last answer (every task stored, durable). The tasks then run on the echo pool:
`batch_completed` of them completed, `batch_run_s` after the first request.

`--mode` picks how HTTP reaches the replica:
- `proxy` (the default, as `rayvisor up` runs it): requests go through the Serve proxy
  actor on `http_port`.
- `direct`: RAY_SERVE_THROUGHPUT_OPTIMIZED=1, i.e. direct ingress (each ingress replica
  runs its own uvicorn on a port of its own, 30000+), user code and router on the
  replica's main loop, no Serve logs to stderr. The requests go to the replica's port.
- `haproxy`: direct ingress behind HAProxy (RAY_SERVE_ENABLE_HA_PROXY=1) on `http_port`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "http":
    # `make bench` runs `python bench/<script>.py`, which puts bench/ first on sys.path:
    # there, this file would shadow the standard library's `http` package for the sibling
    # benches (and for this one). Imported as `http`, it stands aside for the real one;
    # the import system returns what sys.modules holds once this body has run.
    import importlib.util
    import sysconfig

    _stdlib_http = Path(sysconfig.get_path("stdlib")) / "http"
    _spec = importlib.util.spec_from_file_location(
        "http", _stdlib_http / "__init__.py", submodule_search_locations=[str(_stdlib_http)]
    )
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["http"] = _module
    _spec.loader.exec_module(_module)

NAMESPACE = "bench-http"
TASK_BODY = {"title": "noop", "required_capabilities": ["echo"]}
BATCH_TITLE = "batch noop"
TRIVIAL_APP = "trivial"
TRIVIAL_PREFIX = "/trivial"

MODES: dict[str, dict[str, str]] = {
    "proxy": {},
    "direct": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    "haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}

# The load generator, run as `python -c LOAD_CLIENT '<json args>'`. It prints one JSON object.
LOAD_CLIENT = r"""
import asyncio, json, sys, time
from urllib.parse import urlsplit

args = json.loads(sys.argv[1])
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass

body = args["body"].encode() if args["body"] is not None else b""
targets = []
for url in args["urls"]:
    parts = urlsplit(url)
    path = parts.path or "/"
    lines = [f"{args['method']} {path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}"]
    lines += [f"{k}: {v}" for k, v in args["headers"].items()]
    if args["body"] is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    targets.append((parts.hostname, parts.port, request))

max_requests = args["max_requests"]
began = time.perf_counter()
counted_from = began + args["warmup_s"]
stop_at = counted_from + args["duration_s"]
issued = 0
latencies = []
statuses = {}
errors = {}
last_done = counted_from


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, close = None, False, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close


async def worker(index):
    global issued, last_done
    host, port, request = targets[index % len(targets)]
    reader = writer = None
    while issued < max_requests and time.perf_counter() < stop_at:
        issued += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            writer.write(request)
            status, close = await read_response(reader)
            done = time.perf_counter()
            if close:
                writer.close()
                writer = None
        except Exception as exc:
            name = type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.05)
            continue
        if started >= counted_from:
            statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                latencies.append(done - started)
            last_done = max(last_done, done)
    if writer is not None:
        writer.close()


async def main():
    tasks = [asyncio.ensure_future(worker(i)) for i in range(args["concurrency"])]
    _, pending = await asyncio.wait(tasks, timeout=args["warmup_s"] + args["duration_s"] + 30)
    for task in pending:
        task.cancel()
    latencies.sort()
    elapsed = max(last_done - counted_from, 1e-9)
    n = len(latencies)
    print(json.dumps({
        "ok": n,
        "rps": round(n / elapsed, 1),
        "p50_ms": round(latencies[n // 2] * 1000, 2) if n else None,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 2) if n else None,
        "elapsed_s": round(elapsed, 2),
        "statuses": statuses,
        "errors": errors,
        "stuck": len(pending),
        "latencies_ms": [round(x * 1000, 3) for x in latencies],
    }))


asyncio.run(main())
"""

# The limit: the trivial endpoint under plain uvicorn (no access log, as Serve runs it).
UVICORN_SERVER = r"""
import sys
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Body(BaseModel):
    title: str
    required_capabilities: list[str] = []


@app.post("/trivial")
async def trivial(body: Body):
    return {"ok": True}


@app.get("/trivial")
async def trivial_get():
    return {"ok": True}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load(
    urls: list[str],
    args: argparse.Namespace,
    *,
    method: str = "GET",
    body: dict | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One measurement by the load generator in its own process."""
    spec = {
        "urls": urls,
        "method": method,
        "body": json.dumps(body) if body is not None else None,
        "headers": headers or {},
        "concurrency": args.concurrency,
        "max_requests": args.max_requests,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
    }
    bound = args.warmup + args.duration + 60
    done = subprocess.run(
        [sys.executable, "-c", LOAD_CLIENT, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=bound,
        cwd=tempfile.gettempdir(),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds as one: requests over summed time, percentiles of all latencies."""
    latencies = sorted(x for r in runs for x in r["latencies_ms"])
    n = len(latencies)
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in runs:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "rps": round(n / sum(r["elapsed_s"] for r in runs), 1) if n else 0.0,
        "p50_ms": round(latencies[n // 2], 2) if n else None,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))], 2) if n else None,
        "rounds_rps": [r["rps"] for r in runs],
        "rounds_p99_ms": [r["p99_ms"] for r in runs],
        "statuses": statuses,
        "errors": errors,
    }


def wait_http(url: str, timeout_s: float, headers: dict[str, str] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=5, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s")
        time.sleep(0.2)


def ingress_urls(app_name: str, proxy_url: str, mode: str, timeout_s: float) -> list[str]:
    """Where the app's requests go: its replicas' own ports under direct ingress, else the
    proxy (Serve's, or HAProxy) on `http_port`."""
    if mode != "direct":
        return [proxy_url]
    import ray
    from ray.serve._private.common import RequestProtocol
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    deadline = time.monotonic() + timeout_s
    while True:
        groups = ray.get(controller.get_target_groups.remote(app_name))
        ports = sorted(
            t.port
            for g in groups
            if g.protocol == RequestProtocol.HTTP
            for t in g.targets
            if f"http://127.0.0.1:{t.port}" != proxy_url
        )
        if ports:
            return [f"http://127.0.0.1:{port}" for port in ports]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no direct-ingress port for {app_name} within {timeout_s}s")
        time.sleep(0.2)


def deploy_trivial(replicas: int, max_ongoing: int) -> None:
    from fastapi import FastAPI
    from pydantic import BaseModel
    from ray import serve

    class Body(BaseModel):
        title: str
        required_capabilities: list[str] = []

    app = FastAPI()

    async def trivial(body: Body) -> dict[str, bool]:
        return {"ok": True}

    # `from __future__ import annotations` leaves "Body" a string FastAPI can't resolve here
    trivial.__annotations__["body"] = Body
    app.post("/")(trivial)

    @app.get("/")
    async def trivial_get() -> dict[str, bool]:
        return {"ok": True}

    @serve.deployment(name="trivial")
    @serve.ingress(app)
    class Trivial:
        pass

    bound = Trivial.options(
        num_replicas=replicas, max_ongoing_requests=max_ongoing, ray_actor_options={"num_cpus": 0}
    ).bind()
    serve.run(bound, name=TRIVIAL_APP, route_prefix=TRIVIAL_PREFIX)


async def submit_loop(args: argparse.Namespace, shards: int) -> dict[str, Any]:
    """Without HTTP: `--concurrency` callers in this driver, each submitting one task at a
    time through `TaskClient.submit`, as the route does (what the task manager gives)."""
    import asyncio

    from actors.tasks import TaskClient

    client = TaskClient(NAMESPACE, shards)
    latencies: list[float] = []
    counted_from = time.perf_counter() + args.warmup
    stop_at = counted_from + args.duration
    issued = 0

    async def caller() -> None:
        nonlocal issued
        while issued < args.max_requests and time.perf_counter() < stop_at:
            issued += 1
            started = time.perf_counter()
            await client.submit(**TASK_BODY)
            if started >= counted_from:
                latencies.append(time.perf_counter() - started)

    await asyncio.wait_for(
        asyncio.gather(*(caller() for _ in range(args.concurrency))),
        args.warmup + args.duration + 60,
    )
    latencies.sort()
    n = len(latencies)
    return {
        "rps": round(n / args.duration, 1),
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 2) if n else None,
    }


async def make_write_key(database_url: str) -> str:
    from runtime.models.enums import Scope
    from runtime.store import api_keys
    from runtime.store.pool import create_pool

    pool = await create_pool(database_url, max_size=2)
    try:
        # no rate limit worth the name: the bench measures the ingress, not the bucket
        _, key = await api_keys.create(
            pool, "bench-http", [Scope.WRITE], rate_per_s=1e9, burst=1_000_000_000
        )
        return key
    finally:
        await pool.close()


async def drain(database_url: str, timeout_s: float) -> int:
    """Wait (bounded) until no submitted task is still to run; returns those left."""
    import asyncio

    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            active = await conn.fetchval(
                "SELECT count(*) FROM tasks"
                " WHERE status IN ('pending', 'queued', 'assigned', 'running')"
            )
            if active == 0 or time.monotonic() > deadline:
                return int(active)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def task_counts(database_url: str) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM tasks GROUP BY status")
        return {r["status"]: r["n"] for r in rows}
    finally:
        await conn.close()


def load_batches(url: str, auth: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """`--batch-tasks` tasks through the batch route by `--batch-clients` connections, as
    fast as they are answered: the load generator with no warm-up and a request budget."""
    batch = {"tasks": [{"title": BATCH_TITLE, "required_capabilities": ["echo"]}] * args.batch_size}
    requests = -(-args.batch_tasks // args.batch_size)
    spec = {
        "urls": [url],
        "method": "POST",
        "body": json.dumps(batch),
        "headers": auth,
        "concurrency": args.batch_clients,
        "max_requests": requests,
        "warmup_s": 0.0,
        "duration_s": 600.0,
    }
    done = subprocess.run(
        [sys.executable, "-c", LOAD_CLIENT, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tempfile.gettempdir(),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    sent = run["ok"] * args.batch_size
    return {
        "batch_tasks_per_s": round(sent / run["elapsed_s"], 1) if run["elapsed_s"] else 0.0,
        "batch_requests": run["ok"],
        "batch_ingest_s": run["elapsed_s"],
        "batch_request_p50_ms": run["p50_ms"],
        "batch_request_p99_ms": run["p99_ms"],
        "batch_statuses": run["statuses"],
        "batch_errors": run["errors"],
    }


async def batch_outcome(database_url: str, began: float, timeout_s: float) -> dict[str, Any]:
    """Wait (bounded) until the batch's tasks have ended; how many were stored and
    completed (each once), and when the last one ended after `began`."""
    import asyncio

    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = await conn.fetch(
                "SELECT status, count(*) AS n FROM tasks WHERE title = $1 GROUP BY status",
                BATCH_TITLE,
            )
            counts = {r["status"]: r["n"] for r in rows}
            active = sum(counts.get(s, 0) for s in ("pending", "queued", "assigned", "running"))
            if active == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        ran_s = time.monotonic() - began
        twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT o.subject FROM outbox o JOIN tasks t"
            " ON o.subject = 'tasks.' || t.id || '.result' WHERE t.title = $1"
            " AND o.payload->>'status' = 'completed' GROUP BY o.subject"
            " HAVING count(*) > 1) AS d",
            BATCH_TITLE,
        )
    finally:
        await conn.close()
    return {
        "batch_stored": sum(counts.values()),
        "batch_completed": counts.get("completed", 0),
        "batch_completed_twice": twice,
        "batch_run_s": round(ran_s, 2),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="proxy")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--max-ongoing",
        type=int,
        default=None,
        help="per replica (default: settings.http.max_ongoing_requests)",
    )
    parser.add_argument("--agents", type=int, default=2, help="echo agents (0: none)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds counted per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted per run")
    parser.add_argument("--max-requests", type=int, default=200_000, help="per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Serve's per-request log lines (default: Serve's own)",
    )
    parser.add_argument(
        "--healthz", action="store_true", help="also measure rayvisor's own GET /healthz"
    )
    parser.add_argument(
        "--tm-baseline",
        action="store_true",
        help="also submit one task at a time from the driver, without HTTP",
    )
    parser.add_argument("--no-uvicorn", action="store_true", help="skip the plain uvicorn run")
    parser.add_argument(
        "--batch-tasks", type=int, default=10_000, help="tasks sent through the batch route"
    )
    parser.add_argument("--batch-size", type=int, default=200, help="tasks a batch request")
    parser.add_argument("--batch-clients", type=int, default=4, help="batch connections")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="more RAY_SERVE_* settings, exported before Ray starts",
    )
    args = parser.parse_args()
    if min(args.replicas, args.concurrency, args.rounds, args.max_requests) < 1:
        parser.error("--replicas, --concurrency, --rounds and --max-requests must be >= 1")
    if min(args.batch_tasks, args.batch_size, args.batch_clients) < 1:
        parser.error("--batch-tasks, --batch-size and --batch-clients must be >= 1")
    if args.agents < 0 or args.duration <= 0 or args.warmup < 0:
        parser.error("--agents, --warmup must be >= 0 and --duration > 0")
    return args


def main() -> None:
    began = time.monotonic()
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="rayvisor-bench-http-"))
    env = dict(MODES[args.mode])
    if args.mode == "haproxy":
        # keep HAProxy's files and ports to this run (others may run beside it); a short
        # directory, as HAProxy nests a 40-character hash in it and a unix socket's path
        # must stay under 108 bytes
        short = Path(tempfile.mkdtemp(prefix="rvh", dir="/tmp"))
        env |= {
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(short / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(short / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(short),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(short / "server-state"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        }
    for pair in args.env:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env {pair!r} is not NAME=VALUE")
        env[name] = value
    # before Ray (or Serve's constants) is imported: raylet and every worker inherit these
    os.environ.update(env)

    import asyncio

    import ray
    from ray import serve

    from runtime.config import load_settings
    from runtime.raycluster import init_ray
    from runtime.services import ensure_services, stop_services
    from runtime.store.migrations import migrate
    from serve.app import deploy
    from supervisors.tree import start_tree, stop_tree, tree_from_settings

    http: dict[str, Any] = {"replicas": args.replicas}
    if args.max_ongoing is not None:
        http["max_ongoing_requests"] = args.max_ongoing
    pools = [{"id": "echo", "agent": "actors.builtin.echo:EchoAgent", "size": args.agents}]
    embedded = load_settings(home=scratch / "home")
    urls = ensure_services(embedded)
    settings = load_settings(
        home=scratch / "home",
        database_url=urls.database_url,
        nats_url=urls.nats_url,
        namespace=NAMESPACE,
        http_port=free_port(),
        http=http,
        tree={"pools": pools if args.agents else []},
    )
    uvicorn_proc: subprocess.Popen | None = None
    try:
        asyncio.run(migrate(urls.database_url))
        init_ray(settings, urls.database_url, urls.nats_url, namespace=NAMESPACE, num_cpus=2)
        start_tree(tree_from_settings(settings), NAMESPACE, 120)
        if args.access_log is not None:
            # deploy() below finds Serve started and keeps these options
            serve.start(
                http_options={"host": settings.http_host, "port": settings.http_port},
                logging_config={"enable_access_log": args.access_log},
            )
        proxy_url = deploy(settings)
        max_ongoing = settings.http.max_ongoing_requests
        deploy_trivial(args.replicas, max_ongoing)
        key = asyncio.run(make_write_key(urls.database_url))
        auth = {"Authorization": f"Bearer {key}"}

        tasks_urls = ingress_urls("rayvisor", proxy_url, args.mode, 60)
        trivial_urls = ingress_urls(TRIVIAL_APP, proxy_url, args.mode, 60)
        for url in tasks_urls:
            wait_http(f"{url}/readyz", 60)
        # a direct-ingress replica, too, serves its app under the app's route prefix
        trivial_urls = [f"{u}{TRIVIAL_PREFIX}/" for u in trivial_urls]
        for url in trivial_urls:
            wait_http(url, 60)

        tasks_runs, trivial_runs, trivial_get_runs, healthz_runs, left = [], [], [], [], []
        for _ in range(args.rounds):
            trivial_runs.append(load(trivial_urls, args, method="POST", body=TASK_BODY))
            trivial_get_runs.append(load(trivial_urls, args))
            if args.healthz:
                healthz_runs.append(load([f"{u}/healthz" for u in tasks_urls], args))
            tasks_runs.append(
                load(
                    [f"{u}/api/v1/tasks" for u in tasks_urls],
                    args,
                    method="POST",
                    body=TASK_BODY,
                    headers=auth,
                )
            )
            if args.agents:
                # the next round starts from an idle system, not a backlog
                left.append(asyncio.run(drain(urls.database_url, 60)))
        batch_began = time.monotonic()
        batch = load_batches(f"{tasks_urls[0]}/api/v1/tasks/batch", auth, args)
        if args.agents:
            bound = max(60.0, args.batch_tasks / 50)
            batch |= asyncio.run(batch_outcome(urls.database_url, batch_began, bound))
        tm_runs = []
        if args.tm_baseline:
            for _ in range(args.rounds):
                tm_runs.append(asyncio.run(submit_loop(args, settings.task_shards)))
                if args.agents:
                    left.append(asyncio.run(drain(urls.database_url, 60)))
        counts = asyncio.run(task_counts(urls.database_url))

        uvicorn_runs = []
        if not args.no_uvicorn:
            port = free_port()
            uvicorn_proc = subprocess.Popen(
                [sys.executable, "-c", UVICORN_SERVER, str(port)], cwd=tempfile.gettempdir()
            )
            wait_http(f"http://127.0.0.1:{port}/trivial", 30)
            uvicorn_runs = [
                load([f"http://127.0.0.1:{port}/trivial"], args, method="POST", body=TASK_BODY)
                for _ in range(args.rounds)
            ]

        # no serve.shutdown(): under direct ingress it drains for 30 s; Ray's end ends Serve
        stop_tree(NAMESPACE, timeout_s=60)
        ray.shutdown()
    finally:
        if uvicorn_proc is not None:
            uvicorn_proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                uvicorn_proc.wait(10)
        stop_services(embedded)

    tasks, trivial = pooled(tasks_runs), pooled(trivial_runs)
    trivial_get = pooled(trivial_get_runs)
    figures: dict[str, Any] = {
        "tasks_rps": tasks["rps"],
        "tasks_p50_ms": tasks["p50_ms"],
        "tasks_p99_ms": tasks["p99_ms"],
        "trivial_rps": trivial["rps"],
        "trivial_p50_ms": trivial["p50_ms"],
        "trivial_p99_ms": trivial["p99_ms"],
        "uvicorn_rps": pooled(uvicorn_runs)["rps"] if uvicorn_runs else None,
        "ratio_rps": round(tasks["rps"] / trivial["rps"], 3) if trivial["rps"] else None,
        "p99_ratio": (
            round(tasks["p99_ms"] / trivial["p99_ms"], 3)
            if tasks["p99_ms"] and trivial["p99_ms"]
            else None
        ),
    }
    figures |= batch
    figures["batch_vs_tasks_rps"] = (
        round(batch["batch_tasks_per_s"] / tasks["rps"], 2) if tasks["rps"] else None
    )
    figures |= {
        "trivial_get_rps": trivial_get["rps"],
        "trivial_get_p50_ms": trivial_get["p50_ms"],
        "trivial_get_p99_ms": trivial_get["p99_ms"],
    }
    if uvicorn_runs:
        figures["uvicorn_p50_ms"] = pooled(uvicorn_runs)["p50_ms"]
        figures["uvicorn_p99_ms"] = pooled(uvicorn_runs)["p99_ms"]
    if tm_runs:
        figures["tm_submit_rps"] = [r["rps"] for r in tm_runs]
        figures["tm_submit_p99_ms"] = [r["p99_ms"] for r in tm_runs]
    if healthz_runs:
        healthz = pooled(healthz_runs)
        figures |= {"healthz_rps": healthz["rps"], "healthz_p99_ms": healthz["p99_ms"]}
    figures["rounds"] = {
        "tasks_rps": tasks["rounds_rps"],
        "trivial_rps": trivial["rounds_rps"],
        "uvicorn_rps": pooled(uvicorn_runs)["rounds_rps"] if uvicorn_runs else [],
        "tasks_p99_ms": tasks["rounds_p99_ms"],
        "trivial_p99_ms": trivial["rounds_p99_ms"],
    }
    measured = {"tasks": tasks, "trivial": trivial, "trivial_get": trivial_get}
    figures["statuses"] = {name: m["statuses"] for name, m in measured.items()}
    figures["errors"] = {name: m["errors"] for name, m in measured.items()}
    figures["tasks_in_db"] = counts
    if left:
        figures["tasks_left_after_drain"] = left
    figures["serve_settings"] = {
        "mode": args.mode,
        "replicas": args.replicas,
        "max_ongoing_requests": max_ongoing,
        "env": {k: v for k, v in env.items() if not k.startswith("RAY_SERVE_HAPROXY_")},
        "access_log": "serve default" if args.access_log is None else args.access_log,
        "tasks_urls": [f"{u}/api/v1/tasks" for u in tasks_urls],
        "trivial_urls": trivial_urls,
        "trivial": "POST with the submit's body (trivial_get_*: GET, no body)",
        "proxy_url": proxy_url,
    }
    figures["load"] = {
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "agents": args.agents,
        "batch": {
            "tasks": args.batch_tasks,
            "size": args.batch_size,
            "clients": args.batch_clients,
        },
        "generator": "separate process, raw HTTP/1.1 keep-alive, asyncio+uvloop",
    }
    figures["wall_s"] = round(time.monotonic() - began, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # bench/ itself: see the `http` guard above
    main()
