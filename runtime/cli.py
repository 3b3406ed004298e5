"""The `rayvisor` command: services, schema and (as they land) the running system."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from runtime.config import Settings, load_settings
from runtime.errors import ConfigError, ServiceError
from runtime.redact import mask_url, redact
from runtime.services import ensure_services, service_status, stop_services
from runtime.store.migrations import migrate as migrate_database

app = typer.Typer(help="rayvisor: supervision trees for multi-agent systems on Ray.")
services_app = typer.Typer(help="Embedded PostgreSQL and nats-server for local use.")
app.add_typer(services_app, name="services")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error line (a path) is never cut


CONFIG_CHECKS: list[Callable[[Settings], object]] = []
"""More checks of the settings `rayvisor config` runs (each raises a ConfigError): the
`tree:` section's, registered by `serve.cli`, which knows the tree."""


def settings_or_exit(**overrides: Any) -> Settings:
    """The settings, or exit 2 with what is wrong (the field, or the line of the YAML)."""
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise config_fail(exc) from None


def config_fail(exc: ConfigError) -> typer.Exit:
    """Print a configuration error as it is (no markup read in it) and exit 2."""
    err_console.print(redact(str(exc)), style="red", markup=False, highlight=False)
    return typer.Exit(2)


def fail(message: str) -> typer.Exit:
    """Print `message` as an error (no URL's credentials: it may quote an exception)."""
    err_console.print(f"[red]{redact(message)}[/red]")
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
            mask_url(status.url or ""),
            str(status.data_dir or ""),
        )
    return table


def up_services(settings: Settings) -> tuple[str, str]:
    try:
        with console.status("starting PostgreSQL and NATS"):
            urls = ensure_services(settings)
        with console.status("applying migrations"):
            asyncio.run(migrate_database(urls.database_url))
    except ServiceError as exc:
        raise fail(f"a service failed to start: {exc}") from None
    return urls.database_url, urls.nats_url


@services_app.command("up")
def services_up() -> None:
    """Start (or reuse) the embedded servers and apply the schema."""
    settings = settings_or_exit()
    up_services(settings)
    console.print(_status_table(settings))


@services_app.command("down")
def services_down() -> None:
    """Stop the embedded servers; their data stays for the next `up`."""
    settings = settings_or_exit()
    stopped = stop_services(settings)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@services_app.command("status")
def services_status() -> None:
    """Show each server: running or not, pid, URL, data directory."""
    console.print(_status_table(settings_or_exit()))


@app.command()
def migrate() -> None:
    """Apply the schema migrations that are missing."""
    settings = settings_or_exit()
    database_url, _ = up_services(settings)
    console.print(f"schema up to date at {mask_url(database_url)}")


@app.command()
def config(
    show_urls: Annotated[bool, typer.Option(help="Include service URLs.")] = True,
) -> None:
    """Print the effective settings (environment over rayvisor.yaml over defaults), with
    secrets masked: URLs as `user:***@host`, keys and passwords as `***`."""
    settings = settings_or_exit()
    try:
        for check in CONFIG_CHECKS:
            check(settings)
    except ConfigError as exc:
        raise config_fail(exc) from None
    shown = settings.shown()
    if not show_urls:
        for name in ("database_url", "nats_url"):
            shown.pop(name, None)
    console.print_json(data=shown)


def connect_ray(settings: Settings, address: str | None) -> None:
    import logging

    import ray

    from runtime.raycluster import quiet_driver

    quiet_driver()
    try:
        ray.init(address=address or settings.ray_address or "auto", namespace=settings.namespace,
                 log_to_driver=False, logging_level=logging.WARNING)  # fmt: skip
    except ConnectionError as exc:
        raise fail(f"no Ray cluster to join ({exc}); start one with `rayvisor up`") from None


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

    settings = settings_or_exit()
    connect_ray(settings, address)
    try:
        root = ray.get_actor("sup:root", namespace=settings.namespace)
    except ValueError:
        raise fail("no supervision tree is running (start it with `rayvisor up`)") from None
    console.print(render_tree(ray.get(root.snapshot.remote(), timeout=30)))


if __name__ == "__main__":
    app()
