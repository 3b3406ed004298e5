"""The agents repository: templates, validated transitions, durable state, specializations."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from runtime.errors import Conflict, NotFound
from runtime.models.enums import AgentState
from runtime.models.events import AgentStatusChanged
from runtime.models.records import AgentRecord, AgentTemplate
from runtime.state_machines import InvalidTransition, fold_agent_events
from runtime.store import agents

pytestmark = pytest.mark.integration


async def in_outbox(pool: asyncpg.Pool, event_id: uuid.UUID) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", event_id)


async def new_agent(pool: asyncpg.Pool, **fields) -> AgentRecord:
    agent_id = f"agent-{uuid.uuid4().hex[:12]}"
    return await agents.upsert_agent(pool, AgentRecord(id=agent_id, name=agent_id, **fields))


async def event_count(pool: asyncpg.Pool, agent_id: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM agent_events WHERE agent_id = $1", agent_id)


async def test_upsert_template_by_name_keeps_its_id(pool: asyncpg.Pool) -> None:
    name = f"tpl_{uuid.uuid4().hex[:8]}"
    first = await agents.upsert_template(
        pool, AgentTemplate(name=name, class_path="a.B", capabilities=["x"])
    )
    second = await agents.upsert_template(
        pool,
        AgentTemplate(name=name, class_path="a.C", capabilities=["y"], parameters={"n": 2}),
    )
    assert second.id == first.id
    assert (second.class_path, second.capabilities, second.parameters) == ("a.C", ["y"], {"n": 2})
    assert await agents.get_template_by_name(pool, name) == second
    assert await agents.get_template(pool, first.id) == second
    assert await agents.get_template_by_name(pool, "no_such_template") is None
    assert name in {t.name for t in await agents.list_templates(pool)}


async def test_upsert_agent_keeps_state_saved_state_and_restarts(pool: asyncpg.Pool) -> None:
    agent = await new_agent(pool, capabilities=["a"])
    await agents.record_transition(pool, agent.id, "created", "starting")
    await agents.save_state(pool, agent.id, {"cursor": 7})
    await agents.increment_restarts(pool, agent.id)
    again = await agents.upsert_agent(
        pool, AgentRecord(id=agent.id, name="renamed", capabilities=["a", "b"])
    )
    assert (again.name, again.capabilities) == ("renamed", ["a", "b"])
    assert again.state == AgentState.STARTING
    assert again.saved_state == {"cursor": 7}
    assert again.restart_count == 1
    assert again.created_at == agent.created_at


async def test_transitions_are_recorded_with_their_events(pool: asyncpg.Pool) -> None:
    agent = await new_agent(pool)
    path = [AgentState.STARTING, AgentState.RUNNING, AgentState.IDLE, AgentState.BUSY]
    state = AgentState.CREATED
    events = []
    for target in path:
        event = AgentStatusChanged(agent_id=agent.id, from_state=state, to_state=target)
        recorded = await agents.record_transition(
            pool, agent.id, state, target, reason="test", detail={"n": len(events)}, events=[event]
        )
        assert (recorded.from_state, recorded.to_state) == (state, target)
        events.append(event)
        state = target
    stored = await agents.get_agent(pool, agent.id)
    assert stored.state == AgentState.BUSY
    assert stored.state_detail == {"n": 3}
    assert stored.last_active_at is not None
    history = await agents.history(pool, agent.id)
    assert [e.to_state for e in history] == path
    assert fold_agent_events(e.to_state for e in history) == stored.state
    assert [e.to_state for e in await agents.history(pool, agent.id, limit=2)] == path[-2:]
    for event in events:
        assert await in_outbox(pool, event.event_id) == 1


async def test_invalid_transition_writes_nothing(pool: asyncpg.Pool) -> None:
    agent = await new_agent(pool)
    event = AgentStatusChanged(agent_id=agent.id, to_state=AgentState.BUSY)
    with pytest.raises(InvalidTransition):
        await agents.record_transition(pool, agent.id, "created", "busy", events=[event])
    assert await event_count(pool, agent.id) == 0
    assert (await agents.get_agent(pool, agent.id)).state == AgentState.CREATED
    assert await in_outbox(pool, event.event_id) == 0


async def test_transition_from_a_state_the_agent_is_not_in_writes_nothing(
    pool: asyncpg.Pool,
) -> None:
    agent = await new_agent(pool)
    event = AgentStatusChanged(agent_id=agent.id, to_state=AgentState.IDLE)
    with pytest.raises(Conflict, match="created"):
        await agents.record_transition(pool, agent.id, "running", "idle", events=[event])
    assert await event_count(pool, agent.id) == 0
    assert (await agents.get_agent(pool, agent.id)).state == AgentState.CREATED
    assert await in_outbox(pool, event.event_id) == 0
    with pytest.raises(NotFound):
        await agents.record_transition(pool, "no-such-agent", "created", "starting")


async def test_a_path_is_recorded_as_its_steps_would_be(pool: asyncpg.Pool) -> None:
    agent = await new_agent(pool)
    steps = [(AgentState.STARTING, "boot"), (AgentState.RUNNING, ""), (AgentState.IDLE, "")]
    event = AgentStatusChanged(agent_id=agent.id, to_state=AgentState.IDLE)
    await agents.record_path(pool, agent.id, "created", steps, events=[event])
    history = await agents.history(pool, agent.id)
    assert [(e.from_state, e.to_state, e.reason) for e in history] == [
        (AgentState.CREATED, AgentState.STARTING, "boot"),
        (AgentState.STARTING, AgentState.RUNNING, ""),
        (AgentState.RUNNING, AgentState.IDLE, ""),
    ]
    stored = await agents.get_agent(pool, agent.id)
    assert (stored.state, stored.state_detail) == (AgentState.IDLE, {})
    assert stored.last_active_at is not None
    assert await in_outbox(pool, event.event_id) == 1


async def test_a_refused_path_writes_nothing(pool: asyncpg.Pool) -> None:
    agent = await new_agent(pool)
    event = AgentStatusChanged(agent_id=agent.id, to_state=AgentState.IDLE)
    with pytest.raises(InvalidTransition):  # the second step is not allowed
        await agents.record_path(
            pool, agent.id, "created", [("starting", ""), ("busy", "")], events=[event]
        )
    with pytest.raises(Conflict, match="created"):
        await agents.record_path(pool, agent.id, "running", [("idle", "")], events=[event])
    with pytest.raises(NotFound):
        await agents.record_path(pool, "no-such-agent", "created", [("starting", "")])
    assert await event_count(pool, agent.id) == 0
    assert (await agents.get_agent(pool, agent.id)).state == AgentState.CREATED
    assert await in_outbox(pool, event.event_id) == 0


async def test_rolled_back_transition_leaves_neither_row_nor_event(pool: asyncpg.Pool) -> None:
    agent = await new_agent(pool)
    event = AgentStatusChanged(agent_id=agent.id, to_state=AgentState.STARTING)
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await agents.record_transition(conn, agent.id, "created", "starting", events=[event])
            raise RuntimeError("the caller's transaction fails")
    assert await event_count(pool, agent.id) == 0
    assert (await agents.get_agent(pool, agent.id)).state == AgentState.CREATED
    assert await in_outbox(pool, event.event_id) == 0


async def test_save_and_load_state_round_trip(pool: asyncpg.Pool) -> None:
    agent = await new_agent(pool)
    assert await agents.load_state(pool, agent.id) is None
    state = {"seen": ["a", "b"], "offset": 12, "nested": {"ok": True, "ratio": 0.5}}
    assert await agents.save_state(pool, agent.id, state)
    assert await agents.load_state(pool, agent.id) == state
    assert not await agents.save_state(pool, "no-such-agent", state)
    assert await agents.load_state(pool, "no-such-agent") is None


async def test_increment_restarts(pool: asyncpg.Pool) -> None:
    agent = await new_agent(pool)
    assert await agents.increment_restarts(pool, agent.id) == 1
    assert await agents.increment_restarts(pool, agent.id) == 2
    assert (await agents.get_agent(pool, agent.id)).restart_count == 2
    assert await agents.increment_restarts(pool, "no-such-agent") is None


async def test_specializations_and_listing_by_capability(pool: asyncpg.Pool) -> None:
    capability = f"cap_{uuid.uuid4().hex[:8]}"
    own = await new_agent(pool, capabilities=[capability])
    special = await new_agent(pool)
    await new_agent(pool, capabilities=["other"])
    added = await agents.add_specialization(pool, special.id, capability, proficiency=0.7)
    assert added.proficiency == 0.7
    await agents.add_specialization(pool, special.id, capability, proficiency=0.9)
    await agents.add_specialization(pool, special.id, "second")
    specs = await agents.specializations(pool, special.id)
    assert [(s.capability, s.proficiency) for s in specs] == [(capability, 0.9), ("second", 1.0)]
    found = await agents.list_agents(pool, capability=capability)
    assert [a.id for a in found] == sorted([own.id, special.id])
    await agents.record_transition(pool, own.id, "created", "starting")
    starting = await agents.list_agents(pool, state="starting", capability=capability)
    assert [a.id for a in starting] == [own.id]


async def test_delete_agent_takes_its_history_with_it(pool: asyncpg.Pool) -> None:
    agent = await new_agent(pool)
    await agents.record_transition(pool, agent.id, "created", "starting")
    await agents.add_specialization(pool, agent.id, "x")
    assert await agents.delete_agent(pool, agent.id)
    assert await agents.get_agent(pool, agent.id) is None
    assert await event_count(pool, agent.id) == 0
    assert await agents.specializations(pool, agent.id) == []
    assert not await agents.delete_agent(pool, agent.id)


async def test_a_pool_start_never_changes_a_template_made_over_the_api(pool) -> None:
    name = f"tpl_{uuid.uuid4().hex[:8]}"
    made = await agents.create_template(
        pool, AgentTemplate(name=name, class_path="a.B", capabilities=["triage"], source="api")
    )
    assert made is not None and made.source == "api"
    assert await agents.create_template(pool, AgentTemplate(name=name, class_path="a.C")) is None
    assert await agents.upsert_template(pool, AgentTemplate(name=name, class_path="a.C")) is None
    kept = await agents.get_template_by_name(pool, name)
    assert kept is not None and (kept.class_path, kept.capabilities) == ("a.B", ["triage"])
