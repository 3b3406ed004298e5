"""Constrained field types shared by records, events and API bodies.

Each mirrors a CHECK in `runtime/store/migrations/001_schema.sql`, so a value a model accepts
is one the database accepts. Datetimes are always timezone-aware UTC: a naive value is taken
as UTC, an aware one is converted.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

__all__ = [
    "AGENT_ID_PATTERN",
    "QUESTION_TYPE",
    "TYPE_NAME_PATTERN",
    "AgentId",
    "Capability",
    "SubjectToken",
    "TypeName",
    "UtcDatetime",
    "check_question",
    "nul_at",
    "subject_token",
    "utcnow",
]

AGENT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,120}$"
TYPE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"

_BAD_TOKEN = re.compile(r"[.*>\s]")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def subject_token(value: object) -> str:
    """`value` as one NATS subject token; ValueError if it is empty or holds `.`, `*`, `>`
    or whitespace (each would change which subscribers see the message)."""
    token = str(value)
    if not token or _BAD_TOKEN.search(token):
        raise ValueError(f"{token!r} is not a valid subject token (no '.', '*', '>', whitespace)")
    return token


UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]
"""A datetime normalised to UTC."""

AgentId = Annotated[str, StringConstraints(pattern=AGENT_ID_PATTERN)]
"""An agent id: letters, digits, `_` and `-`, 1 to 120 characters (`agents.id`)."""

TypeName = Annotated[str, StringConstraints(pattern=TYPE_NAME_PATTERN)]
"""A template name or discovery type: lower-case snake case, 1 to 63 characters."""

Capability = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
"""A capability name: a non-empty string of at most 100 characters."""

SubjectToken = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(subject_token)]
"""An id used as one NATS subject token (a supervisor id such as `sup:pool:log_analysis`)."""


def nul_at(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string holding a NUL character, or None.

    PostgreSQL text and jsonb cannot store U+0000, so such input is refused at the edge
    instead of failing the transaction it would have joined."""
    if isinstance(value, str):
        return path or "(value)" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return where
            if (found := nul_at(item, where)) is not None:
                return found
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if (found := nul_at(item, f"{path}.{index}" if path else str(index))) is not None:
                return found
    return None


QUESTION_TYPE = "question"
"""A discovery of this type becomes a task for an agent with `data.capability`."""


def check_question(type: str, data: dict[str, Any]) -> None:
    """ValueError unless a question names the capability that should answer it (and its
    parameters, if any, are an object)."""
    if type != QUESTION_TYPE:
        return
    capability = data.get("capability")
    if not isinstance(capability, str) or not capability.strip() or len(capability) > 100:
        raise ValueError("a question needs data.capability: the capability that answers it")
    if not isinstance(data.get("parameters", {}), dict):
        raise ValueError("a question's data.parameters must be an object")
