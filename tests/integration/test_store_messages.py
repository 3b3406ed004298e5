"""The messages repository: a conversation read back by its correlation id."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import pytest

from runtime.models.enums import MessageKind
from runtime.models.records import Message, utcnow
from runtime.store import messages

pytestmark = pytest.mark.integration


async def test_by_correlation_returns_the_exchange_in_order(pool: asyncpg.Pool) -> None:
    now = utcnow()
    request = Message(sender="a", recipient="b", kind="request", payload={"q": 1}, created_at=now)
    response = Message(
        correlation_id=request.id,
        sender="b",
        recipient="a",
        kind=MessageKind.RESPONSE,
        payload={"answer": 2},
        created_at=now + timedelta(milliseconds=5),
    )
    unrelated = Message(correlation_id=uuid.uuid4(), sender="a", recipient="c", kind="notification")
    for message in (response, request, unrelated):
        assert await messages.add(pool, message) == message
    assert await messages.by_correlation(pool, request.id) == [request, response]
    assert await messages.by_correlation(pool, uuid.uuid4()) == []


async def test_messages_sharing_a_correlation_id(pool: asyncpg.Pool) -> None:
    correlation = uuid.uuid4()
    now = utcnow()
    sent = [
        Message(
            correlation_id=correlation,
            sender="a",
            recipient="b",
            kind="request" if i == 0 else "response",
            created_at=now + timedelta(milliseconds=i),
        )
        for i in range(3)
    ]
    for message in reversed(sent):
        await messages.add(pool, message)
    assert await messages.by_correlation(pool, correlation) == sent
