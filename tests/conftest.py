"""Session fixtures: real PostgreSQL, real nats-server, one local Ray instance.

PostgreSQL and NATS come from `RAYVISOR_DATABASE_URL` / `RAYVISOR_NATS_URL` when set, or
else from the embedded wheels, started once per session with fresh data directories.
Each test module gets a database of its own with the schema applied. A service that
cannot start fails the run; nothing here skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from helpers import with_database
from otlp_receiver import OtlpReceiver

from runtime.bus import Bus
from runtime.config import load_settings
from runtime.raycluster import init_ray
from runtime.services import EmbeddedNats, EmbeddedPostgres
from runtime.store.migrations import apply_migrations
from runtime.store.pool import create_pool
from supervisors.spec import SupervisorSpec

SHARED_PACKAGES = ("tests/e2e/shared_http/",)  # their modules share one system


# the longest units of work (7, 5, 3+3 and 3 minutes on a loaded machine): started first,
# the end of the run is not one worker alone with one of them
LONG_FIRST = (
    "tests/integration/test_task_manager.py",
    "tests/e2e/shared_http/",
    "tests/integration/test_supervisor",
    "tests/e2e/test_cli_up.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return next((i for i, p in enumerate(LONG_FIRST) if path.startswith(p)), len(LONG_FIRST))

    items.sort(key=rank)  # stable: each module's tests stay together and in order


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, where a package of SHARED_PACKAGES is one unit of work: its
    modules run on one worker, one after another, so its package-scoped system starts
    once. (xdist's `loadgroup` would do it, but its marks do not reach pytest 9's ids.)
    Units go out in collection order (LONG_FIRST, then e2e, integration, unit), not by
    their count of tests: the long modules start first, the quick unit modules fill the end."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False

    class SharedPackageScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            shared = next((p for p in SHARED_PACKAGES if nodeid.startswith(p)), None)
            return shared or super()._split_scope(nodeid)

    return SharedPackageScheduling(config, log)


@dataclass
class Services:
    database_url: str
    nats_url: str
    home: Path
    postgres: EmbeddedPostgres | None
    nats: EmbeddedNats | None
    nats_monitor_url: str | None = None
    """The server's HTTP monitoring: the embedded one's, or RAYVISOR_NATS_MONITOR_URL."""


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    home = tmp_path_factory.mktemp("rayvisor-home")
    external_db = os.environ.get("RAYVISOR_DATABASE_URL")
    external_nats = os.environ.get("RAYVISOR_NATS_URL")
    postgres = None if external_db else EmbeddedPostgres(home)
    nats_server = None if external_nats else EmbeddedNats(home)
    database_url = external_db or postgres.start()  # type: ignore[union-attr]
    nats_url = external_nats or nats_server.start()  # type: ignore[union-attr]
    monitor = os.environ.get("RAYVISOR_NATS_MONITOR_URL") or (
        nats_server.monitor_url() if nats_server else None
    )
    yield Services(database_url, nats_url, home, postgres, nats_server, monitor)
    if nats_server is not None:
        nats_server.stop()
    if postgres is not None:
        postgres.stop()


@pytest.fixture(scope="module")
async def database_url(services: Services, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh database with the schema applied, for one test module."""
    name = f"t_{request.module.__name__.rsplit('.', 1)[-1][:40]}_{uuid.uuid4().hex[:8]}".lower()
    admin = await asyncpg.connect(with_database(services.database_url, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(services.database_url, name)
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    yield url
    admin = await asyncpg.connect(with_database(services.database_url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=8)
    yield pool
    await pool.close()


@pytest.fixture
async def bus(services: Services) -> AsyncIterator[Bus]:
    """A connection to the session's NATS with a stream of its own, deleted afterwards."""
    stream = f"T{uuid.uuid4().hex[:10].upper()}"
    bus = await Bus.connect(services.nats_url, name="pytest", stream=stream)
    await bus.ensure_stream(max_age_s=3600)
    yield bus
    try:
        await bus.js.delete_stream(stream)
    finally:
        await bus.close()


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    """A trace receiver on loopback that every process of the session exports to, as a
    user's collector would: the session runs with tracing on (spans go out every 0.2 s)."""
    receiver = OtlpReceiver().start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def ray_session(services: Services, otlp: OtlpReceiver) -> Iterator[None]:
    """One local Ray on loopback for the whole session, with a small CPU count, its
    processes exporting their spans to `otlp`.

    Actors in it use the session server's `rayvisor` database (schema applied here).
    """
    import ray

    async def migrate() -> None:
        conn = await asyncpg.connect(services.database_url)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    asyncio.run(migrate())
    settings = load_settings(home=services.home)
    init_ray(
        settings, services.database_url, services.nats_url, namespace="rayvisor-test", num_cpus=2,
        dashboard=True,  # Ray's state API (ray.util.state) and `rayvisor up`'s sign-in need it
        # metrics reach the Prometheus export every 2 s, not 10 (test_metrics_export.py)
        _system_config={"metrics_report_interval_ms": 2000},
    )  # fmt: skip
    yield
    ray.shutdown()


@pytest.fixture
def ray_actors(ray_session: None) -> Iterator[None]:
    """Kill the named actors a test left behind, so the next test starts clean (Serve's
    own actors, which a module's HTTP fixture owns, excepted)."""
    yield
    _kill_named_actors()


def _kill_named_actors() -> None:
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == "serve":
            continue
        with contextlib.suppress(ValueError):
            handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
            ray.kill(handle, no_restart=True)


@pytest.fixture(scope="session")
async def system_pool(services: Services, ray_session: None) -> AsyncIterator[asyncpg.Pool]:
    """The database the actors in `ray_session` write to."""
    pool = await create_pool(services.database_url, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def tree(ray_actors: None) -> AsyncIterator[TreeFactory]:
    """Start supervision trees in namespaces of their own; stopped after the test."""
    factory = TreeFactory()
    yield factory
    for namespace in factory.namespaces:
        await asyncio.to_thread(_stop_tree_quietly, namespace)


@pytest.fixture(scope="module")
async def module_tree(ray_session: None) -> AsyncIterator[TreeFactory]:
    """`tree` for a module whose tests share one system (each with names of its own):
    stopped after the module's last test, and what it left is killed as `ray_actors` does."""
    factory = TreeFactory()
    yield factory
    for namespace in factory.namespaces:
        await asyncio.to_thread(_stop_tree_quietly, namespace)
    _kill_named_actors()


class TreeFactory:
    def __init__(self) -> None:
        self.namespaces: list[str] = []
        self.suffix = uuid.uuid4().hex[:6]

    def uid(self, name: str) -> str:
        """An id unique to this test, so persisted pool members never leak between tests."""
        return f"{name}-{self.suffix}"

    async def start(self, spec: SupervisorSpec | dict) -> Any:
        from supervisors.tree import start_tree

        spec = SupervisorSpec.model_validate(spec)
        namespace = f"t-{self.suffix}-{len(self.namespaces)}"
        self.namespaces.append(namespace)
        return await asyncio.to_thread(start_tree, spec, namespace, 120)


def _stop_tree_quietly(namespace: str) -> None:
    from supervisors.tree import get_root, stop_tree

    try:
        stop_tree(namespace, timeout_s=30)
    except Exception:
        root = get_root(namespace)
        if root is not None:
            import ray

            ray.kill(root, no_restart=True)
