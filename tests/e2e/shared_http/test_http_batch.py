"""`POST /api/v1/tasks/batch` through real HTTP, and the same through `Client`,
`AsyncClient`, `TaskClient` and `rayvisor submit --file`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from helpers import rayvisor_cli

from actors.tasks import TaskClient
from runtime.client import ApiError, AsyncClient

pytestmark = pytest.mark.integration


def _cap() -> str:
    return f"batch-{uuid.uuid4().hex[:6]}"


def test_each_item_is_answered_on_its_own(http_system) -> None:
    cap, key, used = _cap(), f"k-{uuid.uuid4().hex}", f"u-{uuid.uuid4().hex}"
    body = {"title": "one", "required_capabilities": [cap]}
    with http_system.client("write") as rv:
        before = rv.submit_task({**body, "title": "earlier"}, idempotency_key=used)
        items = [
            {**body, "idempotency_key": key},  # 0: new
            {**body, "title": "two"},  # 1: new, no key
            {"priority": 5, **body, "idempotency_key": key},  # 2: 0's key and body again
            {**body, "title": "earlier", "idempotency_key": used},  # 3: a key used before
            {**body, "title": "other", "idempotency_key": used},  # 4: ... with another body
            {**body, "priority": 12},  # 5: invalid
            {"required_capabilities": [cap]},  # 6: no title
            {**body, "dependencies": [str(uuid.uuid4())]},  # 7: unknown dependency
            {**body, "colour": "red"},  # 8: unknown field
        ]
        with http_system.raw() as http:
            answer = http.post(
                "/api/v1/tasks/batch",
                json={"tasks": items},
                headers={"Authorization": f"Bearer {http_system.keys['write']}"},
            )
        assert answer.status_code == 207, answer.text
        batch = answer.json()
        results = batch["results"]
        assert [r["index"] for r in results] == list(range(len(items)))
        assert [r["status"] for r in results] == [201, 201, 200, 200, 422, 422, 422, 422, 422]
        assert (batch["created"], batch["existing"], batch["refused"]) == (2, 2, 5)
        assert results[2]["task"]["id"] == results[0]["task"]["id"]
        assert results[3]["task"]["id"] == before["id"]
        fields = {r["index"]: [e["field"] for e in r["errors"]] for r in results[4:]}
        assert fields == {
            4: ["idempotency_key"],
            5: ["priority"],
            6: ["title"],
            7: ["dependencies"],
            8: ["colour"],
        }
        assert "different body" in results[4]["errors"][0]["reason"]
        assert "unknown task ids" in results[7]["errors"][0]["reason"]
        assert all(r["task"] is None for r in results[4:])
        stored = rv.list_tasks(capability=cap, limit=100)["items"]
        # the refused items wrote nothing: the task made before and the two new ones
        assert sorted(t["title"] for t in stored) == ["earlier", "one", "two"]


def test_over_the_limit_or_empty_is_refused_and_stores_nothing(http_system) -> None:
    cap = _cap()
    limit = http_system.settings.http.max_batch_tasks
    assert limit == 1000  # the default
    with http_system.client("write") as rv:
        with pytest.raises(ApiError) as refused:
            rv.submit_batch([{"title": f"t{n}", "required_capabilities": [cap]}
                             for n in range(limit + 1)])  # fmt: skip
        assert refused.value.status == 422
        error = refused.value.problem["errors"][0]
        assert error["field"] == "body.tasks"
        assert "at most 1000 tasks" in error["reason"] and "1001" in error["reason"]
        with pytest.raises(ApiError) as empty:
            rv.submit_batch([])
        assert empty.value.status == 422
        assert rv.list_tasks(capability=cap)["items"] == []


def test_a_batch_runs_and_every_task_completes_once(http_system) -> None:
    """Through `Client`: 300 echo tasks, each stored, run and completed exactly once."""
    with http_system.client("write") as rv:
        batch = rv.submit_batch([{"title": f"run {n}", "required_capabilities": ["echo"],
                                  "parameters": {"n": n}} for n in range(300)])  # fmt: skip
    assert batch["created"] == 300 and batch["refused"] == 0
    ids = [r["task"]["id"] for r in batch["results"]]
    assert [r["task"]["parameters"]["n"] for r in batch["results"]] == list(range(300))

    async def outcome() -> tuple[dict[str, int], dict[int, int], int]:
        conn = await asyncpg.connect(str(http_system.settings.database_url))
        try:
            uuids = [uuid.UUID(i) for i in ids]
            statuses = await conn.fetch(
                "SELECT status, count(*) AS n FROM tasks WHERE id = ANY($1::uuid[])"
                " GROUP BY status",
                uuids,
            )
            attempts = await conn.fetch(
                "SELECT attempt, count(*) AS n FROM tasks WHERE id = ANY($1::uuid[])"
                " GROUP BY attempt",
                uuids,
            )
            results = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE subject = ANY($1::text[])"
                " AND payload->>'status' = 'completed'",
                [f"tasks.{i}.result" for i in ids],
            )
            return (
                {r["status"]: r["n"] for r in statuses},
                {r["attempt"]: r["n"] for r in attempts},
                results,
            )
        finally:
            await conn.close()

    deadline = time.monotonic() + 120
    while (statuses := asyncio.run(outcome())[0]) != {"completed": 300}:
        assert time.monotonic() < deadline, f"not all completed within 120 s: {statuses}"
        time.sleep(0.5)
    _, attempts, completed_events = asyncio.run(outcome())
    assert attempts == {1: 300}
    assert completed_events == 300  # one completion each: none ran twice


def test_async_client_and_task_client_answer_each_item(http_system) -> None:
    cap = _cap()

    async def run() -> tuple[dict, list]:
        async with AsyncClient(http_system.url, http_system.keys["write"]) as rv:
            over_http = await rv.submit_batch(
                [{"title": "a", "required_capabilities": [cap]}, {"title": ""}]
            )
        tasks = TaskClient(http_system.settings.namespace, http_system.settings.task_shards)
        in_cluster = await tasks.submit_batch(
            [
                {"title": "b", "required_capabilities": [cap]},
                {"title": "c", "required_capabilities": [cap], "dependencies": [str(uuid.uuid4())]},
                {"title": "d", "required_capabilities": [cap], "idempotency_key": f"k-{cap}"},
                {"title": "d", "required_capabilities": [cap], "idempotency_key": f"k-{cap}"},
            ]
        )
        return over_http, in_cluster

    over_http, in_cluster = asyncio.run(run())
    assert [r["status"] for r in over_http["results"]] == [201, 422]
    assert over_http["results"][1]["errors"][0]["field"] == "title"
    assert [(one.created, one.error is None) for one in in_cluster] == [
        (True, True),
        (False, False),
        (True, True),
        (False, True),
    ]
    assert "dependencies" in in_cluster[1].error.reason
    assert in_cluster[3].task["id"] == in_cluster[2].task["id"]  # the key's first task
    with http_system.client("read") as rv:
        titles = sorted(t["title"] for t in rv.list_tasks(capability=cap)["items"])
    assert titles == ["a", "b", "d"]


def _rayvisor(http_system, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RAYVISOR_HOME": str(http_system.settings.home),
        "RAYVISOR_DATABASE_URL": str(http_system.settings.database_url),
        "RAYVISOR_NATS_URL": str(http_system.settings.nats_url),
        "RAYVISOR_HTTP_PORT": str(http_system.settings.http_port),
        "RAYVISOR_API_KEY": http_system.keys["write"],
        "COLUMNS": "250",
    }
    return rayvisor_cli(env, *args)


def test_cli_submit_file(http_system, tmp_path: Path) -> None:
    cap = _cap()
    good = {"title": "from a file", "required_capabilities": [cap]}
    lines = [json.dumps({**good, "idempotency_key": f"{cap}-{n}", "parameters": {"n": n}})
             for n in range(3)]  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], "{not json", "", json.dumps({**good, "priority": 10})]))
    refused = _rayvisor(http_system, "submit", "--file", str(bad))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert "line 2: not JSON" in message and "line 4: priority:" in message
    assert "nothing was submitted" in message
    with http_system.client("read") as rv:
        assert rv.list_tasks(capability=cap)["items"] == []

    unknown = json.dumps({**good, "title": "waits", "dependencies": [str(uuid.uuid4())]})
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join([*lines, unknown]) + "\n")
    first = _rayvisor(http_system, "submit", "--file", str(tasks), "--batch-size", "2")
    assert first.returncode == 2, first.stdout + first.stderr  # line 4 refused, 1-3 stored
    assert "3 created, 0 existing, 1 refused" in first.stdout
    row = next(line for line in first.stdout.splitlines() if "refused" in line and "4" in line)
    assert "dependencies: unknown task ids" in row
    tasks.write_text("\n".join(lines) + "\n")
    again = _rayvisor(http_system, "submit", "-f", str(tasks))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 created, 3 existing, 0 refused" in again.stdout  # the keys: nothing twice
    with http_system.client("read") as rv:
        stored = rv.list_tasks(capability=cap)["items"]
    assert sorted(t["parameters"]["n"] for t in stored) == [0, 1, 2]
