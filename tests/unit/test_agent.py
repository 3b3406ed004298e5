"""`Agent` and `AgentContext` without Ray or services: the contract and the validation."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
import time
from typing import Any
from uuid import uuid4

import pytest

import actors
from actors import Agent, AgentContext
from actors.agent_state import CRASH_REASON, startup_path
from actors.builtin.echo import CounterAgent, EchoAgent
from actors.host import import_agent_class
from runtime.errors import ConfigError, FatalError, LogicalError, TransientError
from runtime.models.enums import AgentState
from runtime.state_machines import AGENT_TRANSITIONS


class Minimal(Agent):
    capabilities = {"minimal", " padded "}

    async def handle(self, task: dict[str, Any], ctx: AgentContext) -> Any:
        return task


def offline_context(task: dict[str, Any] | None = None) -> AgentContext:
    """A context with no pool or bus: anything that reaches them raises RuntimeError."""
    ctx = AgentContext("unit-1", pool=None, bus=None)
    ctx.task = task
    return ctx


# ---- exports ----------------------------------------------------------------------------------


def test_exports() -> None:
    assert set(actors.__all__) == {"Agent", "AgentContext", "AgentHost"}
    from actors.host import AgentHost

    assert actors.AgentHost is AgentHost


def test_importing_actors_does_not_import_ray() -> None:
    code = "import sys, actors; from actors import Agent; assert 'ray' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ---- the Agent contract -----------------------------------------------------------------------


def test_handle_is_abstract() -> None:
    class NoHandle(Agent):
        capabilities = {"x"}

    with pytest.raises(TypeError, match="abstract"):
        NoHandle()


def test_capabilities_are_normalised_to_a_frozenset() -> None:
    assert Minimal.capabilities == frozenset({"minimal", "padded"})
    assert Agent.capabilities == frozenset()


@pytest.mark.parametrize("bad", ["echo", {"ok", ""}, {1, 2}, 5])
def test_bad_capabilities_fail_at_class_definition(bad: object) -> None:
    with pytest.raises(TypeError, match="capabilities"):
        type("Bad", (Agent,), {"capabilities": bad, "handle": Minimal.handle})


async def test_params_hooks_and_handle() -> None:
    agent = Minimal(threshold=0.5, window=10)
    assert agent.params == {"threshold": 0.5, "window": 10}
    ctx = offline_context()
    assert await agent.on_start(ctx) is None
    assert await agent.on_stop(ctx) is None
    assert await agent.handle({"a": 1}, ctx) == {"a": 1}


# ---- AgentContext -----------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [-0.01, 1.01, 7, math.nan, math.inf])
async def test_progress_out_of_range_is_refused(fraction: float) -> None:
    ctx = offline_context({"id": str(uuid4())})
    with pytest.raises(ValueError, match=r"between 0\.0 and 1\.0"):
        await ctx.progress(fraction)


@pytest.mark.parametrize("fraction", ["0.5", None, True])
async def test_progress_must_be_a_number(fraction: object) -> None:
    with pytest.raises(TypeError, match="number"):
        await offline_context({"id": str(uuid4())}).progress(fraction)  # type: ignore[arg-type]


async def test_progress_needs_a_task_with_a_uuid() -> None:
    with pytest.raises(RuntimeError, match="while a task is being handled"):
        await offline_context().progress(0.5)
    with pytest.raises(ValueError, match="UUID"):
        await offline_context({"id": "not-a-uuid"}).progress(0.5)


async def test_valid_progress_reaches_for_the_bus() -> None:
    with pytest.raises(RuntimeError, match="no NATS connection"):
        await offline_context({"id": str(uuid4()), "attempt": 2}).progress(1.0, "done")


async def test_save_state_refuses_what_json_cannot_carry() -> None:
    ctx = offline_context()
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        await ctx.save_state({"when": object()})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        await ctx.save_state({"x": math.nan})
    with pytest.raises(TypeError, match="must be a dict"):
        await ctx.save_state([1, 2])  # type: ignore[arg-type]


async def test_save_state_replaces_the_state_then_needs_the_database() -> None:
    ctx = offline_context()
    with pytest.raises(RuntimeError, match="no database connection"):
        await ctx.save_state({"count": 3})
    assert ctx.state == {"count": 3}


@pytest.mark.parametrize(
    ("kind", "content", "confidence"),
    [("Not Snake", "x", 0.5), ("pattern", "", 0.5), ("pattern", "x", 1.5)],
)
async def test_share_discovery_validates_before_writing(
    kind: str, content: str, confidence: float
) -> None:
    with pytest.raises(ValueError):
        await offline_context().share_discovery(kind, content, confidence)


async def test_run_blocking_keeps_the_loop_ticking() -> None:
    ctx = offline_context()
    ticks = 0
    stop = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        thread = await ctx.run_blocking(
            lambda delay: (time.sleep(delay), threading.get_ident())[1], 0.3
        )
    finally:
        stop.set()
        await ticker
    assert thread != threading.get_ident()
    assert ticks >= 10


def test_log_names_the_agent() -> None:
    assert offline_context().log.name == "rayvisor.agent.unit-1"


# ---- the built-in test agents -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error"),
    [("transient", TransientError), ("fatal", FatalError), ("logical", LogicalError)],
)
async def test_echo_fails_as_asked(kind: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        await EchoAgent().handle({"parameters": {"fail": kind}}, offline_context())


async def test_echo_returns_its_parameters() -> None:
    params = {"x": 1, "sleep_s": 0}
    assert await EchoAgent().handle({"parameters": params}, offline_context()) == params


async def test_counter_counts_from_its_saved_state() -> None:
    class Recording(AgentContext):
        saved: list[dict[str, Any]] = []

        async def save_state(self, state: dict[str, Any] | None = None) -> None:
            self.saved.append(dict(self.state if state is None else state))

    ctx = Recording("unit-1", pool=None, bus=None, state={"count": 41})
    assert await CounterAgent().handle({}, ctx) == 42
    assert ctx.saved == [{"count": 42}]


# ---- the host's pure parts --------------------------------------------------------------------


def test_import_agent_class_takes_both_notations() -> None:
    assert import_agent_class("actors.builtin.echo:EchoAgent") is EchoAgent
    assert import_agent_class("actors.builtin.echo.CounterAgent") is CounterAgent


@pytest.mark.parametrize(
    "path",
    ["EchoAgent", "no.such.module:Agent", "actors.builtin.echo:Nope", "runtime.errors:Conflict"],
)
def test_import_agent_class_names_the_problem(path: str) -> None:
    with pytest.raises(ConfigError, match=path.split(":")[0]):
        import_agent_class(path)


@pytest.mark.parametrize("stored", ["created", "stopped", "failed", "error"])
def test_a_clean_start_goes_straight_to_starting(stored: str) -> None:
    assert [state for state, _ in startup_path(stored)] == ["starting", "running", "idle"]


@pytest.mark.parametrize(
    ("stored", "first"),
    [
        ("idle", "error"),
        ("busy", "error"),
        ("running", "error"),
        ("starting", "error"),
        ("stopping", "failed"),
    ],
)
def test_a_crashed_incarnation_is_recorded_before_the_restart(stored: str, first: str) -> None:
    steps = startup_path(stored)
    assert steps[0] == (AgentState(first), CRASH_REASON)
    assert [state for state, _ in steps[1:]] == ["starting", "running", "idle"]


def test_the_startup_path_is_valid_from_every_state() -> None:
    for stored in AgentState:
        path = [state for state, _ in startup_path(stored)]
        assert AGENT_TRANSITIONS.fold(stored, path) == AgentState.IDLE
