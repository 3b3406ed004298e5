"""Any event subject as server-sent events: `GET /api/v1/events/stream?subject=tasks.>`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sse_starlette import EventSourceResponse

from runtime.bus import decode
from runtime.models.enums import Scope
from serve.auth import require
from serve.deps import LastEventId, SystemDep, bad_input
from serve.streams import subject_stream

router = APIRouter(prefix="/api/v1/events", tags=["events"])

_SUBJECT = r"^([A-Za-z0-9_:-]+|\*)(\.([A-Za-z0-9_:-]+|\*))*(\.>)?$|^>$"
_TOP_LEVELS = {"agents", "tasks", "discoveries", "supervisors", "projects", "*", ">"}


@router.get(
    "/stream",
    dependencies=[require(Scope.READ)],
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event`: the subject; `id`: stream sequence",
        }
    },
)
async def stream_events(
    system: SystemDep,
    last_event_id: LastEventId,
    subject: Annotated[
        str,
        Query(
            min_length=1,
            max_length=200,
            pattern=_SUBJECT,
            description="A NATS subject pattern: `*` one token, a final `>` the rest.",
        ),
    ] = ">",
) -> EventSourceResponse:
    """Events on `subject` from now on; durable ones carry an `id` to resume from with
    `Last-Event-ID`. Live-only subjects (heartbeats, progress) come without one."""
    if subject.split(".")[0] not in _TOP_LEVELS:
        raise bad_input("query.subject", f"must start with one of {sorted(_TOP_LEVELS)}")

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for msg in subject_stream(system.bus, subject, last_event_id):
            kind = msg.subject.partition(".")[0]
            data = decode(_json_text, msg.data, kind=kind, subject=msg.subject)
            if data is None:  # not JSON: dropped, counted
                continue
            event: dict[str, Any] = {"event": msg.subject, "data": data}
            if msg.seq is not None:
                event["id"] = str(msg.seq)
            yield event

    return EventSourceResponse(events(), ping=system.settings.http.keep_alive_s)


def _json_text(raw: bytes) -> str:
    """The payload as text, once it is known to be JSON (every event is)."""
    json.loads(raw)
    return raw.decode()
