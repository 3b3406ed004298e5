"""Agents working together, over HTTP on real Ray, PostgreSQL and NATS: tools called as
tasks and recorded per task."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from systems import HttpSystem, running_http_system

from runtime.client import ApiError

pytestmark = pytest.mark.integration

POOLS = [{"id": "collab_tool", "agent": "actors.builtin.tool_caller:ToolCallerAgent", "size": 1}]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    allowed = tmp_path_factory.mktemp("allowed")
    (allowed / "auth.log").write_text("Failed password for root from 173.234.31.186\n")
    return allowed


@pytest.fixture(scope="module")
def system(services, ray_session, files: Path) -> Iterator[HttpSystem]:
    tools = {"read_file": {"dirs": [str(files)]}}
    with running_http_system(services, POOLS, tools=tools) as system:
        yield system


def test_tools_are_listed_with_their_parameters_and_limits(system: HttpSystem) -> None:
    with system.client("read") as client:
        tools = {tool["name"]: tool for tool in client.list_tools()}
    assert set(tools) == {"read_file", "http_request"}
    assert tools["read_file"]["parameters"]["required"] == ["path"]
    assert tools["http_request"]["limits"]["rate_per_s"] == 10.0


def test_a_tool_task_runs_the_tool_and_each_call_is_recorded_with_the_task(
    system: HttpSystem,
) -> None:
    with system.client() as client:
        read = client.submit_task(
            {
                "title": "read the log",
                "required_capabilities": ["tool"],
                "parameters": {"tool": "read_file", "arguments": {"path": "auth.log"}},
            }
        )
        done = client.wait_task(read["id"], timeout_s=60)
        assert done["status"] == "completed", done
        assert done["result"]["content"].startswith("Failed password for root")
        [call] = client.tool_executions(read["id"])
        assert call["tool"] == "read_file" and call["status"] == "succeeded"
        assert call["task_id"] == read["id"] and call["input"] == {"path": "auth.log"}

        escape = client.submit_task(
            {
                "title": "read outside",
                "required_capabilities": ["tool"],
                "parameters": {"tool": "read_file", "arguments": {"path": "../../etc/passwd"}},
            }
        )
        failed = client.wait_task(escape["id"], timeout_s=60)
        assert failed["status"] == "failed" and failed["attempt"] == 1  # never retried
        assert "'..' is not allowed" in failed["error"]["reason"]
        [refused] = client.tool_executions(escape["id"])
        assert refused["status"] == "rejected" and "'..'" in refused["error"]

        with pytest.raises(ApiError) as missing:
            client.tool_executions(str(uuid4()))
        assert missing.value.status == 404


def test_templates_register_list_and_refuse_bad_ones(system: HttpSystem) -> None:
    name = f"triage_{uuid4().hex[:6]}"
    body = {
        "name": name,
        "class_path": "actors.builtin.echo:EchoAgent",
        "capabilities": ["triage"],
        "parameters": {"greeting": "hi"},
        "resources": {"num_cpus": 0},
    }
    with system.raw() as http:
        admin = {"Authorization": f"Bearer {system.keys['admin']}"}
        created = http.post("/api/v1/templates", json=body, headers=admin)
        assert created.status_code == 201, created.text
        assert created.json()["capabilities"] == ["triage"]
        assert created.json()["source"] == "api"
        assert http.post("/api/v1/templates", json=body, headers=admin).status_code == 409
        listed = http.get("/api/v1/templates", headers=admin).json()
        assert name in {t["name"] for t in listed}
        assert http.get(f"/api/v1/templates/{name}", headers=admin).json()["parameters"] == {
            "greeting": "hi"
        }
        assert http.get("/api/v1/templates/no_such", headers=admin).status_code == 404
        for field, value, reason in [
            ("class_path", "actors.no_such_module:Agent", "cannot import"),
            ("class_path", "actors.builtin.tool_caller:ToolCall", "is not an Agent subclass"),
            ("class_path", "os:system", "not in a package templates may use (actors;"),
            ("class_path", "not a path", "should match pattern"),
            ("model", "gpt-nothing", "no model 'gpt-nothing' in the catalog"),
            ("name", "Bad Name", "should match pattern"),
        ]:
            bad = http.post(
                "/api/v1/templates",
                json={**body, "name": f"x_{uuid4().hex[:6]}", field: value}
                if field != "name"
                else {**body, "name": value},
                headers=admin,
            )
            assert bad.status_code == 422, bad.text
            [error] = bad.json()["errors"]
            assert error["field"] == f"body.{field}" and reason in error["reason"], error
        writer = {"Authorization": f"Bearer {system.keys['write']}"}
        assert http.post("/api/v1/templates", json=body, headers=writer).status_code == 403


def test_an_agent_spawned_from_a_template_runs_tasks_and_a_specialization_changes_matching(
    system: HttpSystem,
) -> None:
    name = f"triage_{uuid4().hex[:6]}"
    with system.client() as client:
        client.create_template(
            {"name": name, "class_path": "actors.builtin.echo:EchoAgent",
             "capabilities": ["triage"]}
        )  # fmt: skip
        spawned = client.spawn_agent(name)
        assert spawned["template"] == name
        agent_id = spawned["agent_id"]
        task = client.submit_task(
            {"title": "triage", "required_capabilities": ["triage"], "parameters": {"n": 1}}
        )
        done = client.wait_task(task["id"], timeout_s=90)
        assert done["status"] == "completed" and done["assigned_to"] == agent_id
        second = client.spawn_agent(name)  # the pool exists now: it grows
        assert second["agent_id"] != agent_id
        assert second["supervisor_id"] == spawned["supervisor_id"]

        waiting = client.submit_task(
            {"title": "rare", "required_capabilities": ["incident_review"], "max_attempts": 1}
        )
        assert client.get_task(waiting["id"])["status"] in ("pending", "queued")
        specializations = client.add_specialization(agent_id, "incident_review", 0.7)
        assert [(s["capability"], s["proficiency"]) for s in specializations] == [
            ("incident_review", 0.7)
        ]
        done = client.wait_task(waiting["id"], timeout_s=60)
        assert done["status"] == "completed" and done["assigned_to"] == agent_id
        assert "incident_review" in client.get_agent(agent_id)["capabilities"]
        client.stop_agent(second["agent_id"])


def test_a_task_needing_llm_without_a_model_is_refused_at_submit(system: HttpSystem) -> None:
    with system.raw() as http:
        refused = http.post(
            "/api/v1/tasks",
            json={"title": "ask", "required_capabilities": ["llm"], "parameters": {"prompt": "?"}},
            headers={"Authorization": f"Bearer {system.keys['write']}"},
        )
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["errors"]
    assert error["field"] == "body.required_capabilities"
    assert "no model is configured" in error["reason"] and "'llm'" in error["reason"]
