"""Models of the catalog against an OpenAI-compatible server on loopback: a completion,
a 429 then success, a 500 storm that opens the breaker, refusals; every call a row; and
the `llm` agent running a task on real Ray."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
from helpers import wait_for
from openai_server import FakeOpenAI

from actors.tasks import TaskClient
from runtime.config import ModelSettings, load_settings
from runtime.errors import LogicalError
from runtime.llm import ModelClient, ModelError
from runtime.policies import CircuitState
from runtime.tools import RateLimited, ToolUnavailable
from supervisors.tree import tree_from_settings

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def endpoint() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


def client(pool: asyncpg.Pool, endpoint: FakeOpenAI, **limits: Any) -> ModelClient:
    settings = ModelSettings(base_url=endpoint.base_url, model="tiny", **limits)
    return ModelClient("tiny", settings, pool, f"agent-{uuid4().hex[:8]}")


async def calls(pool: asyncpg.Pool, agent_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT tool, status, error, input, output, duration_ms FROM tool_executions"
        " WHERE agent_id = $1 ORDER BY started_at, id",
        agent_id,
    )


async def test_a_completion_is_answered_and_recorded_with_its_tokens(pool, endpoint) -> None:
    model = client(pool, endpoint)
    answer = await model.chat(HELLO, max_tokens=20)
    assert answer["content"] == "echo: hello" and answer["attempts"] == 1
    assert answer["usage"]["completion_tokens"] == 2 and answer["usage"]["prompt_tokens"] > 0
    assert endpoint.requests[0]["max_tokens"] == 20 and endpoint.requests[0]["model"] == "tiny"
    [row] = await calls(pool, model.agent_id)
    assert (row["tool"], row["status"]) == ("model:tiny", "succeeded")
    assert row["input"]["messages"][0]["content"] == "hello"
    assert row["output"]["usage"] == answer["usage"] and row["duration_ms"] >= 0


async def test_a_429_then_success_is_retried_after_retry_after(pool, endpoint) -> None:
    endpoint.statuses = [429]
    model = client(pool, endpoint)
    answer = await model.chat(HELLO)
    assert answer["attempts"] == 2 and len(endpoint.requests) == 2
    assert [r["status"] for r in await calls(pool, model.agent_id)] == ["succeeded"]


async def test_a_500_storm_opens_the_breaker(pool, endpoint) -> None:
    endpoint.always = 500
    model = client(pool, endpoint, max_retries=1, failure_threshold=2, reset_timeout_s=60)
    for _ in range(2):
        with pytest.raises(ModelError, match=r"failed after 2 attempts"):
            await model.chat(HELLO)
    assert len(endpoint.requests) == 4 and model.circuit == CircuitState.OPEN.value
    with pytest.raises(ToolUnavailable, match="circuit open"):
        await model.chat(HELLO)
    assert len(endpoint.requests) == 4  # refused without calling the endpoint
    statuses = [r["status"] for r in await calls(pool, model.agent_id)]
    assert statuses == ["failed", "failed", "rejected"]


async def test_refusals_the_callers_mistakes_and_the_rate_limit(pool, endpoint) -> None:
    endpoint.statuses = [400]
    model = client(pool, endpoint, rate_per_s=0.01, burst=2, max_wait_s=0)
    with pytest.raises(LogicalError, match=r"refused the request \(400\)"):
        await model.chat(HELLO)
    assert len(endpoint.requests) == 1 and model.circuit == CircuitState.CLOSED.value
    with pytest.raises(LogicalError, match="invalid messages"):
        await model.chat([{"role": "wizard", "content": "hi"}])
    await model.chat(HELLO)
    with pytest.raises(RateLimited, match="rate limit"):
        await model.chat(HELLO)
    statuses = [r["status"] for r in await calls(pool, model.agent_id)]
    assert statuses == ["failed", "succeeded", "rejected"]


async def test_the_llm_agent_runs_a_prompt_through_the_catalog(tree, system_pool, endpoint) -> None:
    pool_id = tree.uid("llm").replace("-", "_")
    settings = load_settings(
        models={"tiny": {"base_url": endpoint.base_url, "model": "tiny-1"}},
        tree={
            "relay": False,
            "aggregator": False,
            "pools": [{"id": pool_id, "agent": "actors.builtin.llm:LlmAgent"}],
        },
    )
    await tree.start(tree_from_settings(settings))
    tasks = TaskClient(tree.namespaces[-1])
    await wait_for(lambda: _offered(tasks), timeout_s=90)
    task = await tasks.submit(
        title="ask the model", required_capabilities=["llm"],
        parameters={"prompt": "summarise the incident", "system": "be brief"},
    )  # fmt: skip
    done = await tasks.wait(task["id"], 60)
    assert done["status"] == "completed", done["error"]
    assert done["result"]["content"] == "echo: summarise the incident"
    assert endpoint.requests[-1]["messages"][0] == {"role": "system", "content": "be brief"}
    rows = await system_pool.fetch(
        "SELECT tool, status, agent_id, started_at FROM tool_executions WHERE task_id = $1",
        done["id"],
    )
    assert len(rows) == 1, (done["attempt"], done["attempt_errors"], [dict(r) for r in rows])
    assert (rows[0]["tool"], rows[0]["status"]) == ("model:tiny", "succeeded")
    bad = await tasks.submit(
        title="no prompt", required_capabilities=["llm"], parameters={"options": {}}
    )
    failed = await tasks.wait(bad["id"], 60)
    assert (
        failed["status"] == "failed"
        and "give exactly one of prompt or messages" in (failed["error"]["reason"])
    )


async def _offered(tasks: TaskClient) -> bool:
    return (await tasks.statistics())[0]["agents"] >= 1
