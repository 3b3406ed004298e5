"""Projects over HTTP on real Ray, PostgreSQL and NATS: requirements in, a plan with
dependencies, tasks on the built-in agents, compiled results out; cancelling; plans that
cannot run; `rayvisor analyze` against the running system."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from helpers import wait_until
from systems import HttpSystem, rayvisor, running_http_system

pytestmark = pytest.mark.integration

LOGHUB = Path(str(resources.files("actors.builtin") / "data" / "loghub"))
SSH_LOG = str(LOGHUB / "OpenSSH_2k.log")
INVESTIGATE = "Investigate these logs for attacks"
ACTIVE = {"pending", "queued", "assigned", "running"}

POOLS = [
    {"id": "planning", "agent": "actors.builtin.planning:PlanningAgent", "size": 1},
    {"id": "chunking", "agent": "actors.builtin.chunking:ChunkingAgent", "size": 1},
    {"id": "log_analysis", "agent": "actors.builtin.log_analysis:LogAnalysisAgent", "size": 2},
    {"id": "reduce", "agent": "actors.builtin.reduce:ReduceAgent", "size": 1},
]


@pytest.fixture(scope="module")
def project_system(services, ray_session) -> Iterator[HttpSystem]:
    with running_http_system(services, POOLS) as system:
        yield system


def wait_project(system: HttpSystem, project_id: str, timeout_s: float = 120) -> dict[str, Any]:
    with system.client() as client:
        return wait_until(
            lambda: (
                (p := client.get_project(project_id))["status"]
                in {"completed", "failed", "cancelled"}
                and p
            ),
            timeout_s=timeout_s,
            interval_s=0.3,
        )


def live_agents(client: Any, capability: str) -> list[dict[str, Any]]:
    agents = client.list_agents(capability=capability)
    return [a for a in agents if a["state"] not in {"stopping", "stopped", "failed"}]


def outbox(database_url: str, subject: str) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT payload FROM outbox WHERE subject = $1", subject)
            return [json.loads(r["payload"]) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_a_project_runs_from_requirements_to_compiled_results(
    project_system: HttpSystem, services
) -> None:
    with project_system.client("write") as client:
        created = client.create_project(
            "Investigate SSH incident",
            [INVESTIGATE],
            inputs={"paths": [SSH_LOG], "chunks": 4, "extra_agents": 1},
        )
    assert created["status"] in {"pending", "planning"}
    done = wait_project(project_system, created["id"])
    assert done["status"] == "completed", done["error"]
    assert done["progress"] == 1.0
    result = done["result"]
    assert result["summary_step"] == "report"
    report = result["summary"]
    assert (report["top_addresses"][0]["address"], report["top_addresses"][0]["count"]) == (
        "183.62.140.253",
        286,
    )
    assert "173.234.31.186" in {row["address"] for row in report["break_in_attempts"]["top"]}
    assert "183.62.140.253" in report["summary"]
    # the task graph: plan -> analyse (a fan-out of 4 chunks) -> correlate -> report
    tasks = {t["step"]: t for t in done["tasks"] if t["step"]}
    assert set(tasks) == {"plan", "analyse-1-openssh-2k-log", "correlate", "report"}
    assert {t["status"] for t in done["tasks"]} == {"completed"}
    analyse = tasks["analyse-1-openssh-2k-log"]
    assert tasks["correlate"]["dependencies"] == [analyse["id"]]
    assert tasks["report"]["dependencies"] == [tasks["correlate"]["id"], analyse["id"]] or tasks[
        "report"
    ]["dependencies"] == [analyse["id"], tasks["correlate"]["id"]]
    chunks = [t for t in done["tasks"] if ": chunk " in t["title"]]
    assert len(chunks) == 4
    assert set(result["steps"]) == {"analyse-1-openssh-2k-log", "correlate", "report"}
    # announced once, and the agent spawned for the project is gone again
    completed = outbox(services.database_url, f"projects.{created['id']}.completed")
    assert len(completed) == 1
    with project_system.client() as client:
        wait_until(
            lambda: len(live_agents(client, "log_analysis")) == 2, timeout_s=30, interval_s=0.3
        )
        listed = client.list_projects(status="completed")
    assert created["id"] in {p["id"] for p in listed["items"]}


def test_cancelling_a_project_cancels_its_running_tasks(project_system: HttpSystem) -> None:
    with project_system.client("write") as client:
        created = client.create_project(
            "slow investigation", [INVESTIGATE], inputs={"paths": [SSH_LOG], "chunks": 4,
                                                         "pace_s": 20.0},
        )  # fmt: skip
        wait_until(
            lambda: any(
                t["status"] == "running" and ": chunk " in t["title"]
                for t in client.get_project(created["id"])["tasks"]
            ),
            timeout_s=60,
            interval_s=0.3,
        )
        cancelled = client.cancel_project(created["id"])
        assert cancelled["status"] == "cancelled"

        def all_ended() -> dict[str, Any] | None:
            project = client.get_project(created["id"])
            return None if any(t["status"] in ACTIVE for t in project["tasks"]) else project

        ended = wait_until(all_ended, timeout_s=30, interval_s=0.3)
        assert ended["status"] == "cancelled"
        assert "cancelled" in {t["status"] for t in ended["tasks"] if ": chunk " in t["title"]}
        assert client.cancel_project(created["id"])["status"] == "cancelled"  # as it was


@pytest.mark.parametrize(
    ("requirements", "reason"),
    [
        (
            [
                {"name": "a", "capability": "reduce", "after": ["b"]},
                {"name": "b", "capability": "reduce", "after": ["a"]},
            ],
            "not a DAG",
        ),
        ([{"name": "a", "capability": "no_such_capability"}], "no_such_capability"),
        (["Paint the house blue"], "Paint the house blue"),
    ],
    ids=["cycle", "unknown-capability", "unplannable"],
)
def test_a_plan_that_cannot_run_fails_the_project_at_planning(
    project_system: HttpSystem, requirements: list[Any], reason: str
) -> None:
    with project_system.client("write") as client:
        created = client.create_project("bad plan", requirements)
    done = wait_project(project_system, created["id"], timeout_s=60)
    assert done["status"] == "failed"
    assert reason in done["error"]
    assert [t["step"] for t in done["tasks"]] == ["plan"]  # no step task was made


def test_bad_project_bodies_get_422_naming_the_field(project_system: HttpSystem) -> None:
    with project_system.raw() as http:
        headers = {"Authorization": f"Bearer {project_system.keys['write']}"}
        for body, field in [
            ({"requirements": ["x"]}, "name"),
            ({"name": "n", "requirements": []}, "requirements"),
            ({"name": "n", "requirements": ["x"], "inputs": [1]}, "inputs"),
        ]:
            answer = http.post("/api/v1/projects", json=body, headers=headers)
            assert answer.status_code == 422, body
            assert field in json.dumps(answer.json()), answer.text
        missing = http.get(f"/api/v1/projects/{UUID(int=1)}", headers=headers)
        assert missing.status_code == 404


@pytest.mark.parametrize(
    ("sample", "expect"),
    [
        ("OpenSSH_2k.log", "183.62.140.253"),
        ("Apache_2k.log", "mod_jk"),
        ("HDFS_2k.log", "dfs."),
    ],
)
def test_rayvisor_analyze_reports_each_shipped_sample(
    project_system: HttpSystem, sample: str, expect: str
) -> None:
    sample_path = str(LOGHUB / sample)
    ran = rayvisor(project_system, "analyze", sample_path, "--chunks", "3", "--json", key="write")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    compiled = json.loads(ran.stdout[ran.stdout.index("{") :])
    assert compiled["summary_step"] == "report"
    assert compiled["summary"]["sources"][0]["source"] == sample
    assert expect in json.dumps(compiled["summary"])
