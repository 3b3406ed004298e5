"""An agent's log records reach its Ray worker's log file as JSON lines naming the task, the
agent, the actor and the trace (`runtime.logs`, installed by the worker setup hook)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray
from helpers import wait_for, worker_runtime_env

from actors.host import AgentHost
from supervisors.child import CONCURRENCY_GROUPS

pytestmark = pytest.mark.integration

HostActor = ray.remote(concurrency_groups=CONCURRENCY_GROUPS, max_concurrency=1000)(AgentHost)


def _logged(logs_dir: Path, pid: int, message: str) -> dict[str, Any] | None:
    """The JSON line saying `message` in the stderr file of worker `pid`, if written yet."""
    for path in logs_dir.glob(f"worker-*-{pid}.err"):
        for line in path.read_text(errors="replace").splitlines():
            if message in line and line.startswith("{"):
                return json.loads(line)
    return None


async def test_a_log_line_of_a_task_names_it_in_the_worker_log(
    ray_actors: None, services: Any, database_url: str
) -> None:
    agent_id = f"logs-{uuid.uuid4().hex[:8]}"
    name = f"agent:{agent_id}"
    env = {
        "RAYVISOR_DATABASE_URL": database_url,
        "RAYVISOR_NATS_URL": services.nats_url,
        "RAYVISOR_HOME": str(services.home),
    }
    host = HostActor.options(
        name=name, namespace="rayvisor-test", runtime_env=worker_runtime_env(env)
    ).remote("actors.builtin.echo:EchoAgent", None)
    pid = (await host.rv_start.remote(agent_id, "sup-test"))["pid"]
    message = f"scanning chunk {uuid.uuid4().hex[:6]}"
    task = {"id": str(uuid.uuid4()), "attempt": 1, "parameters": {"log": message}}
    assert (await host.run.remote(task))["status"] == "completed"

    logs_dir = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    line = await wait_for(lambda: _logged(logs_dir, pid, message), timeout_s=10)
    assert isinstance(line, dict)
    assert line["message"] == message and line["level"] == "INFO"
    assert line["logger"] == f"rayvisor.agent.{agent_id}"
    assert line["task_id"] == task["id"] and line["agent_id"] == agent_id
    assert line["actor"] == name and line["pid"] == pid
    assert len(line["trace_id"]) == 32 and len(line["span_id"]) == 16
