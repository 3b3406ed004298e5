"""Agents: list and read (from PostgreSQL), spawn from a template and stop (through
the pool supervisor, so the tree keeps knowing them), and each agent's state history."""

from __future__ import annotations

from typing import Annotated

import ray
from fastapi import APIRouter, HTTPException, Path, Query
from ray.exceptions import RayError

from actors.tasks import NamedActor
from runtime.errors import Conflict
from runtime.models.api import AgentSpawn, AgentSpawned, SpecializationCreate
from runtime.models.common import AGENT_ID_PATTERN
from runtime.models.enums import AgentState, Scope
from runtime.models.records import AgentEvent, AgentRecord, AgentSpecialization
from runtime.store import agents as agent_store
from serve.auth import require
from serve.deps import SystemDep, bad_input
from serve.problems import Problem
from supervisors.tree import pool_actor_name, pool_supervisor_id, template_pool

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

AgentIdPath = Annotated[str, Path(pattern=AGENT_ID_PATTERN)]


def _pool(system: SystemDep, template: str) -> NamedActor | None:
    """The pool supervisor of `template`, or None if no pool runs it. A configured pool
    whose supervisor is not registered right now is being restarted: it is waited for."""
    name = pool_actor_name(template)
    try:
        ray.get_actor(name, namespace=system.settings.namespace)
    except ValueError:
        pools = (system.settings.tree or {}).get("pools") or []
        if not any(isinstance(p, dict) and p.get("id") == template for p in pools):
            return None
    return system.named(name)


async def _agent(system: SystemDep, agent_id: str) -> AgentRecord:
    record = await agent_store.get_agent(system.pool, agent_id)
    if record is None:
        raise HTTPException(404, f"no agent {agent_id}")
    return record


@router.get("", response_model=list[AgentRecord], dependencies=[require(Scope.READ)])
async def list_agents(
    system: SystemDep,
    state: AgentState | None = None,
    capability: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> list[AgentRecord]:
    return await agent_store.list_agents(system.pool, state=state, capability=capability)


@router.post("", status_code=201, response_model=AgentSpawned, dependencies=[require(Scope.WRITE)])
async def spawn_agent(body: AgentSpawn, system: SystemDep) -> AgentSpawned:
    """Start one more agent in the pool of `template`; it survives supervisor restarts."""
    pool = _pool(system, body.template)
    if pool is None:
        return await _spawn_pool(system, body.template)
    # not retried: a pool that died during the call may have added the member already
    agent_id = await pool.call(lambda sup: sup.start_child.remote(), retry=False)
    return AgentSpawned(
        agent_id=agent_id, template=body.template, supervisor_id=pool_supervisor_id(body.template)
    )


async def _spawn_pool(system: SystemDep, name: str) -> AgentSpawned:
    """A registered template no pool runs yet: a pool of one under `sup:agents` (persisted,
    so it is there again after a restart); the next spawns grow it."""
    template = await agent_store.get_template_by_name(system.pool, name)
    if template is None:
        raise bad_input("body.template", f"no pool runs and no template is named {name!r}")
    spec = template_pool(template, system.settings).model_dump(mode="json")
    try:
        pool_id = await system.named("sup:agents").call(
            lambda sup: sup.add_child.remote(spec), retry=False
        )
    except Conflict:  # made meanwhile by another request: grow it instead
        pool = system.named(pool_actor_name(name))
        agent_id = await pool.call(lambda sup: sup.start_child.remote(), retry=False)
        return AgentSpawned(
            agent_id=agent_id, template=name, supervisor_id=pool_supervisor_id(name)
        )
    pool = system.named(pool_actor_name(name))
    [member] = await pool.call(lambda sup: sup.which_children.remote())
    return AgentSpawned(agent_id=member["id"], template=name, supervisor_id=pool_id)


@router.get("/{agent_id}", response_model=AgentRecord, dependencies=[require(Scope.READ)])
async def get_agent(agent_id: AgentIdPath, system: SystemDep) -> AgentRecord:
    return await _agent(system, agent_id)


@router.delete(
    "/{agent_id}",
    status_code=204,
    dependencies=[require(Scope.WRITE)],
    responses={409: {"model": Problem}, 503: {"model": Problem}},
)
async def stop_agent(agent_id: AgentIdPath, system: SystemDep) -> None:
    """Stop an agent gracefully and remove it from its pool (it is not restarted)."""
    record = await _agent(system, agent_id)
    pool = await system.named("sup:agents").call(
        lambda sup: sup.child_handle.remote(record.supervisor_id or "")
    )
    if pool is None or not await pool.terminate_child.remote(agent_id):
        raise HTTPException(409, f"agent {agent_id} is not a running member of a pool")


@router.post(
    "/{agent_id}/specializations",
    status_code=201,
    response_model=list[AgentSpecialization],
    dependencies=[require(Scope.WRITE)],
)
async def add_specialization(
    agent_id: AgentIdPath, body: SpecializationCreate, system: SystemDep
) -> list[AgentSpecialization]:
    """Give one agent an extra capability; tasks needing it may go to the agent at once.
    The agent's specializations, all of them."""
    await _agent(system, agent_id)
    await agent_store.add_specialization(system.pool, agent_id, body.capability, body.proficiency)
    try:  # now, in matching; a host that is down reads it when it starts again
        host = ray.get_actor(f"agent:{agent_id}", namespace=system.settings.namespace)
        await host.specialize.remote()
    except (ValueError, RayError):
        pass
    return await agent_store.specializations(system.pool, agent_id)


@router.get(
    "/{agent_id}/specializations",
    response_model=list[AgentSpecialization],
    dependencies=[require(Scope.READ)],
)
async def list_specializations(
    agent_id: AgentIdPath, system: SystemDep
) -> list[AgentSpecialization]:
    await _agent(system, agent_id)
    return await agent_store.specializations(system.pool, agent_id)


@router.get(
    "/{agent_id}/events", response_model=list[AgentEvent], dependencies=[require(Scope.READ)]
)
async def agent_events(
    agent_id: AgentIdPath, system: SystemDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[AgentEvent]:
    """The agent's state transitions, oldest first (its state is their fold)."""
    await _agent(system, agent_id)
    return await agent_store.history(system.pool, agent_id, limit)
