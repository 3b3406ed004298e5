"""Matching: every required capability, a free slot, least loaded, avoid when possible."""

from __future__ import annotations

from actors.registry import Registry


def make() -> Registry:
    registry = Registry()
    registry.register("a", {"echo", "logs"}, handle="A")
    registry.register("b", {"echo"}, handle="B")
    registry.register("c", {"plan"}, handle="C", capacity=2)
    return registry


def test_match_needs_every_capability() -> None:
    registry = make()
    assert registry.match(frozenset({"echo", "logs"})).agent_id == "a"
    assert registry.match(frozenset({"plan"})).agent_id == "c"
    assert registry.match(frozenset({"echo", "plan"})) is None
    assert registry.can_serve(frozenset({"logs"}))
    assert not registry.can_serve(frozenset({"llm"}))


def test_load_spreads_and_full_agents_are_skipped() -> None:
    registry = make()
    first = registry.match(frozenset({"echo"}))
    registry.acquire(first)
    second = registry.match(frozenset({"echo"}))
    assert {first.agent_id, second.agent_id} == {"a", "b"}
    registry.acquire(second)
    assert registry.match(frozenset({"echo"})) is None  # both at capacity 1
    registry.release(registry.get("a"))
    assert registry.match(frozenset({"echo"})).agent_id == "a"


def test_a_predecessors_failure_leaves_the_restarted_agents_entry_alone() -> None:
    registry = make()
    old = registry.match(frozenset({"echo"}))
    registry.acquire(old)
    new = registry.register(old.agent_id, ["echo"], handle="new incarnation")
    registry.release(old)  # the old incarnation's lease ends
    registry.discard(old)  # and its call failed: the agent died
    assert registry.get(old.agent_id) is new
    assert new.inflight == 0


def test_capacity_allows_prefetch() -> None:
    registry = make()
    c = registry.match(frozenset({"plan"}))
    registry.acquire(c)
    assert registry.match(frozenset({"plan"})) is c
    registry.acquire(c)
    assert registry.match(frozenset({"plan"})) is None


def test_avoid_is_a_preference_not_a_ban() -> None:
    registry = make()
    assert registry.match(frozenset({"echo"}), avoid=frozenset({"a"})).agent_id == "b"
    registry.remove("b")
    assert registry.match(frozenset({"echo"}), avoid=frozenset({"a"})).agent_id == "a"


def test_reregistration_after_a_restart_starts_with_no_work() -> None:
    registry = make()
    registry.acquire(registry.get("b"))
    registry.register("b", {"echo"}, handle="B2")
    assert registry.get("b").inflight == 0
    assert registry.get("b").handle == "B2"
    assert not registry.get("x") and "b" in registry and len(registry) == 3
