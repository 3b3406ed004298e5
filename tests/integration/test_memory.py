"""Shared memory on a real nats-server: revisions, conflicts between two writers on two
connections, each `on_conflict` policy, watching, and bad keys and values."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from actors.agent import AgentContext
from runtime.bus import Bus
from runtime.errors import Conflict, TransientError
from runtime.memory import MemoryChange, SharedMemory, StaleRevision, bucket_name

pytestmark = pytest.mark.integration


@pytest.fixture
async def two(services) -> AsyncIterator[tuple[SharedMemory, SharedMemory]]:
    """The same scope seen from two processes' worth of connections (two agents)."""
    stream = f"M{uuid.uuid4().hex[:10].upper()}"
    buses = [await Bus.connect(services.nats_url, name=f"agent-{n}", stream=stream) for n in (1, 2)]
    yield SharedMemory(buses[0], "team"), SharedMemory(buses[1], "team")
    with contextlib.suppress(Exception):
        await buses[0].js.delete_key_value(bucket_name(stream))
    for bus in buses:
        await bus.close()


async def test_two_writers_from_the_same_revision_one_gets_conflict(two) -> None:
    a, b = two
    first = await a.put("plan", {"step": 1})
    assert (await b.get("plan")) is not None
    seen_by_a, seen_by_b = await a.get("plan"), await b.get("plan")
    assert seen_by_a.revision == seen_by_b.revision == first

    written = await a.put("plan", {"step": 2, "by": "a"}, expected_revision=seen_by_a.revision)
    with pytest.raises(Conflict, match=r"memory team/plan: revision \d+ is stale") as refused:
        await b.put("plan", {"step": 2, "by": "b"}, expected_revision=seen_by_b.revision)
    assert isinstance(refused.value, StaleRevision | TransientError)  # a task would retry
    latest = await b.get("plan")
    assert latest.value == {"step": 2, "by": "a"} and latest.revision == written

    with pytest.raises(Conflict):  # 0: create only
        await b.put("plan", {"step": 0}, expected_revision=0)
    with pytest.raises(Conflict):
        await b.delete("plan", expected_revision=first)
    await b.delete("plan", expected_revision=written)
    assert await a.get("plan") is None
    assert await a.put("plan", {"step": 3}, expected_revision=0) > written  # created again


async def test_update_retry_keeps_every_increment(two) -> None:
    a, b = two

    async def bump(who: SharedMemory, times: int) -> None:
        for _ in range(times):
            await who.update("count", lambda n: (n or 0) + 1, on_conflict="retry")

    await asyncio.gather(bump(a, 15), bump(b, 15))
    assert (await a.get("count")).value == 30


async def test_update_merge_keeps_both_writers_keys_and_lww_keeps_the_last(two) -> None:
    a, b = two
    await a.put("doc", {"title": "incident", "tags": ["ssh"]})
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow_add_owner(doc: dict) -> dict:
        entered.set()
        await release.wait()  # b writes meanwhile: a's write will conflict
        return {**doc, "owner": "agent-a"}

    merging = asyncio.create_task(a.update("doc", slow_add_owner, on_conflict="merge"))
    await entered.wait()
    await b.update("doc", lambda d: {**d, "severity": "high"})
    release.set()
    merged = await merging
    assert merged.value == {
        "title": "incident",
        "tags": ["ssh"],
        "owner": "agent-a",
        "severity": "high",
    }
    assert (await b.get("doc")).value == merged.value

    entered.clear(), release.clear()

    async def slow_replace(doc: dict) -> dict:
        entered.set()
        await release.wait()
        return {"title": "replaced by a"}

    last = asyncio.create_task(a.update("doc", slow_replace, on_conflict="lww"))
    await entered.wait()
    await b.update("doc", lambda d: {**d, "severity": "low"})
    release.set()
    assert (await last).value == {"title": "replaced by a"}
    assert (await b.get("doc")).value == {"title": "replaced by a"}  # b's change is gone


async def test_merge_of_a_value_both_changed_that_is_not_an_object_is_a_conflict(two) -> None:
    a, b = two
    await a.put("status", "open")
    entered, release = asyncio.Event(), asyncio.Event()

    async def close(_: str) -> str:
        entered.set()
        await release.wait()
        return "closed"

    closing = asyncio.create_task(a.update("status", close, on_conflict="merge"))
    await entered.wait()
    await b.put("status", "escalated")
    release.set()
    with pytest.raises(Conflict, match="not an object; cannot merge"):
        await closing
    assert (await a.get("status")).value == "escalated"


async def test_watch_sees_current_values_then_changes_under_the_prefix(two) -> None:
    a, b = two
    await a.put("finding.1", {"ip": "173.234.31.186"})
    await a.put("other", 1)
    seen: list[MemoryChange] = []
    watching = asyncio.Event()

    async def watch() -> None:
        async for change in b.watch("finding."):
            seen.append(change)
            watching.set()  # the current values came: what follows are changes
            if len(seen) == 3:
                return

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(watching.wait(), 10)
    await a.put("finding.2", {"ip": "183.62.140.253"})
    await a.put("other", 2)
    await a.delete("finding.1")
    await asyncio.wait_for(watcher, 10)
    assert [(c.key, c.value, c.deleted) for c in seen] == [
        ("finding.1", {"ip": "173.234.31.186"}, False),
        ("finding.2", {"ip": "183.62.140.253"}, False),
        ("finding.1", None, True),
    ]


async def test_bad_keys_scopes_and_values_are_refused_with_the_reason(two) -> None:
    a, _ = two
    small = SharedMemory(a._bus, "team", max_value_bytes=64)
    with pytest.raises(ValueError, match="memory key must be"):
        await a.put("has space", 1)
    with pytest.raises(ValueError, match="memory key must be"):
        await a.put("trailing.", 1)
    with pytest.raises(ValueError, match="memory scope must match"):
        SharedMemory(a._bus, "a.b")
    with pytest.raises(ValueError, match="the value is not JSON"):
        await a.put("k", {1, 2})
    with pytest.raises(ValueError, match="over the limit of 64"):
        await small.put("k", "x" * 100)
    with pytest.raises(ValueError, match="on_conflict must be"):
        await a.update("k", lambda v: v, on_conflict="ours")  # type: ignore[arg-type]
    assert await a.get("k") is None  # nothing was written


async def test_an_agent_context_reaches_the_same_memory(two, services) -> None:
    a, _ = two
    await a.put("shared", {"from": "a"})
    bus = await Bus.connect(services.nats_url, name="ctx", stream=a._bus.stream)
    try:
        ctx = AgentContext("agent-x", pool=None, bus=bus)
        entry = await ctx.memory("team").get("shared")
        assert entry is not None and entry.value == {"from": "a"}
    finally:
        await bus.close()
