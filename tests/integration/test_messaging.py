"""ask and tell between agents on real Ray, PostgreSQL and NATS: round trips by id and by
capability, a timeout, a target SIGKILLed mid-ask that answers after its restart, the
`messages` rows and events of each, and the mistakes an asker can make."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from helpers import child_pid, wait_for

from actors.agent import AgentContext
from actors.tasks import TaskClient
from runtime.bus import Bus
from runtime.config import load_settings
from runtime.errors import LogicalError
from supervisors.tree import tree_from_settings

pytestmark = pytest.mark.integration

ECHO = "actors.builtin.echo:EchoAgent"


@pytest.fixture(scope="module")
async def system(module_tree, system_pool: asyncpg.Pool) -> tuple[TaskClient, str, str]:
    """An asker (an echo agent with capability `asker`) and an answerer (`echo`), shared
    by the module's tests: each reads the messages sent since it began (`since`)."""
    tree = module_tree
    asker_pool, answer_pool = (
        tree.uid("asker").replace("-", "_"),
        tree.uid("answer").replace("-", "_"),
    )
    settings = load_settings(
        tree={
            "relay": False,
            "aggregator": False,
            "pools": [
                {"id": asker_pool, "agent": ECHO, "params": {"capabilities": ["asker"]}},
                {"id": answer_pool, "agent": ECHO},
            ],
        }
    )
    await tree.start(tree_from_settings(settings))
    client = TaskClient(tree.namespaces[-1])
    asker = asker_pool.replace("_", "-") + "-1"
    answerer = answer_pool.replace("_", "-") + "-1"
    await wait_for(lambda: _live(system_pool, [asker, answerer]), timeout_s=90)
    return client, asker, answerer


async def _live(pool: asyncpg.Pool, ids: list[str]) -> bool:
    states = await pool.fetch("SELECT state FROM agents WHERE id = ANY($1::text[])", ids)
    return len(states) == len(ids) and all(r["state"] in ("idle", "busy") for r in states)


@pytest.fixture
async def since(system_pool: asyncpg.Pool) -> datetime:
    """When the test began, by the database's clock (messages are stamped by it)."""
    return await system_pool.fetchval("SELECT clock_timestamp()")


async def messages_from(pool: asyncpg.Pool, sender: str, since: datetime) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM messages WHERE sender = $1 AND created_at >= $2 ORDER BY created_at, id",
        sender,
        since,
    )


async def ask_task(client: TaskClient, ask: dict[str, Any], **task: Any) -> dict[str, Any]:
    return await client.submit(
        title="ask", required_capabilities=["asker"], parameters={"ask": ask}, **task
    )


async def test_ask_by_id_round_trip_with_its_rows_and_events(system, system_pool, since) -> None:
    client, asker, answerer = system
    task = await ask_task(client, {"to": answerer, "payload": {"question": "which ip?"}})
    done = await client.wait(task["id"], 60)
    assert done["status"] == "completed", done["error"]
    answer = done["result"]["answer"]
    assert answer["echo"] == {"question": "which ip?"} and answer["agent"] == answerer

    [request] = await messages_from(system_pool, asker, since)
    assert (request["recipient"], request["kind"], request["status"]) == (
        answerer, "request", "answered"
    )  # fmt: skip
    assert request["finished_at"] is not None and request["duration_ms"] >= 0
    [response] = await messages_from(system_pool, answerer, since)
    assert response["correlation_id"] == request["id"] and response["kind"] == "response"
    assert response["recipient"] == asker
    subjects = await system_pool.fetch(
        "SELECT subject, payload->>'status' AS status FROM outbox"
        " WHERE payload->>'message_id' = ANY($1::text[]) ORDER BY seq",
        [str(request["id"]), str(response["id"])],
    )
    assert [(r["subject"], r["status"]) for r in subjects] == [
        (f"messages.{answerer}.request", "sent"),
        (f"messages.{answerer}.request", "answered"),
        (f"messages.{asker}.response", "sent"),
    ]


async def test_ask_by_capability_and_tell(system, system_pool, since) -> None:
    client, asker, answerer = system
    task = await ask_task(client, {"to": "echo", "payload": {"n": 1}})
    done = await client.wait(task["id"], 60)
    assert done["status"] == "completed", done["error"]
    assert done["result"]["answer"]["agent"] == answerer  # the only live agent offering it

    told = await client.submit(
        title="tell", required_capabilities=["asker"],
        parameters={"tell": {"to": answerer, "payload": {"note": "fyi"}}},
    )  # fmt: skip
    assert (await client.wait(told["id"], 60))["status"] == "completed"
    notification = (await messages_from(system_pool, asker, since))[-1]
    assert notification["kind"] == "notification" and notification["status"] == "delivered"


async def test_ask_past_its_timeout_fails_naming_the_target_and_the_wait(
    system, system_pool, since
) -> None:
    client, asker, answerer = system
    ask = {"to": answerer, "payload": {"sleep_s": 5}, "timeout_s": 1}
    task = await ask_task(client, ask, max_attempts=1)
    done = await client.wait(task["id"], 60)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "AskTimeout" and done["error"]["category"] == "transient"
    assert f"ask to {answerer}: no answer within 1." in done["error"]["reason"]
    [request] = await messages_from(system_pool, asker, since)
    assert request["status"] == "timed_out" and "no answer" in request["error"]


async def test_a_target_killed_mid_ask_answers_after_its_restart(
    system, system_pool, since
) -> None:
    client, asker, answerer = system
    first_pid = await child_pid(system_pool, answerer)
    task = await ask_task(client, {"to": answerer, "payload": {"sleep_s": 2}, "timeout_s": 90})
    await wait_for(lambda: messages_from(system_pool, asker, since), timeout_s=30)
    os.kill(first_pid, signal.SIGKILL)
    done = await client.wait(task["id"], 120)
    assert done["status"] == "completed", done["error"]
    assert done["attempt"] == 1  # the asker's task was not retried: the ask went on
    assert done["result"]["answer"]["pid"] != first_pid
    [request] = await messages_from(system_pool, asker, since)
    assert request["status"] == "answered"


async def test_a_failing_answer_reaches_the_asker_with_its_category(system, system_pool) -> None:
    client, _, answerer = system
    task = await ask_task(client, {"to": answerer, "payload": {"fail": "logical"}})
    done = await client.wait(task["id"], 60)
    assert done["status"] == "failed" and done["attempt"] == 1
    assert done["error"]["category"] == "logical"
    assert "its handler failed: asked to fail (logical)" in done["error"]["reason"]


async def test_asking_itself_an_unknown_target_or_not_json_is_a_logical_error(
    services, system_pool, since
) -> None:
    bus = await Bus.connect(services.nats_url, name="asker")
    try:
        ctx = AgentContext(f"lonely-{uuid.uuid4().hex[:6]}", pool=system_pool, bus=bus)
        with pytest.raises(LogicalError, match=r"cannot ask itself"):
            await ctx.ask(ctx.agent_id, {})
        with pytest.raises(LogicalError, match=r"no agent has the id or offers the capability"):
            await ctx.ask("nobody-offers-this", {})
        with pytest.raises(LogicalError, match=r"not JSON-serialisable"):
            await ctx.ask("echo", {"when": object()})
        with pytest.raises(LogicalError, match=r"payload must be a JSON object"):
            await ctx.tell("echo", ["a", "list"])  # type: ignore[arg-type]
        with pytest.raises(LogicalError, match=r"timeout_s must be in"):
            await ctx.ask("echo", {}, timeout_s=0)
    finally:
        await bus.close()
    assert await messages_from(system_pool, ctx.agent_id, since) == []  # nothing was sent
