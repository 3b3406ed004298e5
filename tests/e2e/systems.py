"""A running system behind real HTTP: the tree (task manager, relay, an echo pool) and the
Serve ingress on a free loopback port, with API keys of each scope. The fixtures that
start one are in the conftests beside the tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from helpers import delete_stream, free_port, rayvisor_cli, wait_until

from runtime.client import Client
from runtime.config import Settings, load_settings
from runtime.models.enums import Scope
from runtime.store import api_keys
from runtime.store.pool import create_pool

ECHO_POOL = {"id": "echo", "agent": "actors.builtin.echo:EchoAgent", "size": 2}


@dataclass
class HttpSystem:
    url: str
    settings: Settings
    keys: dict[str, str]
    """A key per scope name (`read`, `write`, `admin`), `limited` (read, burst 5, 1/s) and
    `unlimited` (admin, no practical rate limit)."""

    def client(self, scope: str = "admin") -> Client:
        return Client(self.url, self.keys[scope])

    def raw(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def make_keys(database_url: str) -> dict[str, str]:
    async def create() -> dict[str, str]:
        pool = await create_pool(database_url, max_size=2)
        try:
            keys = {}
            for scope in Scope:
                _, keys[scope.value] = await api_keys.create(pool, f"test-{scope}", [scope])
            _, keys["limited"] = await api_keys.create(
                pool, "test-limited", [Scope.READ], rate_per_s=1.0, burst=5
            )
            _, keys["unlimited"] = await api_keys.create(
                pool, "test-unlimited", [Scope.ADMIN], rate_per_s=1e6, burst=1_000_000
            )
            return keys
        finally:
            await pool.close()

    return asyncio.run(create())


@contextlib.contextmanager
def running_http_system(
    services, pools: list[dict], http: dict | None = None, **settings: object
) -> Iterator[HttpSystem]:
    """The tree with these pools (and these settings; `http` over a 1 s SSE keep-alive) and
    the Serve ingress, stopped afterwards."""
    from ray import serve

    from serve.app import deploy
    from supervisors.tree import start_tree, stop_tree, tree_from_settings

    namespace = f"http-{uuid.uuid4().hex[:6]}"
    settings = load_settings(
        home=services.home,
        database_url=services.database_url,
        nats_url=services.nats_url,
        nats_monitor_url=services.nats_monitor_url,
        namespace=namespace,
        http_port=free_port(),
        http={"keep_alive_s": 1.0, **(http or {})},
        tree={"pools": pools},
        **settings,
    )
    start_tree(tree_from_settings(settings), namespace, 120)
    try:
        url = deploy(settings)
        keys = make_keys(services.database_url)
        system = HttpSystem(url, settings, keys)
        with system.client() as client:
            wait_until(lambda: client.ready()[0], timeout_s=60, interval_s=0.2)
        yield system
    finally:
        serve.shutdown()
        stop_tree(namespace, timeout_s=60)
        asyncio.run(delete_stream(services.nats_url, settings.stream_name))


def rayvisor(
    http_system: HttpSystem, *args: str, key: str = "admin", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`rayvisor ARGS` against this system, with a key of scope `key`."""
    env = {
        **os.environ,
        "RAYVISOR_HOME": str(http_system.settings.home),
        "RAYVISOR_DATABASE_URL": str(http_system.settings.database_url),
        "RAYVISOR_NATS_URL": str(http_system.settings.nats_url),
        "RAYVISOR_HTTP_PORT": str(http_system.settings.http_port),
        "RAYVISOR_API_KEY": http_system.keys[key],
        "COLUMNS": "250",
        **(env or {}),
    }
    return rayvisor_cli(env, *args)
