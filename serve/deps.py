"""What routes share: the replica's `System`, keyset cursors, the SSE resume point."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, TypeVar
from uuid import UUID

from fastapi import Depends, Header, Query, Request
from fastapi.exceptions import RequestValidationError

from runtime.models.api import Page
from serve.system import System

T = TypeVar("T")

__all__ = [
    "Cursor",
    "LastEventId",
    "SystemDep",
    "bad_input",
    "decode_cursor",
    "encode_cursor",
    "page_of",
]


async def _system(request: Request) -> System:
    # async, as every dependency here: FastAPI runs a plain `def` one on a thread per request
    return request.app.state.system


SystemDep = Annotated[System, Depends(_system)]


def encode_cursor(created_at: datetime, id: UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{id}".encode()).decode()


def page_of(items: list[T], limit: int) -> Page[T]:
    """A page of `items`; a full page points past its last item, a short one is the end."""
    last = items[-1] if len(items) == limit else None
    cursor = encode_cursor(last.created_at, last.id) if last is not None else None  # type: ignore[attr-defined]
    return Page(items=items, next_cursor=cursor)


def decode_cursor(cursor: str | None) -> tuple[datetime, UUID] | None:
    """The `(created_at, id)` a cursor stands for; 422 naming `query.cursor` if it is bad."""
    if cursor is None:
        return None
    try:
        created, _, id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(created), UUID(id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_input("query.cursor", "not a cursor this API returned") from None


Cursor = Annotated[
    str | None,
    Query(max_length=200, description="`next_cursor` of the previous page."),
]


def bad_input(field: str, reason: str) -> RequestValidationError:
    """A 422 naming `field`, as FastAPI's own validation gives."""
    return RequestValidationError(
        [{"loc": tuple(field.split(".")), "msg": reason, "type": "value_error"}]
    )


async def _last_event_id(
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this event id.")
    ] = None,
    last_event_id: Annotated[
        int | None, Query(ge=0, description="Resume after this id (when headers can't be set).")
    ] = None,
) -> int | None:
    if last_event_id_header is not None:
        if not last_event_id_header.isdigit():
            raise bad_input(
                "header.Last-Event-ID", "must be an event id this stream sent (an integer)"
            )
        return int(last_event_id_header)
    return last_event_id


LastEventId = Annotated[int | None, Depends(_last_event_id)]
