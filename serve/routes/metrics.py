"""`GET /api/v1/metrics/system`: the seed MS-1 aggregate in one call."""

from __future__ import annotations

import time

import psutil
from fastapi import APIRouter
from pydantic import BaseModel

from runtime.models.enums import Scope
from runtime.store import tasks as task_store
from runtime.store.outbox import pending_count
from serve.auth import require
from serve.deps import SystemDep

router = APIRouter(prefix="/api/v1/metrics", tags=["metrics"])


class AgentFigures(BaseModel):
    total: int
    idle: int
    busy: int
    by_state: dict[str, int]


class NatsFigures(BaseModel):
    connected: bool
    in_msgs: int
    out_msgs: int
    in_bytes: int
    out_bytes: int
    reconnects: int
    in_msgs_per_s: float
    out_msgs_per_s: float
    """Averages over this replica's life."""


class ProcessFigures(BaseModel):
    cpu_percent: float
    """The host's CPU use since the previous call."""
    memory_percent: float
    replica_rss_bytes: int


class SystemMetrics(BaseModel):
    agents: AgentFigures
    tasks: dict[str, int]
    restarts: int
    """Restarts decided by every supervisor, ever."""
    outbox_pending: int
    nats: NatsFigures
    host: ProcessFigures
    uptime_s: float
    """This replica's."""


@router.get("/system", response_model=SystemMetrics, dependencies=[require(Scope.READ)])
async def system_metrics(system: SystemDep) -> SystemMetrics:
    rows = await system.pool.fetch("SELECT state, count(*) AS n FROM agents GROUP BY state")
    by_state = {row["state"]: row["n"] for row in rows}
    restarts = await system.pool.fetchval(
        "SELECT count(*) FROM supervisor_events WHERE event = 'restarted'"
    )
    uptime = max(time.monotonic() - system.started_at, 1e-3)
    stats = system.bus.nc.stats
    return SystemMetrics(
        agents=AgentFigures(
            total=sum(by_state.values()),
            idle=by_state.get("idle", 0),
            busy=by_state.get("busy", 0),
            by_state=by_state,
        ),
        tasks=await task_store.counts_by_status(system.pool),
        restarts=restarts,
        outbox_pending=await pending_count(system.pool),
        nats=NatsFigures(
            connected=system.bus.nc.is_connected,
            in_msgs=stats["in_msgs"],
            out_msgs=stats["out_msgs"],
            in_bytes=stats["in_bytes"],
            out_bytes=stats["out_bytes"],
            reconnects=stats["reconnects"],
            in_msgs_per_s=round(stats["in_msgs"] / uptime, 3),
            out_msgs_per_s=round(stats["out_msgs"] / uptime, 3),
        ),
        host=ProcessFigures(
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_percent=psutil.virtual_memory().percent,
            replica_rss_bytes=psutil.Process().memory_info().rss,
        ),
        uptime_s=round(uptime, 3),
    )
