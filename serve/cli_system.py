"""`rayvisor up` and `rayvisor down`: the system as one command runs it.

`up` claims the home, the database and the HTTP port (`runtime.ownership`), starts the
services, Ray (with its dashboard), the supervision tree and the HTTP ingress, prints
where each is with `up`'s admin key, and stops the tree and the API when interrupted or
when `down` stops them. `demo` (serve/cli_projects.py) starts the same system.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
import ray
import typer
from rich.table import Table

from runtime.cli import (
    app,
    config_fail,
    connect_ray,
    console,
    fail,
    render_tree,
    settings_or_exit,
    up_services,
)
from runtime.config import Settings
from runtime.errors import ConfigError
from runtime.models.enums import Scope
from runtime.ownership import AlreadyRunning, Ownership
from runtime.raycluster import auth_token_source, init_ray
from runtime.services import ensure_services
from runtime.store import api_keys
from supervisors.tree import (
    check_tree,
    get_root,
    resolve_pool_templates,
    start_tree,
    stop_tree,
    tree_from_settings,
)

__all__ = [
    "UP_KEY_NAME",
    "on_database",
    "ownership_of",
    "serve_api",
    "start_system",
    "stop_everything",
    "up_admin_key",
]

T = TypeVar("T")


def start_system(settings: Settings, ownership: Ownership, *, dashboard: bool) -> tuple[Any, Any]:
    """Services, Ray and the supervision tree of rayvisor.yaml: (root, Ray context).

    Claims the home, the database and the HTTP port first (see `runtime.ownership`): a
    second system on them would run a second task manager over the same tasks. A refusal
    names the system that runs and changes nothing.
    """
    try:
        check_tree(settings)  # before anything starts
    except ConfigError as exc:
        raise config_fail(exc) from None
    try:
        ownership.claim_home()
        database_url, nats_url = up_services(settings)
        ownership.claim_database(database_url)
        ownership.claim_port()
    except AlreadyRunning as exc:
        raise fail(str(exc)) from None
    try:  # pools that name a registered template read it now the database is up
        spec = tree_from_settings(asyncio.run(_with_templates(settings, database_url)))
    except ConfigError as exc:
        raise config_fail(exc) from None
    with console.status("starting Ray"):
        context = init_ray(settings, database_url, nats_url, dashboard=dashboard)
    dashboard_url = getattr(context, "dashboard_url", None)
    ownership.publish(
        ray_address=ray.get_runtime_context().gcs_address,
        dashboard_url=f"http://{dashboard_url}" if dashboard_url else None,
    )
    with console.status("starting the supervision tree"):
        return start_tree(spec, settings.namespace), context


async def _with_templates(settings: Settings, database_url: str) -> Settings:
    conn = await asyncpg.connect(database_url)
    try:
        return await resolve_pool_templates(settings, conn)
    finally:
        await conn.close()


def ownership_of(settings: Settings) -> Ownership:
    return Ownership(settings.home, settings.namespace, settings.http_host, settings.http_port)


def serve_api(settings: Settings) -> tuple[str, str]:
    """Run the HTTP ingress with `up`'s admin key: (API URL, key). The key is kept in
    `home`/api_key (mode 600), where the other commands find it, and reused by the next
    `up` (see `up_admin_key`)."""
    from serve.app import deploy

    urls = ensure_services(settings)
    resolved = Settings.model_validate(
        {
            **settings.model_dump(),
            "database_url": urls.database_url,
            "nats_url": urls.nats_url,
            "nats_monitor_url": urls.nats_monitor_url,  # the embedded server's, or as set
        }
    )
    with console.status(f"starting the HTTP API on {settings.http_url}"):
        url = deploy(resolved)
    key_file = settings.home / "api_key"
    known = key_file.read_text().strip() if key_file.exists() else None
    key = on_database(resolved.database_dsn or "", lambda conn: up_admin_key(conn, known))
    if key != known:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.chmod(0o600)
        key_file.write_text(key + "\n")
    return url, key


UP_KEY_NAME = "admin (rayvisor up)"


async def up_admin_key(conn: Any, known: str | None) -> str:
    """`up`'s admin key: `known` (the one in `home`/api_key) while it is a live admin key
    `up` made, else a new one. A new one revokes every other key `up` made, so however
    many times `up` runs, one admin key of its own works."""
    if known:
        record = await api_keys.find(conn, known)
        if record is not None and record.name == UP_KEY_NAME and Scope.ADMIN in record.scopes:
            return known
    async with conn.transaction():
        record, key = await api_keys.create(conn, UP_KEY_NAME, [Scope.ADMIN])
        for old in await api_keys.list_keys(conn, include_revoked=False):
            if old.name == UP_KEY_NAME and old.id != record.id:
                await api_keys.revoke(conn, old.id)
    return key


def on_database(database_url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work` on one connection: a command needs no pool for one statement."""
    import asyncpg

    async def run() -> T:
        conn = await asyncpg.connect(database_url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


@app.command()
def up() -> None:
    """Start services, Ray (with its dashboard), the tree and the HTTP API; Ctrl-C stops."""
    settings = settings_or_exit()
    ownership = ownership_of(settings)
    try:
        _run_up(settings, ownership)
    finally:
        ownership.release()


def _run_up(settings: Settings, ownership: Ownership) -> None:
    root, context = start_system(settings, ownership, dashboard=True)
    url, key = serve_api(settings)
    console.print(render_tree(ray.get(root.snapshot.remote())))
    table = Table(title="rayvisor is up", show_header=False)
    table.add_row("HTTP API", url)
    table.add_row("API docs", f"{url}/docs")
    table.add_row("live page", f"{url}/ui  (sign in with the admin key below)")
    table.add_row("Ray dashboard", _dashboard_cell(context.dashboard_url))
    table.add_row("admin key", f"{key}  (also in {settings.home / 'api_key'})")
    console.print(table)
    console.print("Ctrl-C (or `rayvisor down`) stops the tree and the API")
    try:
        while get_root(settings.namespace) is not None:
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        stop_everything(settings)
        ray.shutdown()


def _dashboard_cell(dashboard: str | None) -> str:
    """The dashboard's URL and, when Ray asks for its token, where the token is: the page
    asks a browser for it once (see `auth_token_source`)."""
    if not dashboard:
        return "(not running)"
    token = auth_token_source()
    if token is None:
        return f"http://{dashboard}"
    return f"http://{dashboard}\nsign in with the token in {token} (`ray get-auth-token` prints it)"


def stop_everything(settings: Settings) -> list[str]:
    from ray import serve

    stopped = []
    with contextlib.suppress(Exception):
        serve.shutdown()
        stopped.append("HTTP API")
    with contextlib.suppress(Exception):
        if stop_tree(settings.namespace):
            stopped.append("supervision tree")
    return stopped


@app.command()
def down(
    address: Annotated[str | None, typer.Option(help="Ray address (default: auto).")] = None,
) -> None:
    """Stop the HTTP API and the tree a `rayvisor up` runs (services keep running)."""
    settings = settings_or_exit()
    connect_ray(settings, address)
    stopped = stop_everything(settings)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
