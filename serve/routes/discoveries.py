"""Discoveries agents share (seed MS-1): create, list with filters, and a live SSE stream
that resumes from `Last-Event-ID` without missing one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sse_starlette import EventSourceResponse

from runtime.bus import decode
from runtime.models.api import DiscoveryCreate, Page
from runtime.models.common import AGENT_ID_PATTERN
from runtime.models.enums import Scope
from runtime.models.events import DiscoveryShared
from runtime.models.records import ApiKey, Discovery
from runtime.store import discoveries as discovery_store
from serve.auth import require
from serve.deps import Cursor, LastEventId, SystemDep, bad_input, decode_cursor, page_of
from serve.streams import subject_stream
from serve.system import System

router = APIRouter(prefix="/api/v1/discoveries", tags=["discoveries"])

Types = Annotated[
    list[str] | None,
    Query(description="Only these types (repeat the parameter or separate with commas)."),
]
MinConfidence = Annotated[float | None, Query(ge=0.0, le=1.0)]


def _types(types: list[str] | None) -> set[str] | None:
    if not types:
        return None
    wanted = {t.strip() for value in types for t in value.split(",") if t.strip()}
    return wanted or None


@router.post("", status_code=201, response_model=Discovery)
async def share_discovery(
    body: DiscoveryCreate, system: SystemDep, caller: Annotated[ApiKey, require(Scope.WRITE)]
) -> Discovery:
    """Store a discovery and announce it on `discoveries.{agent_id}.{type}`, atomically.
    Without `agent_id`, the sender is `api-<key prefix>`."""
    return await share(system, body, caller)


async def share(system: System, body: DiscoveryCreate, caller: ApiKey) -> Discovery:
    """What `POST /api/v1/discoveries` and the MCP tool `share_discovery` do."""
    agent_id = body.agent_id or f"api-{caller.prefix}"
    discovery = Discovery(**body.model_dump(exclude={"agent_id"}), agent_id=agent_id)
    event = DiscoveryShared(
        discovery_id=discovery.id,
        **discovery.model_dump(
            include={"agent_id", "type", "content", "confidence", "data", "task_id", "project_id"}
        ),
    )
    return await discovery_store.add(system.pool, discovery, [event])


@router.get("", response_model=Page[Discovery], dependencies=[require(Scope.READ)])
async def list_discoveries(
    system: SystemDep,
    types: Types = None,
    min_confidence: MinConfidence = None,
    agent_id: Annotated[str | None, Query(pattern=AGENT_ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Cursor = None,
) -> Page[Discovery]:
    found = await discovery_store.list_discoveries(
        system.pool,
        types=_types(types),
        min_confidence=min_confidence,
        agent_id=agent_id,
        limit=limit,
        after=decode_cursor(cursor),
    )
    return page_of(found, limit)


@router.get(
    "/stream",
    dependencies=[require(Scope.READ)],
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: discovery`, `id`: stream sequence",
        }
    },
)
async def stream_discoveries(
    system: SystemDep,
    last_event_id: LastEventId,
    types: Types = None,
    min_confidence: MinConfidence = None,
) -> EventSourceResponse:
    """Discoveries as they are shared, only those of `types` at `min_confidence` or more;
    reconnect with `Last-Event-ID` to get the ones shared in between."""
    wanted = _types(types)
    if wanted is not None:
        bad = sorted(t for t in wanted if not t.replace("_", "").isalnum() or not t.islower())
        if bad:
            raise bad_input("query.types", f"not discovery types: {bad}")

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for msg in subject_stream(system.bus, "discoveries.>", last_event_id):
            shared = decode(
                DiscoveryShared.from_json, msg.data, kind="discoveries", subject=msg.subject
            )
            if shared is None:  # not a discovery: dropped, counted
                continue
            if wanted is not None and shared.type not in wanted:
                continue
            if min_confidence is not None and shared.confidence < min_confidence:
                continue
            yield {"id": str(msg.seq), "event": "discovery", "data": msg.data.decode()}

    return EventSourceResponse(events(), ping=system.settings.http.keep_alive_s)
