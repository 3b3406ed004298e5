"""The full `rayvisor` command: runtime's commands plus those that run the system.

`runtime.cli` holds what needs only the runtime layer (services, schema, config, tree);
this module, at the top of the import graph with the HTTP ingress, adds the commands that
use the HTTP API through `runtime.client` (`submit`, `tasks`, `agents`, `events`), and
gathers those of its neighbours: `up` and `down` (`serve.cli_system`), `keys`
(`serve.cli_keys`), `analyze` and `demo` (`serve.cli_projects`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from runtime import logs
from runtime.cli import (
    CONFIG_CHECKS,
    app,
    console,
    err_console,
    fail,
    settings_or_exit,
)
from runtime.client import ApiError, Client
from runtime.config import Settings, load_settings
from runtime.errors import ConfigError
from runtime.models.enums import AgentState
from runtime.state_machines import TaskStatus
from serve import cli_system  # noqa: F401  (`up` and `down` register first)
from serve.cli_batch import submit_file
from supervisors.tree import (
    check_tree,
)

__all__ = ["app"]

T = TypeVar("T")
CONFIG_CHECKS.append(check_tree)  # `rayvisor config` checks the tree too


@app.callback()
def _logs() -> None:
    """Before any command: rayvisor's loggers write `runtime.logs` lines (text on a terminal,
    warnings and up unless `log_level` says otherwise), as its Ray workers do."""
    try:
        settings = load_settings()
    except ConfigError:  # the command reports it (a bad log setting too)
        with contextlib.suppress(ValueError):
            logs.setup()
        return
    logs.setup(settings.log_format, settings.log_level)


# ---- commands over the HTTP API ---------------------------------------------------------

UrlOption = Annotated[
    str | None, typer.Option("--url", help="API URL (default: http_host:http_port).")
]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", help="Default: RAYVISOR_API_KEY or home/api_key.")
]


def _client(settings: Settings, url: str | None, api_key: str | None) -> Client:
    key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    key_file = settings.home / "api_key"
    if key is None and key_file.exists():
        key = key_file.read_text().strip()
    if not key:
        raise fail(
            f"no API key: pass --api-key, set RAYVISOR_API_KEY, or run `rayvisor up` "
            f"(it writes one to {key_file})"
        )
    return Client(url or settings.http_url, key)


def _call(action: Any) -> Any:
    """Run an API call; a refusal is exit 2 with its reason, no API is exit 1."""
    try:
        return action()
    except ApiError as exc:
        err_console.print(f"[red]refused: {exc}[/red]")
        raise typer.Exit(2) from None
    except httpx.TransportError as exc:
        raise fail(f"no rayvisor API answers ({exc}); start it with `rayvisor up`") from None


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
        table.add_row(
            t["id"],
            t["title"],
            t["status"],
            str(t["attempt"]),
            t.get("assigned_to") or "",
            str(t["priority"]),
            shown,
        )
    return table


@app.command()
def submit(
    title: Annotated[str | None, typer.Argument(help="What the task is.")] = None,
    capability: Annotated[list[str], typer.Option("--capability", "-c")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option("--param", "-p", help="key=value (JSON)")] = [],  # noqa: B006
    priority: Annotated[int, typer.Option(min=0, max=9)] = 5,
    max_attempts: Annotated[int, typer.Option(min=1, max=100)] = 3,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait until the task has ended, showing its status.")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="How long --wait waits (s).")] = 300.0,
    force: Annotated[
        bool,
        typer.Option(help="With --wait: submit even if no agent offers the capabilities."),
    ] = False,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Submit the tasks of a JSON-lines file instead of TITLE: one task object a"
            " line (the fields of POST /api/v1/tasks, idempotency_key included).",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="With --file: tasks a request (default: http.max_batch_tasks)."),
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Submit a task; with --wait, show its status until it ends, then how it ended.

    With --wait a task that no running agent and no pool can take (none offers all its
    capabilities) is not submitted: exit 1 naming what is missing, unless --force.

    With --file the whole file is checked first: a bad line (each named with its line
    number and field) submits nothing, exit 2. Then its tasks go in batches, each task
    answered on its own: a table shows each line's task (created, existing: the task its
    idempotency_key made before, refused: why), exit 2 if any was refused (the others are
    stored). Lines with an idempotency_key make sending the file again safe.
    """
    settings = settings_or_exit()
    if file is not None:
        if title is not None or capability or param or idempotency_key or wait:
            raise typer.BadParameter(
                "the tasks come from the file: drop TITLE, -c, -p, --idempotency-key, --wait",
                param_hint="--file",
            )
        with _client(settings, url, api_key) as client:
            submit_file(client, file, batch_size or settings.http.max_batch_tasks)
        return
    if title is None:
        raise typer.BadParameter("what the task is (or --file FILE)", param_hint="TITLE")
    body: dict[str, Any] = {
        "title": title,
        "required_capabilities": capability,
        "parameters": _parse_params(param),
        "priority": priority,
        "max_attempts": max_attempts,
    }
    with _client(settings, url, api_key) as client:
        if wait:
            reason = _call(lambda: _why_no_agent(client, capability))
            if reason is not None and not force:
                raise fail(
                    f"{escape(reason)}: the task was not submitted. Start an agent that offers "
                    "it, or pass --force to queue it anyway."
                )
            if reason is not None:
                err_console.print(f"[yellow]{escape(reason)}: queued anyway (--force)[/yellow]")
        task = _call(lambda: client.submit_task(body, idempotency_key=idempotency_key))
        if wait:
            task = _call(lambda: _wait_showing_status(client, task, timeout))
        else:
            with contextlib.suppress(ApiError, httpx.TransportError):
                reason = _why_no_agent(client, capability)
                if reason is not None:
                    err_console.print(
                        f"[yellow]{escape(reason)}: the task stays queued until one does[/yellow]"
                    )
    console.print(_task_table([task], "task"))
    if wait and task["status"] != "completed":
        raise typer.Exit(1)


_GONE = frozenset({AgentState.STOPPING, AgentState.STOPPED, AgentState.FAILED})


def capability_offers(
    agents: list[dict[str, Any]], tree: dict[str, Any] | None = None
) -> dict[str, frozenset[str]]:
    """What each agent that can take a task offers: {agent id: its capabilities}.

    `agents` as `GET /api/v1/agents` lists them, `tree` as `GET /api/v1/supervisors/tree`
    shows it. An agent counts if it is not stopping, stopped or failed, or, whatever its
    last state, if it belongs to a pool of `tree` (the pool restarts it).
    """
    pools: set[str] = set()
    members: set[str] = set()
    nodes = [tree] if tree else []
    while nodes:
        node = nodes.pop()
        children = node.get("children") or []
        if node.get("strategy") == "simple_one_for_one":
            pools.add(node.get("id", ""))
            members.update(c.get("id", "") for c in children)
        nodes.extend(children)
    return {
        a["id"]: frozenset(a.get("capabilities") or [])
        for a in agents
        if a.get("state") not in _GONE or a["id"] in members or a.get("supervisor_id") in pools
    }


def no_agent_reason(required: Iterable[str], offers: Mapping[str, frozenset[str]]) -> str | None:
    """Why no agent of `offers` can take a task that needs `required` (a task goes to one
    agent that offers every capability it needs), or None if one can."""
    needed = frozenset(required)
    if any(needed <= caps for caps in offers.values()):
        return None
    offered = frozenset[str]().union(*offers.values())
    shown = f"offered: {', '.join(sorted(offered))}" if offered else "none is offered"
    if not offers:
        return "no agent is running and no pool has one"
    missing = needed - offered
    if missing:
        noun = "capability" if len(missing) == 1 else "capabilities"
        names = ", ".join(repr(c) for c in sorted(missing))
        return f"no running agent or pool offers {noun} {names} ({shown})"
    names = ", ".join(repr(c) for c in sorted(needed))
    return f"no single agent offers {names} together ({shown})"


def _why_no_agent(client: Client, required: list[str]) -> str | None:
    """`no_agent_reason` for the system behind `client`: its running agents first, then,
    if they cannot, the members of its pools (a tree that does not run counts no pool)."""
    agents = client.list_agents()
    if no_agent_reason(required, capability_offers(agents)) is None:
        return None
    try:
        tree = client.tree()
    except ApiError as exc:
        if exc.status != 503:
            raise
        tree = None
    return no_agent_reason(required, capability_offers(agents, tree))


def status_line(task: Mapping[str, Any], progress: Mapping[str, Any] | None = None) -> str:
    """One line for where `task` (as the API returns it) is: `queued`, `assigned to agent
    echo-1, attempt 1 of 3`, `running on agent echo-1 40% (step 2 of 5), attempt 1 of 3`,
    `completed on agent echo-1`. `progress` is the latest progress report of the task
    (`attempt`, `progress`, `message`); it is shown while that attempt runs."""
    status = str(task.get("status", "?"))
    attempt = int(task.get("attempt") or 0)
    attempts = f"attempt {attempt} of {task.get('max_attempts', '?')}"
    agent = task.get("assigned_to") or "?"
    if status == "pending":
        return "pending: waiting for its dependencies" if task.get("dependencies") else "pending"
    if status == "queued":
        if attempt == 0:
            return "queued"
        errors = task.get("attempt_errors") or [{}]
        reason = str((errors[-1] or {}).get("reason") or "")
        line = f"queued for attempt {attempt + 1} of {task.get('max_attempts', '?')}"
        return line + (f" (attempt {attempt}: {_shorten(reason)})" if reason else "")
    if status == "assigned":
        return f"assigned to agent {agent}, {attempts}"
    if status == "running":
        line = f"running on agent {agent}"
        done = (progress or {}).get("progress")
        if progress and progress.get("attempt") == attempt and isinstance(done, int | float):
            line += f" {done:.0%}"
            if progress.get("message"):
                line += f" ({_shorten(str(progress['message']))})"
        return f"{line}, {attempts}"
    line = status + (f" on agent {agent}" if task.get("assigned_to") else "")
    return line + (f" after {attempt} attempts" if attempt > 1 else "")


def _shorten(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


class _ProgressFollower:
    """The latest progress report of a task, read from the API's event stream by a thread
    of its own (a client of its own too); stops, quietly, when the block ends."""

    def __init__(self, client: Client, task_id: str) -> None:
        self.latest: dict[str, Any] | None = None
        self._client = client.fork()
        self._thread = threading.Thread(
            target=self._follow, args=(task_id,), name="rayvisor-progress", daemon=True
        )

    def _follow(self, task_id: str) -> None:
        with contextlib.suppress(Exception):  # a stream that fails only shows no progress
            for report in self._client.task_progress(task_id):
                self.latest = report

    def __enter__(self) -> _ProgressFollower:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def _wait_showing_status(client: Client, task: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Wait for `task` to end, showing its status: a spinner line on a terminal, a line per
    change otherwise. Exit 1 past `timeout` (the task goes on), 130 on Ctrl-C."""
    task_id = task["id"]
    label = f"task {task_id[:8]}"
    began = time.monotonic()
    shown = ""
    interactive = console.is_interactive  # a terminal that redraws: a spinner line
    spinner = console.status(f"{label}: {escape(status_line(task))}") if interactive else None
    try:
        with _ProgressFollower(client, task_id) as progress, spinner or contextlib.nullcontext():
            for task in client.watch_task(task_id, timeout):
                line = status_line(task, progress.latest)
                if spinner is not None:
                    elapsed = time.monotonic() - began
                    spinner.update(f"{label}: {escape(line)} [dim]({elapsed:.0f} s)[/dim]")
                elif line != shown:
                    console.print(f"{label}: {line}", markup=False, highlight=False)
                shown = line
    except TimeoutError:
        console.print(_task_table([task], "task"))
        raise fail(
            f"{label} is still {task['status']} after {timeout:g} s (--timeout); it goes "
            f"on: `rayvisor tasks` shows it"
        ) from None
    except KeyboardInterrupt:
        err_console.print(f"stopped waiting; {label} goes on: `rayvisor tasks` shows it")
        raise typer.Exit(130) from None
    return task


@app.command()
def tasks(
    status: Annotated[TaskStatus | None, typer.Option(help="Only tasks in this status.")] = None,
    capability: Annotated[str | None, typer.Option(help="Only tasks needing this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """List the latest tasks, newest first."""
    settings = settings_or_exit()
    with _client(settings, url, api_key) as client:
        page = _call(
            lambda: client.list_tasks(
                status.value if status else None, capability, limit, newest_first=True
            )
        )
    console.print(_task_table(page["items"], f"latest tasks ({len(page['items'])})"))


@app.command()
def agents(
    state: Annotated[AgentState | None, typer.Option(help="Only agents in this state.")] = None,
    capability: Annotated[str | None, typer.Option(help="Only agents with this.")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """List agents: state, capabilities, restarts, supervisor."""
    settings = settings_or_exit()
    with _client(settings, url, api_key) as client:
        found = _call(lambda: client.list_agents(state.value if state else None, capability))
    table = Table(title=f"agents ({len(found)})")
    for column in ("id", "state", "capabilities", "restarts", "supervisor", "last active"):
        table.add_column(column)
    for a in found:
        table.add_row(
            a["id"],
            a["state"],
            ", ".join(a["capabilities"]),
            str(a["restart_count"]),
            a.get("supervisor_id") or "",
            a.get("last_active_at") or "",
        )
    console.print(table)


@app.command()
def events(
    subject: Annotated[str, typer.Argument(help="NATS subject pattern, e.g. 'tasks.>'.")] = ">",
    last_event_id: Annotated[
        str | None, typer.Option(help="Replay the durable events after this id ('0': all).")
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many.")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Tail events on a subject pattern (Ctrl-C stops)."""
    settings = settings_or_exit()
    seen = 0
    with _client(settings, url, api_key) as client:
        stream = client.stream(subject=subject, last_event_id=last_event_id)
        try:
            for event in _call(lambda: _first_then_rest(stream)):
                console.print(
                    f"[dim]{event.id or '-':>8}[/dim] [bold]{event.event}[/bold] {event.data}",
                    markup=True,
                    highlight=False,
                    soft_wrap=True,
                )
                seen += 1
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            pass


def _first_then_rest(stream: Iterator[Any]) -> Iterator[Any]:
    """Open the stream now (so a refusal is reported at once), then yield its events."""
    import itertools

    try:
        first = next(stream)
    except StopIteration:
        return iter(())
    return itertools.chain([first], stream)


# `keys` and the project commands (`analyze`, `demo`) register on `app` when imported;
# the project commands import this module's helpers, so they come last.
from serve import cli_keys, cli_projects  # noqa: E402, F401

if __name__ == "__main__":
    app()
