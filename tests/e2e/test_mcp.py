"""The MCP server at /mcp, through the `mcp` SDK's own client over streamable HTTP: tools
(each, and each with bad arguments), resources, subscriptions fed from JetStream (and
resumed after the last sequence seen), and scopes."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import httpx2
import mcp_types as types
import pytest
from helpers import wait_for
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from systems import ECHO_POOL, HttpSystem, running_http_system

pytestmark = pytest.mark.integration

SEQ_META, AFTER_META = "io.rayvisor/seq", "io.rayvisor/after"
READING = {"get_discoveries", "get_task", "list_agents", "get_tree", "get_project"}
WRITING = {"share_discovery", "submit_task", "cancel_task", "create_project"}


@pytest.fixture(scope="module")
def mcp_system(services, ray_session, tmp_path_factory) -> Iterator[HttpSystem]:
    logs = tmp_path_factory.mktemp("mcp-logs")
    (logs / "auth.log").write_text("Failed password for root from 10.0.0.7 port 22\n")
    tools = {"read_file": {"dirs": [str(logs)]}, "http_request": {"hosts": ["example.invalid"]}}
    with running_http_system(services, [ECHO_POOL], tools=tools) as system:
        yield system


@contextlib.asynccontextmanager
async def connect(
    system: HttpSystem, scope: str = "write", **options: Any
) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {system.keys[scope]}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http:
        transport = streamable_http_client(f"{system.url}/mcp", http_client=http)
        async with Client(transport, read_timeout_seconds=30, **options) as client:
            yield client


async def call(client: Client, name: str, arguments: dict[str, Any] | None = None) -> Any:
    result = await client.call_tool(name, arguments or {})
    assert not result.is_error, result.content
    return result.structured_content


async def refused(client: Client, name: str, arguments: dict[str, Any]) -> str:
    with pytest.raises(MCPError) as error:
        await client.call_tool(name, arguments)
    return error.value.message


async def test_tools_each_and_with_bad_arguments(mcp_system: HttpSystem) -> None:
    async with connect(mcp_system) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert READING | WRITING | {"read_file", "http_request"} <= set(listed)
        assert {"title", "required_capabilities"} <= set(
            listed["submit_task"].input_schema["properties"]
        )
        assert "path" in listed["read_file"].input_schema["properties"]

        agents = (await call(client, "list_agents", {"capability": "echo"}))["agents"]
        # the session's database also holds the agents of other tests' systems
        assert {a["capabilities"][0] for a in agents} == {"echo"}
        assert {a["id"] for a in agents} >= {"echo-1", "echo-2"}
        assert "state" in await refused(client, "list_agents", {"state": "dreaming"})
        assert json.dumps(await call(client, "get_tree")).count("sup:") > 2
        assert "depth" in await refused(client, "get_tree", {"depth": 2})

        task = await call(
            client, "submit_task", {"title": "mcp", "required_capabilities": ["echo"]}
        )
        done = await wait_for(lambda: _ended(client, task["id"]), timeout_s=30, interval_s=0.1)
        assert done["status"] == "completed"
        assert "title" in await refused(client, "submit_task", {"required_capabilities": []})
        assert "task_id" in await refused(client, "get_task", {"task_id": "nope"})
        missing = str(uuid.uuid4())
        assert missing in await refused(client, "get_task", {"task_id": missing})

        slow = await call(
            client,
            "submit_task",
            {"title": "slow", "required_capabilities": ["echo"], "parameters": {"sleep_s": 60}},
        )
        await call(client, "cancel_task", {"task_id": slow["id"]})
        cancelled = await wait_for(lambda: _ended(client, slow["id"]), timeout_s=30, interval_s=0.1)
        assert cancelled["status"] == "cancelled"
        assert "task_id" in await refused(client, "cancel_task", {})

        agent = f"mcp-{uuid.uuid4().hex[:8]}"
        shared = await call(
            client,
            "share_discovery",
            {"agent_id": agent, "type": "pattern", "content": "burst", "confidence": 0.9},
        )
        assert shared["agent_id"] == agent
        assert "confidence" in await refused(
            client, "share_discovery", {"type": "pattern", "content": "x", "confidence": 2}
        )
        page = await call(client, "get_discoveries", {"agent_id": agent})
        assert [d["id"] for d in page["items"]] == [shared["id"]]
        assert "limit" in await refused(client, "get_discoveries", {"limit": 0})

        project = await call(client, "create_project", {"name": "p", "requirements": ["x"]})
        assert (await call(client, "get_project", {"project_id": project["id"]}))["name"] == "p"
        assert "requirements" in await refused(
            client, "create_project", {"name": "p", "requirements": []}
        )
        assert "project_id" in await refused(client, "get_project", {"project_id": 7})

        read = await call(client, "read_file", {"path": "auth.log"})
        assert "10.0.0.7" in json.dumps(read)
        assert "path" in await refused(client, "read_file", {})
        assert "outside" in (await refused(client, "read_file", {"path": "/etc/passwd"}))
        assert "url" in await refused(client, "http_request", {"method": "GET"})
        assert "no_such_tool" in await refused(client, "no_such_tool", {})


async def _ended(client: Client, task_id: str) -> dict[str, Any] | None:
    task = await call(client, "get_task", {"task_id": task_id})
    return task if task["status"] in ("completed", "failed", "cancelled", "timed_out") else None


async def test_resources_read_by_uri(mcp_system: HttpSystem) -> None:
    async with connect(mcp_system) as client:
        templates = {
            t.uri_template for t in (await client.list_resource_templates()).resource_templates
        }
        assert "discovery://agents/{agent_id}/discoveries/{id}" in templates
        agent = f"mcp-{uuid.uuid4().hex[:8]}"
        shared = await call(
            client,
            "share_discovery",
            {"agent_id": agent, "type": "pattern", "content": "read me", "confidence": 0.5},
        )
        task = await call(client, "submit_task", {"title": "r", "required_capabilities": ["echo"]})
        project = await call(client, "create_project", {"name": "r", "requirements": ["y"]})

        async def body(uri: str) -> Any:
            result = await client.read_resource(uri, cache_mode="bypass")
            return json.loads(result.contents[0].text)  # type: ignore[union-attr]

        one = f"discovery://agents/{agent}/discoveries/{shared['id']}"
        assert (await body(one))["content"] == "read me"
        items = (await body(f"discovery://agents/{agent}/discoveries"))["items"]
        assert [d["id"] for d in items] == [shared["id"]]
        assert (await body(f"task://{task['id']}"))["title"] == "r"
        assert (await body(f"project://{project['id']}"))["id"] == project["id"]
        for bad in ("foo://bar", f"discovery://agents/other/discoveries/{shared['id']}"):
            with pytest.raises(MCPError) as error:
                await client.read_resource(bad, cache_mode="bypass")
            assert bad in error.value.message


async def test_listen_hears_a_discovery_an_agent_shares(mcp_system: HttpSystem) -> None:
    """2026-07-28 (the SDK's default): `subscriptions/listen` on an agent's collection; the
    echo agent shares a discovery as a task asks it to."""
    async with connect(mcp_system) as client:
        agents = (await call(client, "list_agents", {"capability": "echo"}))["agents"]
        uris = [f"discovery://agents/{a['id']}/discoveries" for a in agents]
        async with client.listen(resource_subscriptions=uris) as subscription:
            discover = {"type": "pattern", "content": "seen by echo", "confidence": 0.8}
            task = await call(
                client,
                "submit_task",
                {
                    "title": "d",
                    "required_capabilities": ["echo"],
                    "parameters": {"discover": discover},
                },
            )
            with anyio.fail_after(30):
                event = await subscription.__anext__()
        assert event.uri in uris
        items = json.loads(
            (await client.read_resource(event.uri, cache_mode="bypass")).contents[0].text
        )  # type: ignore[union-attr]
        assert any(d["task_id"] == task["id"] for d in items["items"])


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
async def test_subscribe_resumes_after_the_last_sequence_seen_on_a_new_replica(
    mcp_system: HttpSystem,
) -> None:
    """Handshake era: `resources/subscribe`, updates on the session's stream with their
    JetStream sequence. The ingress replica is killed; a new session on its replacement
    resumes after the last sequence seen: what was shared before and after is heard."""
    agent = f"scout-{uuid.uuid4().hex[:8]}"
    uri = f"discovery://agents/{agent}/discoveries"
    heard: list[tuple[str, int]] = []

    async def handler(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            meta = message.params.model_dump(by_alias=True).get("_meta") or {}
            heard.append((message.params.uri, meta.get(SEQ_META)))

    with mcp_system.raw() as rest:

        def share(content: str) -> None:
            response = rest.post(
                "/api/v1/discoveries",
                headers={"Authorization": f"Bearer {mcp_system.keys['write']}"},
                json={"agent_id": agent, "type": "pattern", "content": content, "confidence": 0.6},
            )
            assert response.status_code == 201, response.text

        async with connect(mcp_system, "read", mode="legacy", message_handler=handler) as client:
            assert client.server_capabilities.resources.subscribe  # type: ignore[union-attr]
            await client.session.subscribe_resource(uri)
            await anyio.to_thread.run_sync(share, "first")
            await wait_for(lambda: heard, timeout_s=20)
        ((first_uri, last_seq),) = heard
        assert first_uri == uri and isinstance(last_seq, int)
        await anyio.to_thread.run_sync(share, "second")  # while no one listens
        killed = _kill_ingress_replica()
        await wait_for(lambda: _replaced(killed, rest), timeout_s=60, interval_s=0.2)
        await anyio.to_thread.run_sync(share, "third")
        heard.clear()
        async with connect(mcp_system, "read", mode="legacy", message_handler=handler) as client:
            await client.session.subscribe_resource(uri, meta={AFTER_META: last_seq})
            await wait_for(lambda: len(heard) >= 2, timeout_s=20)
        assert [u for u, _ in heard] == [uri, uri]
        assert all(seq > last_seq for _, seq in heard)


def _ingress_replicas() -> set[str]:
    import ray

    return {
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith("SERVE_REPLICA::rayvisor#ingress#")
    }


def _kill_ingress_replica() -> str:
    import ray

    (name,) = _ingress_replicas()
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    return name


def _replaced(killed: str, rest: httpx.Client) -> bool:
    """A replica other than `killed` runs and answers."""
    if not (_ingress_replicas() - {killed}):
        return False
    with contextlib.suppress(httpx.HTTPError):
        return rest.get("/healthz").status_code == 200
    return False


async def test_a_read_key_may_not_write(mcp_system: HttpSystem) -> None:
    async with connect(mcp_system, "read") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names >= READING and not (names & (WRITING | {"read_file"}))
        message = await refused(client, "submit_task", {"title": "no", "required_capabilities": []})
        assert "write" in message and "submit_task" in message
        await call(client, "list_agents")
        with pytest.raises(MCPError) as error:
            await client.read_resource("nothing://here")
        assert "nothing://here" in error.value.message
    response = httpx.post(
        f"{mcp_system.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
    )
    assert response.status_code == 401
    assert "API key" in response.json()["detail"]
