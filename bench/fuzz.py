"""Fuzz the whole HTTP API from its own OpenAPI document (schemathesis), streams included.

One run, one local Ray: embedded PostgreSQL and NATS, the tree (task manager, relay, a pool
of echo agents) and the Serve ingress, as `rayvisor up` runs them, all on 127.0.0.1. Every
operation of `/openapi.json` gets `--examples` generated requests (valid and invalid ones)
with an admin key that has no practical rate limit, checked as
tests/e2e/shared_http/test_http_schema.py checks them: no 5xx, a documented status, content
type, headers and body. A stream route (`.../stream`) never ends, so each of its
`--stream-examples` cases is opened, its status and headers read (no 5xx; 200 is
`text/event-stream`, a refusal `application/problem+json`) and closed. Hypothesis stops an
operation at its first failure (and shrinks it), so
`failures` counts failing operations; `server_errors` counts every 5xx answer seen.

Bounded: `--examples` cases per operation, and no operation starts after `--max-seconds`.
Prints one JSON object on the last line of stdout:
`{"operations", "stream_operations", "cases", "failures", "server_errors", "failed",
"seconds"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NAMESPACE = "bench-fuzz"
STREAM_READ_S = 5.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="cases per operation")
    parser.add_argument("--stream-examples", type=int, default=20, help="cases per stream")
    parser.add_argument("--agents", type=int, default=2, help="echo agents in the tree")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (repeatable)")
    parser.add_argument(
        "--max-seconds", type=float, default=1800, help="start no operation after this"
    )
    return parser.parse_args()


async def make_admin_key(database_url: str) -> str:
    from runtime.models.enums import Scope
    from runtime.store import api_keys
    from runtime.store.pool import create_pool

    pool = await create_pool(database_url, max_size=2)
    try:
        _, key = await api_keys.create(
            pool, "bench-fuzz", [Scope.ADMIN], rate_per_s=1e9, burst=1_000_000_000
        )
        return key
    finally:
        await pool.close()


def wait_ready(url: str, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready within {timeout_s} s")


class Tally:
    """What the run saw."""

    def __init__(self) -> None:
        self.cases = 0
        self.server_errors = 0
        self.failed: list[str] = []


def fuzz_operation(operation: Any, headers: dict[str, str], args: argparse.Namespace,
                   tally: Tally) -> None:  # fmt: skip
    """`--examples` cases of one (non-stream) operation, each called and checked."""
    from hypothesis import HealthCheck, given, seed, settings
    from schemathesis import checks

    checked = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_headers_conformance,
        checks.response_schema_conformance,
        checks.negative_data_rejection,
    ]

    @seed(args.seed)
    @given(case=operation.as_strategy())
    @settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        tally.cases += 1
        response = case.call(headers=headers, timeout=30)
        if response.status_code >= 500:
            tally.server_errors += 1
        case.validate_response(response, checks=checked, headers=headers)

    try:
        check()
    except Exception as exc:
        tally.failed.append(f"{operation.label}: {str(exc)[:2000]}")


def fuzz_stream(operation: Any, url: str, headers: dict[str, str], args: argparse.Namespace,
                tally: Tally) -> None:  # fmt: skip
    """`--stream-examples` cases of a stream: opened, status and headers read, closed."""
    import requests
    from hypothesis import HealthCheck, given, seed, settings

    @seed(args.seed)
    @given(case=operation.as_strategy())
    @settings(
        max_examples=args.stream_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        tally.cases += 1
        kwargs = case.as_transport_kwargs(base_url=url, headers=headers)
        with requests.request(**kwargs, stream=True, timeout=STREAM_READ_S) as response:
            status = response.status_code
            kind = response.headers.get("content-type", "")
        if status >= 500:
            tally.server_errors += 1
        assert status < 500, f"{status} from {kwargs['url']}"
        documented = set(operation.definition.raw.get("responses", {}))
        assert str(status) in documented or "default" in documented, f"{status} undocumented"
        if status == 200:
            assert kind.startswith("text/event-stream"), kind
        elif status >= 400:
            assert kind.startswith("application/problem+json"), kind

    try:
        check()
    except Exception as exc:
        tally.failed.append(f"{operation.label}: {str(exc)[:2000]}")


def run(url: str, key: str, args: argparse.Namespace) -> dict[str, Any]:
    import schemathesis

    began = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = {"Authorization": f"Bearer {key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    tally = Tally()
    streams = 0
    for operation in operations:
        if time.monotonic() - began > args.max_seconds:
            tally.failed.append(f"{operation.label}: not run (past --max-seconds)")
            continue
        if operation.path.endswith("/stream"):
            streams += 1
            fuzz_stream(operation, url, headers, args, tally)
        else:
            fuzz_operation(operation, headers, args, tally)
    return {
        "operations": len(operations),
        "stream_operations": streams,
        "cases": tally.cases,
        "failures": len(tally.failed),
        "server_errors": tally.server_errors,
        "failed": tally.failed,
    }


def main() -> None:
    began = time.monotonic()
    args = parse_args()
    import ray

    from runtime.config import load_settings
    from runtime.raycluster import init_ray
    from runtime.services import ensure_services, stop_services
    from runtime.store.migrations import migrate
    from serve.app import deploy
    from supervisors.tree import start_tree, stop_tree, tree_from_settings

    scratch = Path(tempfile.mkdtemp(prefix="rayvisor-bench-fuzz-"))
    embedded = load_settings(home=scratch / "home")
    urls = ensure_services(embedded)
    pools = [{"id": "echo", "agent": "actors.builtin.echo:EchoAgent", "size": args.agents}]
    settings = load_settings(
        home=scratch / "home",
        database_url=urls.database_url,
        nats_url=urls.nats_url,
        nats_monitor_url=urls.nats_monitor_url,
        namespace=NAMESPACE,
        http_port=_free_port(),
        http={"keep_alive_s": 1.0},
        tree={"pools": pools},
    )
    try:
        asyncio.run(migrate(urls.database_url))
        init_ray(settings, urls.database_url, urls.nats_url, namespace=NAMESPACE, num_cpus=2)
        start_tree(tree_from_settings(settings), NAMESPACE, 120)
        url = deploy(settings)
        key = asyncio.run(make_admin_key(urls.database_url))
        wait_ready(url, 120)
        figures = run(url, key, args)
        stop_tree(NAMESPACE, timeout_s=60)
        ray.shutdown()
    finally:
        stop_services(embedded)
    figures["seconds"] = round(time.monotonic() - began, 1)
    figures["examples_per_operation"] = args.examples
    figures["stream_examples"] = args.stream_examples
    for line in figures["failed"]:
        print(line, file=sys.stderr)
    print(json.dumps(figures))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
