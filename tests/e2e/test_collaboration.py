"""Agents working together, over HTTP on real Ray, PostgreSQL and NATS: tools called as
tasks and recorded per task."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from conftest import HttpSystem, running_http_system

from runtime.client import ApiError

pytestmark = pytest.mark.integration

POOLS = [{"id": "tool", "agent": "actors.builtin.tool_caller:ToolCallerAgent", "size": 1}]


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
