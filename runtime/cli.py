"""The `rayvisor` command: services, schema and (as they land) the running system."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.tree import Tree

from runtime.config import Settings, load_settings
from runtime.errors import ConfigError, ServiceError
from runtime.services import ensure_services, service_status, stop_services

app = typer.Typer(help="rayvisor: supervision trees for multi-agent systems on Ray.")
services_app = typer.Typer(help="Embedded PostgreSQL and nats-server for local use.")
app.add_typer(services_app, name="services")

console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]{message}[/red]")
    return typer.Exit(1)


def _status_table(settings: Settings) -> Table:
    table = Table(title=f"rayvisor services ({settings.home})")
    for column in ("service", "state", "pid", "url", "data"):
        table.add_column(column)
    for status in service_status(settings):
        state = "[green]running[/green]" if status.running else "[yellow]stopped[/yellow]"
        if not status.embedded:
            state = "external"
        table.add_row(
            status.name,
            state,
            str(status.pid or ""),
            status.url or "",
            str(status.data_dir or ""),
        )
    return table


async def _migrate(database_url: str) -> list[int]:
    import asyncpg

    from runtime.store.migrations import apply_migrations

    conn = await asyncpg.connect(database_url)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


def _up_services(settings: Settings) -> tuple[str, str]:
    try:
        with console.status("starting PostgreSQL and NATS"):
            urls = ensure_services(settings)
        with console.status("applying migrations"):
            asyncio.run(_migrate(urls.database_url))
    except ServiceError as exc:
        raise _fail(f"a service failed to start: {exc}") from None
    return urls.database_url, urls.nats_url


@services_app.command("up")
def services_up() -> None:
    """Start (or reuse) the embedded servers and apply the schema."""
    settings = _settings()
    _up_services(settings)
    console.print(_status_table(settings))


@services_app.command("down")
def services_down() -> None:
    """Stop the embedded servers; their data stays for the next `up`."""
    settings = _settings()
    stopped = stop_services(settings)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@services_app.command("status")
def services_status() -> None:
    """Show each server: running or not, pid, URL, data directory."""
    console.print(_status_table(_settings()))


@app.command()
def migrate() -> None:
    """Apply the schema migrations that are missing."""
    settings = _settings()
    database_url, _ = _up_services(settings)
    console.print(f"schema up to date at {database_url}")


@app.command()
def config(
    show_urls: Annotated[bool, typer.Option(help="Include service URLs.")] = True,
) -> None:
    """Print the effective settings (environment over rayvisor.yaml over defaults)."""
    settings = _settings()
    exclude = None if show_urls else {"database_url", "nats_url"}
    console.print_json(settings.model_dump_json(exclude=exclude))


def _connect_ray(settings: Settings, address: str | None) -> None:
    import ray

    try:
        ray.init(address=address or settings.ray_address or "auto", namespace=settings.namespace,
                 log_to_driver=False)  # fmt: skip
    except ConnectionError as exc:
        raise _fail(f"no Ray cluster to join ({exc}); start one with `rayvisor up`") from None


def render_tree(node: dict[str, Any], tree: Tree | None = None) -> Tree:
    """A supervision snapshot as a rich tree: state, restarts, breaker, placement."""
    colours = {"running": "green", "circuit_open": "red", "stopped": "yellow", "failed": "red"}
    state = node.get("state", "?")
    label = (
        f"[bold]{node.get('actor_name', node['id'])}[/bold] "
        f"[{colours.get(state, 'cyan')}]{state}[/] "
        f"restarts={node.get('restarts', 0)}"
    )
    if node.get("strategy"):
        label += f" [dim]{node['strategy']}[/dim]"
    if node.get("breaker") and node["breaker"] != "closed":
        label += f" [red]breaker={node['breaker']}[/red]"
    if node.get("standby"):
        label += f" [dim]standby={node['standby']}[/dim]"
    if node.get("pid"):
        label += f" [dim]pid={node['pid']}[/dim]"
    branch = tree.add(label) if tree is not None else Tree(label)
    for child in node.get("children", []):
        render_tree(child, branch)
    return branch


@app.command()
def tree(
    address: Annotated[str | None, typer.Option(help="Ray address (default: auto).")] = None,
) -> None:
    """Print the live supervision tree of a running rayvisor."""
    import ray

    settings = _settings()
    _connect_ray(settings, address)
    try:
        root = ray.get_actor("sup:root", namespace=settings.namespace)
    except ValueError:
        raise _fail("no supervision tree is running (start it with `rayvisor up`)") from None
    console.print(render_tree(ray.get(root.snapshot.remote(), timeout=30)))


def _start_system(settings: Settings, *, dashboard: bool) -> tuple[Any, Any]:
    """Services, Ray and the supervision tree of rayvisor.yaml: (root, Ray context)."""
    from runtime.raycluster import init_ray
    from supervisors.tree import start_tree, tree_from_settings

    try:
        spec = tree_from_settings(settings)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    database_url, nats_url = _up_services(settings)
    with console.status("starting Ray"):
        context = init_ray(settings, database_url, nats_url, dashboard=dashboard)
    with console.status("starting the supervision tree"):
        return start_tree(spec, settings.namespace), context


@app.command()
def up() -> None:
    """Start services, Ray (with its dashboard) and the tree; Ctrl-C stops them."""
    import ray

    from supervisors.tree import stop_tree

    settings = _settings()
    root, context = _start_system(settings, dashboard=True)
    console.print(render_tree(ray.get(root.snapshot.remote())))
    console.print(f"Ray dashboard: http://{context.dashboard_url}  (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        console.print("stopping the tree")
    finally:
        stop_tree(settings.namespace)
        ray.shutdown()


DEMO_TREE = {
    "pools": [
        {"id": "counter", "agent": "actors.builtin.echo:CounterAgent", "size": 2, "standby": 1},
        {"id": "echo", "agent": "actors.builtin.echo:EchoAgent", "size": 2},
    ]
}


def _wait_replacement(root_pool: Any, child_id: str, old_pid: int) -> tuple[Any, float]:
    import ray

    began = time.perf_counter()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        handle = ray.get(root_pool.child_handle.remote(child_id))
        if handle is not None:
            try:
                info = ray.get(handle.describe.remote(), timeout=5)
                if info["pid"] != old_pid and info["ready"]:
                    return info, (time.perf_counter() - began) * 1000
            except ray.exceptions.RayError:
                pass
        time.sleep(0.005)
    raise _fail(f"{child_id} did not come back within 60 s")


@app.command()
def demo(
    tasks: Annotated[int, typer.Option(min=1, max=10_000, help="Tasks per agent.")] = 20,
) -> None:
    """Start everything, run tasks on supervised agents, kill them, watch them come back."""
    import ray

    from supervisors.tree import stop_tree

    settings = load_settings(tree=DEMO_TREE, namespace="rayvisor-demo")
    root, _ = _start_system(settings, dashboard=False)
    try:
        console.print(render_tree(ray.get(root.snapshot.remote())))
        agents_sup = ray.get(root.child_handle.remote("agents"))
        pool = ray.get(agents_sup.child_handle.remote("pool-counter"))
        members = [c["id"] for c in ray.get(pool.which_children.remote())]
        with Progress(console=console) as progress:
            bar = progress.add_task("running tasks on the counter agents", total=tasks * 2)
            for member in members:
                handle = ray.get(pool.child_handle.remote(member))
                for _ in range(tasks):
                    outcome = ray.get(handle.run.remote({"parameters": {}}))
                    if outcome["status"] != "completed":
                        raise _fail(f"{member}: {outcome}")
                    progress.advance(bar)
        table = Table(title="SIGKILL an agent: the supervisor restarts it with its saved state")
        for column in ("agent", "how", "back after (ms)", "saved state"):
            table.add_column(column)
        for member in members:
            handle = ray.get(pool.child_handle.remote(member))
            pid = ray.get(handle.describe.remote())["pid"]
            spares = ray.get(pool.snapshot.remote())["standby"]
            os.kill(pid, signal.SIGKILL)
            info, elapsed = _wait_replacement(pool, member, pid)
            how = "standby promoted" if spares else "new process"
            table.add_row(member, how, f"{elapsed:.0f}", str(info["saved_state"]))
        console.print(table)
        console.print(render_tree(ray.get(root.snapshot.remote())))
    finally:
        stop_tree(settings.namespace)
        ray.shutdown()
    console.print(
        "Services keep running (data under "
        f"{settings.home}); stop them with `rayvisor services down`."
    )


if __name__ == "__main__":
    app()
