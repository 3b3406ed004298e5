"""Liveness and readiness, the only routes without a key."""

from __future__ import annotations

import asyncio

import ray
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from actors.task_manager import task_manager_name
from serve.deps import SystemDep
from serve.system import System

router = APIRouter(tags=["health"])

_CHECK_TIMEOUT_S = 2.0


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]
    """`ok`, or why not."""


async def _shard_answers(system: System, name: str) -> str:
    """`ok` if the shard's current actor answers `statistics` in time (no waiting for a
    restart: readiness says how things are now)."""
    try:
        handle = ray.get_actor(name, namespace=system.settings.namespace)
    except ValueError:
        return f"not running: no actor {name} in namespace {system.settings.namespace}"
    try:
        await asyncio.wait_for(handle.statistics.remote(), _CHECK_TIMEOUT_S)
    except Exception as exc:
        return f"not answering: {exc!r}"[:300]
    return "ok"


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: see `checks`"}},
)
async def readyz(system: SystemDep) -> JSONResponse:
    """PostgreSQL answers a query, NATS is connected, the root supervisor answers, and so
    does every task-manager shard (`tm:0` ..): without one, submits to it cannot work."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(system.pool.fetchval("SELECT 1"), _CHECK_TIMEOUT_S)
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"unreachable: {exc!r}"[:300]
    checks["nats"] = "ok" if system.bus.nc.is_connected else "not connected"
    root = system.root()
    if root is None:
        checks["tree"] = f"no sup:root in namespace {system.settings.namespace}"
    else:
        try:
            await asyncio.wait_for(root.wait_started.remote(), _CHECK_TIMEOUT_S)
            checks["tree"] = "ok"
        except Exception as exc:
            checks["tree"] = f"not answering: {exc!r}"[:300]
    names = [task_manager_name(shard) for shard in range(system.settings.task_shards)]
    answers = await asyncio.gather(*(_shard_answers(system, name) for name in names))
    checks.update(zip(names, answers, strict=True))
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(ready=ready, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
