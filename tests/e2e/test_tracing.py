"""One trace per task, across processes: the HTTP request, the TaskManager's submit, lease
and commit, the agent's handler, its tool call and its ask, the asked agent's handler, and
the handler of the discovery it shared in a subscriber, as an OTLP collector receives them
(the session's `otlp` receiver, decoding with opentelemetry-proto). A retried task has
every attempt in its one trace."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from otlp_receiver import OtlpReceiver, ReceivedSpan
from systems import HttpSystem, running_http_system

from runtime import telemetry

pytestmark = pytest.mark.integration

POOLS = [
    {
        "id": "traced",
        "agent": "actors.builtin.echo:EchoAgent",
        "size": 2,
        "params": {"capabilities": ["traced"]},
    },
    {
        "id": "asked",
        "agent": "actors.builtin.echo:EchoAgent",
        "size": 1,
        "params": {"subscribe": {"types": ["traced_finding"]}},
    },
]


@pytest.fixture(scope="module")
def system(services, ray_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpSystem]:
    files = tmp_path_factory.mktemp("traced-files")
    (files / "auth.log").write_text("Failed password for root from 173.234.31.186\n")
    tools = {"read_file": {"dirs": [str(files)]}}
    with running_http_system(services, POOLS, tools=tools) as system:
        yield system


def _one(spans: list[ReceivedSpan], name: str, **attributes: object) -> ReceivedSpan:
    found = [s for s in spans if s.name == name
             and all(s.attributes.get(k) == v for k, v in attributes.items())]  # fmt: skip
    assert len(found) == 1, (name, attributes, [(s.name, s.attributes) for s in spans])
    return found[0]


def _pid(node: dict, actor_name: str) -> int:
    """The pid of an actor of the supervision tree (`GET /api/v1/supervisors/tree`)."""
    nodes = [node]
    while nodes:
        current = nodes.pop()
        if current.get("actor_name") == actor_name:
            return int(current["pid"])
        nodes.extend(current.get("children", []))
    raise AssertionError(f"{actor_name} is not in the tree")


def _trace_id(task: dict) -> str:
    trace_id = telemetry.trace_id(task["trace_context"])
    assert trace_id is not None, task
    return trace_id


def test_a_task_over_http_is_one_trace_from_the_request_to_the_commit(
    system: HttpSystem, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    body = {
        "title": "traced",
        "required_capabilities": ["traced"],
        "parameters": {
            "tool": {"name": "read_file", "arguments": {"path": "auth.log"}},
            "ask": {"to": "echo", "payload": {"q": "who?"}},
            "discover": {"type": "traced_finding", "content": "seen", "confidence": 0.9},
        },
    }
    with system.client() as client:
        task = client.submit_task(body)
        done = client.wait_task(task["id"], timeout_s=60)
    assert done["status"] == "completed", done
    assert done["result"]["tool_output"]["content"].startswith("Failed password")
    assert done["result"]["answer"]["echo"] == {"q": "who?"}
    trace_id = _trace_id(done)
    names = {"POST /api/v1/tasks", "task.submit", "task.lease", "agent.handle", "tool.call",
             "ask", "ask.handle", "discovery.receive", "task.commit"}  # fmt: skip

    def arrived() -> list[ReceivedSpan] | None:
        spans = otlp.spans(trace_id)
        return spans if names <= {s.name for s in spans} else None

    spans = wait_until(arrived, timeout_s=30, interval_s=0.2)
    assert isinstance(spans, list)
    task_id = task["id"]
    http = next(s for s in spans if s.name == "POST /api/v1/tasks" and not s.parent_span_id)
    submit = _one(spans, "task.submit", **{"task.id": task_id})
    lease = _one(spans, "task.lease", **{"task.id": task_id, "attempt": 1})
    handle = _one(spans, "agent.handle", **{"task.id": task_id})
    tool = _one(spans, "tool.call", **{"tool.name": "read_file"})
    ask = _one(spans, "ask")
    answered = _one(spans, "ask.handle")
    received = _one(spans, "discovery.receive", **{"discovery.type": "traced_finding"})
    commit = _one(spans, "task.commit", **{"task.id": task_id, "status": "completed"})

    assert submit.parent_span_id == http.span_id
    assert lease.parent_span_id == submit.span_id
    assert handle.parent_span_id == lease.span_id
    assert tool.parent_span_id == handle.span_id and ask.parent_span_id == handle.span_id
    assert answered.parent_span_id == ask.span_id
    # through the outbox, the relay and JetStream, in the message's headers
    assert received.parent_span_id == handle.span_id
    assert received.resource["process.pid"] == answered.resource["process.pid"]
    assert commit.parent_span_id == lease.span_id
    assert lease.attributes["agent.id"] == handle.attributes["agent.id"] == done["assigned_to"]
    assert lease.attributes["capability"] == "traced"
    assert handle.attributes["attempt"] == 1
    # the ingress, the task manager, the agent and the agent it asked
    pids = {s.pid for s in (http, submit, handle, answered)}
    assert len(pids) == 4, [(s.name, s.resource) for s in (http, submit, handle, answered)]
    assert submit.resource["ray.actor.name"] == "tm:0"
    assert handle.resource["ray.actor.name"] == f"agent:{done['assigned_to']}"
    assert answered.resource["rayvisor.process"] == "AgentHost"
    assert http.resource["rayvisor.process"] == "ingress"


def test_every_attempt_of_a_task_whose_agent_was_killed_is_in_its_one_trace(
    system: HttpSystem, otlp: OtlpReceiver
) -> None:
    body = {"title": "killed", "required_capabilities": ["traced"],
            "parameters": {"sleep_s": 3}, "max_attempts": 2}  # fmt: skip
    with system.client() as client:
        task = client.submit_task(body)
        task_id = task["id"]
        running = wait_until(
            lambda: (t := client.get_task(task_id))["status"] == "running" and t,
            timeout_s=30,
        )
        first = running["assigned_to"]
        os.kill(_pid(client.tree(), f"agent:{first}"), signal.SIGKILL)
        done = client.wait_task(task_id, timeout_s=90)
    assert done["status"] == "completed" and done["attempt"] == 2, done
    assert done["assigned_to"] != first
    trace_id = _trace_id(done)

    def both_leases() -> list[ReceivedSpan] | None:
        spans = otlp.spans(trace_id)
        leases = [s for s in spans if s.name == "task.lease"]
        handles = [s for s in spans if s.name == "agent.handle"]
        return spans if len(leases) == 2 and handles else None

    spans = wait_until(both_leases, timeout_s=30, interval_s=0.2)
    assert isinstance(spans, list)
    submit = _one(spans, "task.submit")
    lost = _one(spans, "task.lease", attempt=1)
    retried = _one(spans, "task.lease", attempt=2)
    assert lost.parent_span_id == retried.parent_span_id == submit.span_id
    assert lost.attributes["agent.id"] == first and lost.status_code == 2
    assert "died" in lost.status_message, lost.status_message
    assert retried.attributes["agent.id"] == done["assigned_to"] and retried.status_code != 2
    # the killed agent's handler span died with it; the second attempt's is there
    handle = _one(spans, "agent.handle")
    assert handle.parent_span_id == retried.span_id and handle.attributes["attempt"] == 2

    def restart_traced() -> list[ReceivedSpan]:  # a supervision decision is a span too
        return [s for s in otlp.spans() if s.name == "supervisor.restarted"
                and s.attributes.get("child.id") == first]  # fmt: skip

    [restart] = wait_until(restart_traced, timeout_s=30, interval_s=0.2)  # type: ignore[misc]
    assert restart.attributes["supervisor.id"] == "pool-traced"
    assert restart.resource["ray.actor.name"] == "sup:pool:traced"
