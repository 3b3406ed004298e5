"""`GET /api/v1/metrics/system`: the seed MS-1 aggregate in one call.

Each figure comes from the record, as Ray's metrics (`runtime.metrics`) do where they
overlap: tasks and agents from PostgreSQL, restarts from the supervision events both count,
NATS from the server's own monitoring. Nothing is an average over this replica's life.
"""

from __future__ import annotations

import time

import httpx
import psutil
from fastapi import APIRouter
from pydantic import BaseModel, Field

from runtime.models.enums import Scope
from runtime.store import tasks as task_store
from runtime.store.outbox import pending_count
from serve.auth import require
from serve.deps import SystemDep
from serve.nats_monitor import NatsMonitor
from serve.system import System

router = APIRouter(prefix="/api/v1/metrics", tags=["metrics"])

NO_MONITOR = (
    "no NATS monitoring URL is configured (setting nats_monitor_url, e.g. "
    "http://nats-host:8222): the server's counters and rates are unknown"
)


class AgentFigures(BaseModel):
    """Agents by the state each last recorded (the `agents` table), whichever tree they are
    in; stopped and failed agents count until they are deleted. Ray's `rayvisor_agents`
    gauge counts a supervisor's agent children by their state there instead."""

    total: int = Field(description="Agents recorded.")
    idle: int = Field(description="Agents whose last state is `idle`.")
    busy: int = Field(description="Agents whose last state is `busy`.")
    by_state: dict[str, int] = Field(
        description="Agents by last state (states with none left out)."
    )


class NatsFigures(BaseModel):
    """NATS as the server counts it, read from its monitoring endpoint (`/varz`), and this
    replica's own connection. Counters are the server's since it started; rates are over the
    interval between its latest two samples (see `interval_s`)."""

    connected: bool = Field(description="This replica's connection to NATS is up.")
    reconnects: int = Field(description="Times this replica's connection reconnected.")
    monitor_url: str | None = Field(
        description="The monitoring endpoint read; null when none is configured."
    )
    monitor_error: str | None = Field(
        None,
        description="Why the server's figures below are null: no monitoring URL configured, "
        "or the endpoint did not answer. Null when they are present.",
    )
    in_msgs: int | None = Field(None, description="Messages the server received from clients.")
    out_msgs: int | None = Field(
        None, description="Messages the server sent to clients (once per delivery)."
    )
    in_bytes: int | None = Field(None, description="Payload bytes the server received.")
    out_bytes: int | None = Field(None, description="Payload bytes the server sent.")
    connections: int | None = Field(None, description="Client connections open now.")
    interval_s: float | None = Field(
        None,
        description="Seconds between the two samples of `/varz` the rates are over: the "
        "latest two, taken at least 1 s apart (a request takes one when the last is 1 s "
        "old). Null until there are two samples of the same server run.",
    )
    in_msgs_per_s: float | None = Field(None, description="`in_msgs` rate over the interval.")
    out_msgs_per_s: float | None = Field(None, description="`out_msgs` rate over the interval.")
    in_bytes_per_s: float | None = Field(None, description="`in_bytes` rate over the interval.")
    out_bytes_per_s: float | None = Field(None, description="`out_bytes` rate over the interval.")


class ProcessFigures(BaseModel):
    """The host this replica runs on."""

    cpu_percent: float = Field(description="The host's CPU use since the previous request.")
    memory_percent: float = Field(description="The host's memory in use, percent.")
    replica_rss_bytes: int = Field(description="This replica's resident memory.")


class SystemMetrics(BaseModel):
    agents: AgentFigures
    tasks: dict[str, int] = Field(
        description="Tasks by status (the `tasks` table), every status present. Ray's "
        "`rayvisor_queue_depth` and `rayvisor_leases_in_flight` gauges count the same "
        "`queued` and `assigned` + `running` tasks per shard, from the shards' memory."
    )
    restarts: int = Field(
        description="Restarts decided by every supervisor, ever: the `restarted` rows of "
        "`supervisor_events`, the same decisions Ray's `rayvisor_restarts` counter counts "
        "(which starts from 0 in each supervisor process)."
    )
    outbox_pending: int = Field(description="Outbox events not yet published to NATS.")
    nats: NatsFigures
    host: ProcessFigures
    uptime_s: float = Field(description="This replica's.")


async def _nats(system: System) -> NatsFigures:
    nc = system.bus.nc
    base = {"connected": nc.is_connected, "reconnects": nc.stats["reconnects"]}
    monitor: NatsMonitor | None = system.nats_monitor
    if monitor is None:
        return NatsFigures(**base, monitor_url=None, monitor_error=NO_MONITOR)
    try:
        sample, rates = await monitor.figures()
    except (httpx.HTTPError, ValueError) as exc:  # refused, timed out, not JSON
        error = f"{monitor.url}/varz did not answer: {exc!r}"
        return NatsFigures(**base, monitor_url=monitor.url, monitor_error=error)
    return NatsFigures(
        **base,
        monitor_url=monitor.url,
        in_msgs=sample.in_msgs,
        out_msgs=sample.out_msgs,
        in_bytes=sample.in_bytes,
        out_bytes=sample.out_bytes,
        connections=sample.connections,
        interval_s=rates.interval_s if rates else None,
        in_msgs_per_s=rates.in_msgs_per_s if rates else None,
        out_msgs_per_s=rates.out_msgs_per_s if rates else None,
        in_bytes_per_s=rates.in_bytes_per_s if rates else None,
        out_bytes_per_s=rates.out_bytes_per_s if rates else None,
    )


@router.get("/system", response_model=SystemMetrics, dependencies=[require(Scope.READ)])
async def system_metrics(system: SystemDep) -> SystemMetrics:
    rows = await system.pool.fetch("SELECT state, count(*) AS n FROM agents GROUP BY state")
    by_state = {row["state"]: row["n"] for row in rows}
    restarts = await system.pool.fetchval(
        "SELECT count(*) FROM supervisor_events WHERE event = 'restarted'"
    )
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
        nats=await _nats(system),
        host=ProcessFigures(
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_percent=psutil.virtual_memory().percent,
            replica_rss_bytes=psutil.Process().memory_info().rss,
        ),
        uptime_s=round(time.monotonic() - system.started_at, 3),
    )
