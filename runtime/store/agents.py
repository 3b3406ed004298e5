"""Agents: templates, the agents made from them, their specializations and state history.

Guarantees:
- An agent's state changes only through `record_transition`, which checks the change
  against `runtime.state_machines.AGENT_TRANSITIONS` and the row's current state, then writes the
  `agent_events` row, the new `agents.state` and the events to the outbox in one
  transaction. A refused transition raises and writes nothing.
- `upsert_agent` never touches what the agent accumulated (state, saved state, restart
  count), so re-registering a restarted agent keeps its history and its saved state.
- `proficiency` (a `real` column) is read back as the value written, not its float32 image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from runtime.errors import Conflict, NotFound
from runtime.models.enums import AgentState
from runtime.models.events import Event
from runtime.models.records import AgentEvent, AgentRecord, AgentSpecialization, AgentTemplate
from runtime.state_machines import check_agent_transition
from runtime.store import outbox
from runtime.store._tx import Conn, atomic

__all__ = [
    "add_specialization",
    "create_template",
    "delete_agent",
    "get_agent",
    "get_template",
    "get_template_by_name",
    "history",
    "increment_restarts",
    "list_agents",
    "list_templates",
    "load_state",
    "record_path",
    "record_transition",
    "save_state",
    "specializations",
    "upsert_agent",
    "upsert_template",
]

_TEMPLATE_COLUMNS = (
    "id",
    "name",
    "class_path",
    "capabilities",
    "parameters",
    "description",
    "model",
    "resources",
    "source",
    "created_at",
    "updated_at",
)
_AGENT_COLUMNS = (
    "id",
    "template_id",
    "name",
    "capabilities",
    "state",
    "state_detail",
    "saved_state",
    "supervisor_id",
    "restart_count",
    "created_at",
    "updated_at",
    "last_active_at",
)
# real -> text -> float8: the shortest decimal that is this float32, i.e. the value written.
_SPECIALIZATION = "agent_id, capability, proficiency::text::float8 AS proficiency, created_at"


def _placeholders(count: int) -> str:
    return ", ".join(f"${n}" for n in range(1, count + 1))


# Templates


async def upsert_template(conn: Conn, template: AgentTemplate) -> AgentTemplate | None:
    """Create the template, or update the one of the same name (keeping its id) unless the
    API made that one; None when it is left as it is."""
    row = await conn.fetchrow(
        f"INSERT INTO agent_templates ({', '.join(_TEMPLATE_COLUMNS)})"
        f" VALUES ({_placeholders(len(_TEMPLATE_COLUMNS))})"
        " ON CONFLICT (name) DO UPDATE SET class_path = EXCLUDED.class_path,"
        " capabilities = EXCLUDED.capabilities, parameters = EXCLUDED.parameters,"
        " description = EXCLUDED.description, updated_at = now()"
        " WHERE agent_templates.source = 'pool' AND EXCLUDED.source = 'pool'"
        " RETURNING *",
        *(getattr(template, column) for column in _TEMPLATE_COLUMNS),
    )
    return AgentTemplate.from_row(row) if row else None


async def create_template(conn: Conn, template: AgentTemplate) -> AgentTemplate | None:
    """Create the template; None if one of that name exists (it is left as it is)."""
    row = await conn.fetchrow(
        f"INSERT INTO agent_templates ({', '.join(_TEMPLATE_COLUMNS)})"
        f" VALUES ({_placeholders(len(_TEMPLATE_COLUMNS))})"
        " ON CONFLICT (name) DO NOTHING RETURNING *",
        *(getattr(template, column) for column in _TEMPLATE_COLUMNS),
    )
    return AgentTemplate.from_row(row) if row else None


async def get_template(conn: Conn, id: UUID) -> AgentTemplate | None:
    row = await conn.fetchrow("SELECT * FROM agent_templates WHERE id = $1", id)
    return AgentTemplate.from_row(row) if row else None


async def get_template_by_name(conn: Conn, name: str) -> AgentTemplate | None:
    row = await conn.fetchrow("SELECT * FROM agent_templates WHERE name = $1", name)
    return AgentTemplate.from_row(row) if row else None


async def list_templates(conn: Conn) -> list[AgentTemplate]:
    rows = await conn.fetch("SELECT * FROM agent_templates ORDER BY name")
    return [AgentTemplate.from_row(row) for row in rows]


# Agents


async def upsert_agent(conn: Conn, record: AgentRecord) -> AgentRecord:
    """Register an agent, or update its description (template, name, capabilities,
    supervisor) if it exists; its state, saved state and restart count are left as they are.
    """
    row = await conn.fetchrow(
        f"INSERT INTO agents ({', '.join(_AGENT_COLUMNS)})"
        f" VALUES ({_placeholders(len(_AGENT_COLUMNS))})"
        " ON CONFLICT (id) DO UPDATE SET template_id = EXCLUDED.template_id,"
        " name = EXCLUDED.name, capabilities = EXCLUDED.capabilities,"
        " supervisor_id = EXCLUDED.supervisor_id, updated_at = now()"
        " RETURNING *",
        *(getattr(record, column) for column in _AGENT_COLUMNS),
    )
    return AgentRecord.from_row(row)


async def get_agent(conn: Conn, agent_id: str) -> AgentRecord | None:
    row = await conn.fetchrow("SELECT * FROM agents WHERE id = $1", agent_id)
    return AgentRecord.from_row(row) if row else None


async def list_agents(
    conn: Conn, state: AgentState | str | None = None, capability: str | None = None
) -> list[AgentRecord]:
    """Agents by id; `capability` matches their own capabilities or a specialization."""
    where, args = [], []
    if state is not None:
        args.append(AgentState(state))
        where.append(f"state = ${len(args)}")
    if capability is not None:
        args.append(capability)
        n = len(args)
        where.append(
            f"(capabilities @> ARRAY[${n}]::text[] OR EXISTS (SELECT 1 FROM"
            f" agent_specializations s WHERE s.agent_id = agents.id AND s.capability = ${n}))"
        )
    rows = await conn.fetch(
        "SELECT * FROM agents"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY id",
        *args,
    )
    return [AgentRecord.from_row(row) for row in rows]


async def delete_agent(conn: Conn, agent_id: str) -> bool:
    """Forget an agent with its events and specializations; False if there was none."""
    status = await conn.execute("DELETE FROM agents WHERE id = $1", agent_id)
    return status == "DELETE 1"


# State history


async def record_transition(
    conn: Conn,
    agent_id: str,
    from_state: AgentState | str,
    to_state: AgentState | str,
    reason: str = "",
    detail: dict[str, Any] | None = None,
    events: Sequence[Event] = (),
) -> AgentEvent:
    """Move an agent from `from_state` to `to_state`, recording why, with its events.

    Raises `InvalidTransition` if the state machine forbids the change, `Conflict` if the
    agent is not in `from_state` any more, `NotFound` if there is no such agent row (creating
    it is `upsert_agent`'s job). In each case nothing is written.
    """
    to_state = check_agent_transition(from_state, to_state)
    from_state = AgentState(from_state)
    detail = dict(detail or {})
    async with atomic(conn) as tx:
        current = await tx.fetchval("SELECT state FROM agents WHERE id = $1 FOR UPDATE", agent_id)
        if current is None:
            raise NotFound(f"no agent {agent_id!r}")
        if current != from_state:
            raise Conflict(f"agent {agent_id!r} is {current!r}, not {from_state.value!r}")
        row = await tx.fetchrow(
            "INSERT INTO agent_events (agent_id, from_state, to_state, reason, detail)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING *",
            agent_id,
            from_state,
            to_state,
            reason,
            detail,
        )
        await tx.execute(
            "UPDATE agents SET state = $2, state_detail = $3, updated_at = now(),"
            " last_active_at = now() WHERE id = $1",
            agent_id,
            to_state,
            detail,
        )
        await outbox.add(tx, events)
    return AgentEvent.from_row(row)


async def record_path(
    conn: Conn,
    agent_id: str,
    from_state: AgentState | str,
    steps: Sequence[tuple[AgentState | str, str]],
    events: Sequence[Event] = (),
) -> None:
    """Move an agent from `from_state` along `steps` (`(to_state, reason)` each), writing
    what `record_transition` would write step by step, with `events`, in one transaction.

    Why: an agent starting after a crash takes four steps (`-> error -> starting ->
    running -> idle`); one statement for all of them, instead of three per step, keeps
    a restart's registration at a few round trips to PostgreSQL. Raises like
    `record_transition` (the first refused step refuses the whole path).
    """
    states = [AgentState(from_state)]
    for to_state, _ in steps:
        states.append(check_agent_transition(states[-1], to_state))
    if not steps:
        return
    async with atomic(conn) as tx:
        moved = await tx.fetchval(
            "WITH current AS (SELECT id FROM agents WHERE id = $1 AND state = $2 FOR UPDATE),"
            " written AS (INSERT INTO agent_events (agent_id, from_state, to_state, reason,"
            " detail) SELECT $1, f, t, r, '{}'::jsonb FROM unnest($3::text[], $4::text[],"
            " $5::text[]) WITH ORDINALITY AS s(f, t, r, n) WHERE EXISTS (SELECT 1 FROM"
            " current) ORDER BY n RETURNING id)"
            " UPDATE agents SET state = $6, state_detail = '{}'::jsonb, updated_at = now(),"
            " last_active_at = now() WHERE id IN (SELECT id FROM current)"
            " RETURNING (SELECT count(*) FROM written)",
            agent_id,
            states[0],
            [state.value for state in states[:-1]],
            [state.value for state in states[1:]],
            [reason for _, reason in steps],
            states[-1],
        )
        if moved is None:
            current = await tx.fetchval("SELECT state FROM agents WHERE id = $1", agent_id)
            if current is None:
                raise NotFound(f"no agent {agent_id!r}")
            raise Conflict(f"agent {agent_id!r} is {current!r}, not {states[0].value!r}")
        await outbox.add(tx, events)


async def history(conn: Conn, agent_id: str, limit: int = 100) -> list[AgentEvent]:
    """The agent's latest `limit` transitions, oldest first (the order to fold them in)."""
    rows = await conn.fetch(
        "SELECT * FROM (SELECT * FROM agent_events WHERE agent_id = $1"
        " ORDER BY id DESC LIMIT $2) AS latest ORDER BY id",
        agent_id,
        limit,
    )
    return [AgentEvent.from_row(row) for row in rows]


# Durable state and counters


async def save_state(conn: Conn, agent_id: str, state: dict[str, Any]) -> bool:
    """Keep the agent's state for its next incarnation; False if there is no such agent."""
    status = await conn.execute(
        "UPDATE agents SET saved_state = $2, updated_at = now() WHERE id = $1", agent_id, state
    )
    return status == "UPDATE 1"


async def load_state(conn: Conn, agent_id: str) -> dict[str, Any] | None:
    """The state last saved, or None if none was (or there is no such agent)."""
    return await conn.fetchval("SELECT saved_state FROM agents WHERE id = $1", agent_id)


async def increment_restarts(conn: Conn, agent_id: str) -> int | None:
    """Count one more restart; the new count, or None if there is no such agent."""
    return await conn.fetchval(
        "UPDATE agents SET restart_count = restart_count + 1, updated_at = now()"
        " WHERE id = $1 RETURNING restart_count",
        agent_id,
    )


# Specializations


async def add_specialization(
    conn: Conn, agent_id: str, capability: str, proficiency: float = 1.0
) -> AgentSpecialization:
    """Give an agent an extra capability, or change its proficiency in one it has."""
    spec = AgentSpecialization(agent_id=agent_id, capability=capability, proficiency=proficiency)
    row = await conn.fetchrow(
        "INSERT INTO agent_specializations (agent_id, capability, proficiency, created_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (agent_id, capability)"
        " DO UPDATE SET proficiency = EXCLUDED.proficiency"
        f" RETURNING {_SPECIALIZATION}",
        spec.agent_id,
        spec.capability,
        spec.proficiency,
        spec.created_at,
    )
    return AgentSpecialization.from_row(row)


async def specializations(conn: Conn, agent_id: str) -> list[AgentSpecialization]:
    rows = await conn.fetch(
        f"SELECT {_SPECIALIZATION} FROM agent_specializations WHERE agent_id = $1"
        " ORDER BY created_at, capability",
        agent_id,
    )
    return [AgentSpecialization.from_row(row) for row in rows]
