"""The full `rayvisor` command: runtime's commands plus those that run the system.

`runtime.cli` holds what needs only the runtime layer (services, schema, config, tree);
this module, at the top of the import graph with the HTTP ingress, adds the commands that
start the supervision tree or talk to task managers: `up`, `demo`, `submit`, `tasks`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from typing import Annotated, Any

import ray
import typer
from rich.progress import Progress
from rich.table import Table

from actors.tasks import TaskClient
from runtime.cli import (
    app,
    connect_ray,
    console,
    err_console,
    fail,
    render_tree,
    settings_or_exit,
    up_services,
)
from runtime.config import Settings, load_settings
from runtime.errors import ConfigError
from runtime.policies import TaskStatus
from runtime.raycluster import init_ray
from supervisors.tree import start_tree, stop_tree, tree_from_settings

__all__ = ["app"]


def _start_system(settings: Settings, *, dashboard: bool) -> tuple[Any, Any]:
    """Services, Ray and the supervision tree of rayvisor.yaml: (root, Ray context)."""
    try:
        spec = tree_from_settings(settings)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    database_url, nats_url = up_services(settings)
    with console.status("starting Ray"):
        context = init_ray(settings, database_url, nats_url, dashboard=dashboard)
    with console.status("starting the supervision tree"):
        return start_tree(spec, settings.namespace), context


@app.command()
def up() -> None:
    """Start services, Ray (with its dashboard) and the tree; Ctrl-C stops them."""
    settings = settings_or_exit()
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


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _task_table(tasks: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "title", "status", "attempt", "agent", "priority", "result / error"):
        table.add_column(column, overflow="fold")
    for t in tasks:
        outcome = t.get("error") or t.get("result")
        shown = "" if outcome is None else json.dumps(outcome)[:80]
        table.add_row(t["id"], t["title"], t["status"], str(t["attempt"]),
                      t.get("assigned_to") or "", str(t["priority"]), shown)  # fmt: skip
    return table


def _task_call(coro_factory: Any) -> Any:
    """Run a TaskClient call; a refusal (bad input, unknown task) is a clean exit 2."""
    try:
        return asyncio.run(coro_factory())
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        err_console.print(f"[red]refused: {cause}[/red]")
        raise typer.Exit(2) from None
    except ValueError as exc:  # no TaskManager in this namespace
        raise fail(f"no task manager is running ({exc}); start it with `rayvisor up`") from None


@app.command()
def submit(
    title: Annotated[str, typer.Argument(help="What the task is.")],
    capability: Annotated[list[str], typer.Option("--capability", "-c")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option("--param", "-p", help="key=value (JSON)")] = [],  # noqa: B006
    priority: Annotated[int, typer.Option(min=0, max=9)] = 5,
    max_attempts: Annotated[int, typer.Option(min=1, max=100)] = 3,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the task has ended.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1)] = 300.0,
    address: Annotated[str | None, typer.Option(help="Ray address (default: auto).")] = None,
) -> None:
    """Submit a task; with --wait, show how it ended."""
    settings = settings_or_exit()
    body: dict[str, Any] = {
        "title": title,
        "required_capabilities": capability,
        "parameters": _parse_params(param),
        "priority": priority,
        "max_attempts": max_attempts,
    }
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    connect_ray(settings, address)
    client = TaskClient(settings.namespace, settings.task_shards)
    task = _task_call(lambda: client.submit(**body))
    if wait:
        with console.status(f"waiting for {task['id']}"):
            task = _task_call(lambda: client.wait(task["id"], timeout))
    console.print(_task_table([task], "task"))
    if wait and task["status"] != "completed":
        raise typer.Exit(1)


@app.command()
def tasks(
    status: Annotated[str | None, typer.Option(help="Only tasks in this status.")] = None,
    capability: Annotated[str | None, typer.Option(help="Only tasks needing this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    address: Annotated[str | None, typer.Option(help="Ray address (default: auto).")] = None,
) -> None:
    """List the latest tasks, newest first."""
    if status is not None and status not in {s.value for s in TaskStatus}:
        raise typer.BadParameter(
            f"must be one of {', '.join(s.value for s in TaskStatus)}", param_hint="--status"
        )
    settings = settings_or_exit()
    connect_ray(settings, address)
    client = TaskClient(settings.namespace, settings.task_shards)
    found = _task_call(lambda: client.list(status, capability, limit, newest_first=True))
    console.print(_task_table(found, f"latest tasks ({len(found)})"))


DEMO_TREE = {
    "pools": [
        {"id": "counter", "agent": "actors.builtin.echo:CounterAgent", "size": 2, "standby": 1},
        {"id": "echo", "agent": "actors.builtin.echo:EchoAgent", "size": 2},
    ]
}


def _demo_tasks(settings: Settings, agents_sup: Any, count: int) -> None:
    """Submit tasks to the echo pool, SIGKILL one of its agents midway, see none lost."""
    client = TaskClient(settings.namespace, settings.task_shards)
    echo_pool = ray.get(agents_sup.child_handle.remote("pool-echo"))
    victim = ray.get(echo_pool.which_children.remote())[0]

    async def run() -> list[dict[str, Any]]:
        echo = {"title": "echo", "required_capabilities": ["echo"], "parameters": {"sleep_s": 0.05}}
        tally = {"title": "count", "required_capabilities": ["count"]}  # durable agent state
        submitted = await client.submit_many([echo] * (count - 10) + [tally] * 10)
        done: list[dict[str, Any]] = []
        with Progress(console=console) as progress:
            bar = progress.add_task(f"{count} tasks; one agent is killed midway", total=count)
            for finished in asyncio.as_completed([client.wait(t["id"], 120) for t in submitted]):
                done.append(await finished)
                progress.advance(bar)
                if len(done) == count // 3:
                    os.kill(victim["pid"], signal.SIGKILL)
        return done

    done = asyncio.run(run())
    table = Table(title=f"tasks after SIGKILL of agent {victim['id']} (pid {victim['pid']})")
    for column in ("status", "tasks", "ran more than once"):
        table.add_column(column)
    statuses = sorted({t["status"] for t in done})
    for status in statuses:
        ended = [t for t in done if t["status"] == status]
        table.add_row(status, str(len(ended)), str(sum(1 for t in ended if t["attempt"] > 1)))
    console.print(table)


def _wait_replacement(root_pool: Any, child_id: str, old_pid: int) -> tuple[Any, float]:
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
    raise fail(f"{child_id} did not come back within 60 s")


@app.command()
def demo(
    tasks: Annotated[int, typer.Option(min=20, max=10_000, help="Tasks to run.")] = 60,
) -> None:
    """Start everything, run tasks on supervised agents, kill them, watch them come back."""
    settings = load_settings(tree=DEMO_TREE, namespace="rayvisor-demo")
    root, _ = _start_system(settings, dashboard=False)
    try:
        console.print(render_tree(ray.get(root.snapshot.remote())))
        agents_sup = ray.get(root.child_handle.remote("agents"))
        _demo_tasks(settings, agents_sup, tasks)
        pool = ray.get(agents_sup.child_handle.remote("pool-counter"))
        members = [c["id"] for c in ray.get(pool.which_children.remote())]
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
