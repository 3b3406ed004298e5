"""`rayvisor analyze` and `rayvisor demo`: projects from the command line.

`analyze` runs a log investigation (the `planning` agent's rule: chunk each file, analyse
the chunks in parallel, reduce, correlate, report) on a running system through its HTTP
API. `demo` starts a system of its own and runs the same investigation over loghub's
`OpenSSH_2k.log`, killing an analysing agent part-way to show a chunk re-run elsewhere.
Both check their input before anything is made: a bad file is exit 2 with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import ray
import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from runtime.cli import app, console, err_console, fail, render_tree, settings_or_exit
from runtime.client import ApiError, Client
from runtime.config import Settings
from runtime.ownership import Ownership
from serve.cli import KeyOption, UrlOption, _call, _client
from serve.cli_system import ownership_of, serve_api, start_system, stop_everything

__all__ = ["check_log_file", "findings_tables", "follow_project"]

_ENDED = {"completed", "failed", "cancelled"}
_SNIFF_BYTES = 8192
INVESTIGATION = "Investigate these logs for attacks, break-in attempts and error spikes"

DEMO_TREE = {
    "pools": [
        {"id": "planning", "agent": "actors.builtin.planning:PlanningAgent", "size": 1},
        {"id": "chunking", "agent": "actors.builtin.chunking:ChunkingAgent", "size": 1},
        {"id": "log_analysis", "agent": "actors.builtin.log_analysis:LogAnalysisAgent", "size": 2},
        {"id": "reduce", "agent": "actors.builtin.reduce:ReduceAgent", "size": 1},
    ]
}


def check_log_file(path: Path) -> str | None:
    """Why `path` cannot be analysed, or None: missing, a directory, unreadable, empty,
    or binary (a NUL byte, or not text, in its first block)."""
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "a directory, not a log file"
    if not path.is_file():
        return "not a regular file"
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not head:
        return "empty"
    if b"\0" in head:
        return "binary (it holds NUL bytes), not a text log"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the block's end
            return "binary (not UTF-8 text), not a text log"
    return None


def follow_project(
    client: Client,
    project_id: str,
    timeout_s: float,
    on_view: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Show the project's progress (its tasks, chunks included) until it ends; its view."""
    deadline = time.monotonic() + timeout_s
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} tasks"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("planning", total=1)
        while True:
            view = _call(lambda: client.get_project(project_id))
            tasks = view["tasks"]
            ended = sum(t["status"] in _ENDED | {"timed_out"} for t in tasks)
            running = [t for t in tasks if t["status"] in ("assigned", "running")]
            doing = ", ".join(sorted({t["title"].split(": ")[-1] for t in running})[:3])
            label = f"{view['status']}" + (f": {doing}" if doing else "")
            progress.update(bar, total=max(1, len(tasks)), completed=ended, description=label)
            if on_view is not None:
                on_view(view)
            if view["status"] in _ENDED:
                return view
            if time.monotonic() > deadline:
                raise fail(f"project {project_id} is still {view['status']} after {timeout_s} s")
            time.sleep(0.25)


def findings_tables(report: dict[str, Any]) -> list[Table]:
    """The report's findings as tables: attacking addresses, invalid users, break-in
    attempts, error components."""
    tables = []
    addresses = Table(title="top attacking addresses (failed passwords)")
    for column in ("address", "failed passwords", "first seen", "last seen"):
        addresses.add_column(column)
    for row in report.get("top_addresses") or []:
        addresses.add_row(
            str(row.get("address")),
            f"{row.get('count', 0):,}",
            str(row.get("first_seen") or ""),
            str(row.get("last_seen") or ""),
        )
    tables.append(addresses)
    users = report.get("invalid_users") or {}
    invalid = Table(title=f"invalid user names ({users.get('distinct', 0)} distinct)")
    for column in ("user", "attempts"):
        invalid.add_column(column)
    for row in users.get("top") or []:
        invalid.add_row(str(row.get("user")), f"{row.get('count', 0):,}")
    tables.append(invalid)
    attempts = report.get("break_in_attempts") or {}
    breakin = Table(title=f"POSSIBLE BREAK-IN ATTEMPT ({attempts.get('total', 0):,} in all)")
    for column in ("address", "attempts"):
        breakin.add_column(column)
    for row in attempts.get("top") or []:
        breakin.add_row(str(row.get("address")), f"{row.get('count', 0):,}")
    tables.append(breakin)
    components = report.get("error_components") or {}
    if components:
        errors = Table(title="errors by component")
        for column in ("component", "errors"):
            errors.add_column(column)
        for component, count in list(components.items())[:10]:
            errors.add_row(str(component), f"{count:,}")
        tables.append(errors)
    return tables


def _print_result(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(view.get("result")))
        return
    summary = (view.get("result") or {}).get("summary") or {}
    if isinstance(summary, dict):
        for table in findings_tables(summary):
            console.print(table)
        if summary.get("summary"):
            console.print(summary["summary"])
    if view["status"] != "completed":
        err_console.print(f"[red]project {view['status']}: {view.get('error') or ''}[/red]")


@app.command()
def analyze(
    paths: Annotated[list[Path], typer.Argument(help="Log files (sshd, syslog, Apache, HDFS).")],
    chunks: Annotated[int, typer.Option(min=1, max=256, help="Chunks per file.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print the compiled result.")] = False,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait.")] = 600.0,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Investigate log files: chunk, analyse in parallel, reduce, correlate, report."""
    refused = [(p, why) for p in paths if (why := check_log_file(p)) is not None]
    for path, why in refused:
        err_console.print(f"[red]{path}: {why}[/red]")
    if refused:
        raise typer.Exit(2)
    settings = settings_or_exit()
    names = ", ".join(p.name for p in paths)
    with _client(settings, url, api_key) as client:
        project = _call(
            lambda: client.create_project(
                f"Analyse {names}"[:200],
                [INVESTIGATION],
                inputs={"paths": [str(p.resolve()) for p in paths], "chunks": chunks},
            )
        )
        if not as_json:
            console.print(f"project {project['id']}")
        try:
            view = follow_project(client, project["id"], timeout)
        except (KeyboardInterrupt, typer.Exit):  # Ctrl-C or the timeout: stop the work too
            client.cancel_project(project["id"])
            err_console.print(f"cancelled project {project['id']}")
            raise
    _print_result(view, as_json)
    if view["status"] != "completed":
        raise typer.Exit(1)


# ---- the demo ------------------------------------------------------------------------------


class _ChunkKiller:
    """SIGKILLs the agent running a chunk once some chunks have completed (once)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.killed: dict[str, Any] | None = None

    def __call__(self, view: dict[str, Any]) -> None:
        if self.killed is not None:
            return
        chunks = [t for t in view["tasks"] if t["parent_id"] and ": chunk " in t["title"]]
        done = sum(t["status"] == "completed" for t in chunks)
        running = [t for t in chunks if t["status"] == "running" and t["assigned_to"]]
        if done < 2 or not running:
            return
        victim = running[0]
        try:
            actor = ray.get_actor(f"agent:{victim['assigned_to']}", namespace=self.namespace)
            pid = ray.get(actor.describe.remote(), timeout=5)["pid"]
        except (ValueError, ray.exceptions.RayError):
            return
        os.kill(pid, signal.SIGKILL)
        self.killed = {"task": victim, "agent": victim["assigned_to"], "pid": pid}
        console.print(
            f"[yellow]SIGKILL agent {victim['assigned_to']} (pid {pid}) while it runs "
            f"{victim['title'].split(': ')[-1]}[/yellow]"
        )


@app.command()
def demo(
    chunks: Annotated[int, typer.Option(min=2, max=64, help="Chunks of the log.")] = 8,
) -> None:
    """Investigate an SSH incident on a fresh system; an analysing agent is killed midway."""
    settings = settings_or_exit(tree=DEMO_TREE, namespace="rayvisor-demo")
    ownership = ownership_of(settings)
    try:
        _run_demo(settings, ownership, chunks)
    finally:
        ownership.release()
    console.print(
        "Services keep running (data under "
        f"{settings.home}); stop them with `rayvisor services down`."
    )


def _sample() -> Path:
    return Path(str(resources.files("actors.builtin") / "data" / "loghub" / "OpenSSH_2k.log"))


def _run_demo(settings: Settings, ownership: Ownership, chunks: int) -> None:
    root, _ = start_system(settings, ownership, dashboard=False)
    try:
        url, key = serve_api(settings)
        began = datetime.now(UTC)
        console.print(render_tree(ray.get(root.snapshot.remote())))
        killer = _ChunkKiller(settings.namespace)
        with Client(url, key) as client:
            project = client.create_project(
                "Investigate SSH incident",
                [INVESTIGATION],
                description="loghub OpenSSH_2k.log (https://github.com/logpai/loghub)",
                inputs={
                    "paths": [str(_sample())],
                    "chunks": chunks,
                    "pace_s": 1.0,
                    "extra_agents": 1,
                },
            )
            console.print(f"project {project['id']}: Investigate SSH incident ({url})")
            view = follow_project(client, project["id"], 300, on_view=killer)
            _print_result(view, as_json=False)
            _print_rerun(killer, view)
            _print_supervision(client, began)
            console.print(render_tree(ray.get(root.snapshot.remote())))
        if view["status"] != "completed":
            raise typer.Exit(1)
    finally:
        stop_everything(settings)
        ray.shutdown()


def _print_rerun(killer: _ChunkKiller, view: dict[str, Any]) -> None:
    if killer.killed is None:
        console.print("(no chunk was running when the demo looked: nothing was killed)")
        return
    task_id = killer.killed["task"]["id"]
    after = next((t for t in view["tasks"] if t["id"] == task_id), None)
    if after is None:
        return
    title = after["title"].split(": ")[-1]
    console.print(
        f"{title} was re-run after its agent {killer.killed['agent']} died: attempt "
        f"{after['attempt']} {after['status']} on {after['assigned_to']}"
    )


def _print_supervision(client: Client, since: datetime) -> None:
    table = Table(title="supervision events during the demo")
    for column in ("time", "supervisor", "child", "event", "reason"):
        table.add_column(column, overflow="fold")
    try:
        events = client.supervisor_events("pool-log-analysis", limit=200)
    except ApiError:
        events = []
    for event in events:
        at = datetime.fromisoformat(event["created_at"])
        if at < since:
            continue
        table.add_row(
            f"{at:%H:%M:%S.%f}"[:-3],
            event["supervisor_id"],
            event.get("child_id") or "",
            event["event"],
            (event.get("reason") or "")[:80],
        )
    console.print(table)
