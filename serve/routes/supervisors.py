"""The live supervision tree and each supervisor's decisions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from runtime.models.enums import Scope
from runtime.models.records import SupervisorEvent
from runtime.redact import redact_value
from runtime.store import supervision
from serve.auth import require
from serve.deps import SystemDep
from serve.problems import Problem
from serve.system import System

router = APIRouter(prefix="/api/v1/supervisors", tags=["supervisors"])


@router.get(
    "/tree",
    response_model=dict[str, Any],
    dependencies=[require(Scope.READ)],
    responses={503: {"model": Problem}},
)
async def tree(system: SystemDep) -> dict[str, Any]:
    """Every node: id, kind, strategy, state, restarts, breaker, Ray actor id, node, pid."""
    return await snapshot(system)


async def snapshot(system: System) -> dict[str, Any]:
    """The live tree (the route's and the MCP tool `get_tree`'s); 503 if none runs."""
    if system.root() is None:
        raise HTTPException(
            503, f"no supervision tree runs in namespace {system.settings.namespace}"
        )
    # Ray restarts the root in place: a snapshot cut by that is asked again
    snapshot = await system.root_actor.call(lambda root: root.snapshot.remote())
    return redact_value(snapshot)  # what a child reports shows no key nor URL password


@router.get(
    "/{supervisor_id}/events",
    response_model=list[SupervisorEvent],
    dependencies=[require(Scope.READ)],
)
async def events(
    supervisor_id: Annotated[str, Path(min_length=1, max_length=200)],
    system: SystemDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[SupervisorEvent]:
    """The supervisor's decisions (child_started, restarted, circuit_opened, ...), oldest first."""
    return await supervision.list_events(system.pool, supervisor_id=supervisor_id, limit=limit)
