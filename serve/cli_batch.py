"""`rayvisor submit --file tasks.jsonl`: many tasks from a JSON-lines file.

The whole file is read and checked before anything is sent: every non-blank line must be
a JSON object that is a valid task (the fields of `POST /api/v1/tasks`, `idempotency_key`
among them). A file with a bad line submits nothing: each bad line is named with its
number and the field, exit 2. Then the tasks go in batches (`POST /api/v1/tasks/batch`,
`--batch-size`, with a progress bar when there is more than one); the server answers each
task on its own, so a task it refuses (an unknown dependency, a key reused with another
body) is reported with its line while the others are stored (exit 2). A line with an
`idempotency_key` is safe to send again: the task it made is answered (`existing`), not
made twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from runtime.cli import console, err_console
from runtime.client import ApiError, Client
from runtime.models.api import TaskCreate

__all__ = ["read_task_file", "submit_file"]

SHOWN_ROWS = 100
"""Past this many tasks the table shows only the refused ones (and the counts)."""
_OUTCOME = {201: "created", 200: "existing", 422: "refused"}


def read_task_file(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """The file's tasks with their line numbers, and what is wrong with it (each problem
    names its line); blank lines are skipped."""
    tasks: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{path}: cannot be read ({exc})"]
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            task = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(task, dict):
            problems.append(f"line {number}: not a JSON object but {type(task).__name__}")
            continue
        try:
            TaskCreate.model_validate(task)
        except ValidationError as exc:
            for error in exc.errors():
                field = ".".join(str(part) for part in error["loc"]) or "task"
                problems.append(f"line {number}: {field}: {error['msg']}")
            continue
        tasks.append((number, task))
    if not tasks and not problems:
        problems.append(f"{path}: no tasks (one JSON object a line)")
    return tasks, problems


def submit_file(client: Client, path: Path, batch_size: int) -> None:
    """Submit every task of `path` in batches and show how each went (see the module)."""
    tasks, problems = read_task_file(path)
    if problems:
        for problem in problems[:50]:
            err_console.print(escape(problem), style="red", highlight=False)
        if len(problems) > 50:
            err_console.print(f"[red]... and {len(problems) - 50} more[/red]")
        err_console.print(f"[red]{path}: nothing was submitted; fix the lines above[/red]")
        raise typer.Exit(2)
    rows: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    failure: tuple[str, int] | None = None  # why the rest was not sent, the exit code
    columns = (TextColumn("submitting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, disable=len(tasks) <= batch_size) as progress:
        bar = progress.add_task("submit", total=len(tasks))
        for start in range(0, len(tasks), batch_size):
            chunk = tasks[start : start + batch_size]
            try:
                answer = client.submit_batch([task for _, task in chunk])
            except ApiError as exc:  # the batch as a whole refused: a refusal, exit 2
                failure = (f"refused: {exc}", 2)
                break
            except httpx.TransportError as exc:
                failure = (f"no rayvisor API answers ({exc})", 1)
                break
            rows.extend(
                (number, task, result)
                for (number, task), result in zip(chunk, answer["results"], strict=True)
            )
            progress.advance(bar, len(chunk))
    console.print(_results_table(rows, path))
    counts = {outcome: 0 for outcome in _OUTCOME.values()}
    for _, _, result in rows:
        counts[_OUTCOME[result["status"]]] += 1
    console.print(", ".join(f"{n} {outcome}" for outcome, n in counts.items()))
    if failure is not None:
        reason, code = failure
        first = tasks[len(rows)][0]
        err_console.print(
            f"[red]{escape(reason)}: the tasks from line {first} on were not submitted[/red]"
            " (what was stored stays stored; lines with an idempotency_key are safe to send"
            " again)"
        )
        raise typer.Exit(code)
    if counts["refused"]:
        raise typer.Exit(2)


def _results_table(rows: list[tuple[int, dict[str, Any], dict[str, Any]]], path: Path) -> Table:
    shown = rows if len(rows) <= SHOWN_ROWS else [r for r in rows if r[2]["status"] == 422]
    title = str(path) if shown is rows else f"{path}: the refused tasks"
    table = Table(title=title)
    for column in ("line", "result", "id", "title", "reason"):
        table.add_column(column, overflow="fold")
    for number, task, result in shown[:SHOWN_ROWS]:
        stored = result.get("task") or {}
        reason = "; ".join(f"{e['field']}: {e['reason']}" for e in result.get("errors") or [])
        table.add_row(
            str(number),
            _OUTCOME[result["status"]],
            stored.get("id", ""),
            escape(str(task.get("title", ""))),
            escape(reason),
        )
    return table
