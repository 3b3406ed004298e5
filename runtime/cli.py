"""The `rayvisor` command: services, schema and (as they land) the running system."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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


@app.command()
def demo() -> None:
    """Start the local services and show how to reach them."""
    settings = _settings()
    database_url, nats_url = _up_services(settings)
    console.print(_status_table(settings))
    console.print(
        "\n[bold]rayvisor services are up.[/bold]\n"
        f"  PostgreSQL: psql {database_url}\n"
        f"  NATS:       {nats_url}\n"
        "Point other processes at them with\n"
        f"  export RAYVISOR_DATABASE_URL={database_url}\n"
        f"  export RAYVISOR_NATS_URL={nats_url}\n"
        "Stop them with `rayvisor services down` (data is kept)."
    )


if __name__ == "__main__":
    app()
