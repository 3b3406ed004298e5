"""`rayvisor keys`: create, list and revoke API keys (stored hashed; a key is shown once)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from runtime.cli import app, console, fail, settings_or_exit, up_services
from runtime.models.enums import Scope
from runtime.store import api_keys
from serve.cli_system import on_database

__all__ = ["keys_app"]


keys_app = typer.Typer(help="API keys (stored hashed; a key is shown once).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    scope: Annotated[list[Scope], typer.Option("--scope", "-s")] = [Scope.READ],  # noqa: B006
    rate: Annotated[float, typer.Option(min=0.001, max=1_000_000, help="Requests/s.")] = 50.0,
    burst: Annotated[int, typer.Option(min=1, max=1_000_000)] = 100,
) -> None:
    """Create a key and print it (the only time it is shown)."""
    settings = settings_or_exit()
    database_url, _ = up_services(settings)
    record, key = on_database(
        database_url, lambda conn: api_keys.create(conn, name, scope, rate, burst)
    )
    console.print(f"key {record.prefix} ({', '.join(s.value for s in record.scopes)}): {key}")


@keys_app.command("list")
def keys_list() -> None:
    """Every key: prefix, name, scopes, rate, revoked."""
    settings = settings_or_exit()
    database_url, _ = up_services(settings)

    table = Table(title="API keys")
    for column in (
        "prefix",
        "name",
        "scopes",
        "rate/s",
        "burst",
        "created",
        "last used",
        "revoked",
    ):
        table.add_column(column)
    for k in on_database(database_url, api_keys.list_keys):
        table.add_row(
            k.prefix,
            k.name,
            ", ".join(s.value for s in k.scopes),
            f"{k.rate_per_s:g}",
            str(k.burst),
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "",
            "yes" if k.revoked else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's id or prefix.")]) -> None:
    """Revoke a key; it stops working within `http.key_cache_s`."""
    settings = settings_or_exit()
    database_url, _ = up_services(settings)
    if not on_database(database_url, lambda conn: api_keys.revoke(conn, key)):
        raise fail(f"no live key {key}")
    console.print(f"revoked {key}")
