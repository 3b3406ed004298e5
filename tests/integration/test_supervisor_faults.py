"""Overlapping failures on real Ray, with real SIGKILLs: the supervision invariant.

Invariant (supervisors/supervisor.py): every permanent child of a supervisor that is not
stopping is `running` (or, for a child with a circuit breaker, `circuit_open`) within its
backoff delay + its start (at most `start_timeout_s`, plus up to 5 s for a dead
predecessor's name) of its failure, whatever else fails meanwhile: a sibling starting
slowly or hanging, the supervisor itself being restarted. The tests below use a zero
backoff and fast starts, so the bound they assert is `RECOVERY_S` on a loaded machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import ray
from helpers import wait_for

from supervisors.child import Supervised
from supervisors.events import retry_until, write_in_order

pytestmark = pytest.mark.integration

# The test actors below are started by supervisors in Ray workers, which import them by
# path: Ray's local workers inherit this environment (set at collection, before ray.init)
_HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(_HERE), str(_HERE.parent), os.environ.get("PYTHONPATH")) if p
)

PROBE = "actors.builtin.probe:ProbeWorker"
GATED = "test_supervisor_faults:Gated"
TM_STAND_IN = "test_supervisor_faults:TaskManagerStandIn"
FAST_HEARTBEAT = {"interval_s": 0.25, "timeout_s": 1.0, "misses": 3}
NO_BACKOFF = {"min_s": 0, "max_s": 0, "reset_after_s": 60}
RECOVERY_S = 30.0  # zero backoff + a new worker process, on 2 cores shared with other runs
AGENT_RECOVERY_S = 45.0  # four agent hosts at once: process starts, imports, registration


class Gated(Supervised):
    """Starts slowly (or hangs) while its gate file exists: a slow or hung start on demand."""

    def __init__(self, gate: str, delay_s: float = 0.0, hang: bool = False) -> None:
        super().__init__()
        self.gate, self.delay_s, self.hang = gate, delay_s, hang

    async def on_start(self) -> None:
        if os.path.exists(self.gate):  # pool member n takes n * delay_s: starts end in turn
            n = self.child_id.rsplit("-", 1)[-1]
            scale = int(n) if n.isdigit() else 1
            if self.hang:
                await asyncio.Event().wait()  # hung: until its supervisor kills it
            await asyncio.sleep(self.delay_s * scale)


class TaskManagerStandIn(Supervised):
    """Named `tm:0`: records what agents and supervisors tell the task manager."""

    def __init__(self) -> None:
        super().__init__()
        self.down: list[str] = []

    async def register_agent(self, *args: Any, **kwargs: Any) -> None:
        """Agent hosts offer themselves here; nothing to record."""

    async def agent_down(self, agent_id: str) -> None:
        self.down.append(agent_id)

    async def downs(self) -> list[str]:
        return list(self.down)


def worker(child_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": child_id, "actor": PROBE, "shutdown_s": 2, **extra}


def gated(child_id: str, gate: Path, **extra: Any) -> dict[str, Any]:
    kwargs = {"gate": str(gate), **extra.pop("kwargs", {})}
    return {"id": child_id, "actor": GATED, "kwargs": kwargs, "shutdown_s": 1, **extra}


def sup(sup_id: str, children: list[dict], **extra: Any) -> dict[str, Any]:
    return {
        "id": sup_id,
        "strategy": "one_for_one",
        "children": children,
        "heartbeat": FAST_HEARTBEAT,
        "backoff": NO_BACKOFF,
        "warm_workers": 0,
        **extra,
    }


async def children_of(handle: Any) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in await handle.which_children.remote()}


async def back_running(
    handle: Any, old_pids: dict[str, int], timeout_s: float = RECOVERY_S
) -> dict[str, dict[str, Any]]:
    """Each child in `old_pids` running in a new process within `timeout_s`."""

    async def ready() -> dict | None:
        now = await children_of(handle)
        for cid, pid in old_pids.items():
            child = now.get(cid)
            if child is None or child["state"] != "running" or child.get("pid") == pid:
                return None
        return now

    try:
        return await wait_for(ready, timeout_s=timeout_s, interval_s=0.05)  # type: ignore[return-value]
    except AssertionError:
        raise AssertionError(
            f"not all running in new processes within {timeout_s}s: {await children_of(handle)}"
        ) from None


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


# ---- the invariant under overlapping kills ---------------------------------------------


async def test_four_agents_killed_at_once_all_come_back(tree) -> None:
    template = tree.uid("four")
    pool = await tree.start(
        {
            "id": tree.uid("pool"),
            "strategy": "simple_one_for_one",
            "template": {"id": template, "agent": "actors.builtin.echo:CounterAgent"},
            "size": 4,
            "heartbeat": FAST_HEARTBEAT,
            "backoff": NO_BACKOFF,
        }
    )
    before = {cid: c["pid"] for cid, c in (await children_of(pool)).items()}
    assert len(before) == 4
    began = time.monotonic()
    for pid in before.values():
        kill(pid)
    after = await back_running(pool, before, timeout_s=AGENT_RECOVERY_S)
    took = time.monotonic() - began
    assert all(c["restarts"] == 1 for c in after.values()), after
    print(f"four agents back in {took:.2f}s")


async def test_a_child_dying_while_a_sibling_starts_slowly_is_restarted_at_once(
    tree, tmp_path: Path
) -> None:
    gate = tmp_path / "slow"
    slow = gated("slow", gate, kwargs={"delay_s": 90}, start_timeout_s=300)
    root = await tree.start(sup(tree.uid("slow"), [worker("fast"), slow]))
    before = {cid: c["pid"] for cid, c in (await children_of(root)).items()}
    gate.touch()  # from now on a start of `slow` takes 90 s
    kill(before["slow"])
    await wait_for(lambda: _state(root, "slow", "starting"), timeout_s=RECOVERY_S)
    kill(before["fast"])
    # its restart begins at once (it used to wait, `restarting`, for the slow start)...
    await wait_for(lambda: _restart_began(root, "fast", before["fast"]), timeout_s=5)
    # ...and ends long before the slow one's
    await back_running(root, {"fast": before["fast"]}, timeout_s=RECOVERY_S)
    assert (await children_of(root))["slow"]["state"] == "starting"


async def test_a_hung_start_is_killed_and_retried_without_blocking_a_sibling(
    tree, tmp_path: Path, system_pool
) -> None:
    gate = tmp_path / "hang"
    sup_id = tree.uid("hangstart")
    root = await tree.start(
        sup(
            sup_id,
            # the timeout counts the process start too: room for that on a loaded machine
            [worker("fast"), gated("hang", gate, kwargs={"hang": True}, start_timeout_s=6)],
            max_restarts=100,
            breaker={"failure_threshold": 100, "reset_timeout_s": 1},
        )
    )
    started = await back_running(root, {"fast": -1, "hang": -1})
    before = {cid: c["pid"] for cid, c in started.items()}
    gate.touch()  # every start of `hang` hangs until the gate goes
    kill(before["hang"])
    await wait_for(lambda: _state(root, "hang", "starting"), timeout_s=RECOVERY_S)
    kill(before["fast"])
    await back_running(root, {"fast": before["fast"]})

    async def timed_out_twice() -> bool:
        rows = await _events(system_pool, sup_id)
        return sum("StartTimeout" in r for e, c, r in rows if c == "hang") >= 2

    await wait_for(timed_out_twice, timeout_s=60)  # killed after 6 s, and tried again
    gate.unlink()  # the next start goes through
    await back_running(root, {"hang": before["hang"]}, timeout_s=RECOVERY_S)


async def test_pool_supervisor_killed_with_its_members_comes_back_complete(
    tree, tmp_path: Path
) -> None:
    """The restarted pool restarts members killed while it is still starting the rest
    (they used to stay `restarting` for good: restarts waited for a `running` state)."""
    gate = tmp_path / "slowpool"
    pool_id = tree.uid("slowpool")
    template = gated("m", gate, kwargs={"delay_s": 1.0})
    pool_spec = {
        "id": pool_id,
        "strategy": "simple_one_for_one",
        "template": template,
        "size": 4,
        "heartbeat": FAST_HEARTBEAT,
        "backoff": NO_BACKOFF,
        "warm_workers": 0,
    }
    root = await tree.start(sup(tree.uid("top"), [{"id": pool_id, "supervisor": pool_spec}]))
    pool_pid = (await children_of(root))[pool_id]["pid"]
    pool = await root.child_handle.remote(pool_id)
    members = {cid: c["pid"] for cid, c in (await children_of(pool)).items()}
    assert sorted(members) == ["m-1", "m-2", "m-3", "m-4"]
    gate.touch()  # from now on each member takes 1 s to start: the new pool starts for 4 s
    for pid in [*members.values(), pool_pid]:
        kill(pid)

    # the pool counts as started once its on_start returns; look inside it meanwhile
    new_pool, first = await _while_starting(root, pool_id, pool_pid)
    kill(first["pid"])  # a member dies while its supervisor still starts its siblings
    gate.unlink()
    after = await back_running(new_pool, members, timeout_s=RECOVERY_S)
    assert after[first["id"]]["pid"] != first["pid"]
    assert (await new_pool.snapshot.remote())["state"] == "running"


async def _while_starting(root: Any, pool_id: str, old_pid: int) -> tuple[Any, dict]:
    """The new pool supervisor while it is still starting, and its first running member."""

    async def found() -> tuple[Any, dict] | None:
        handle = await root.child_handle.remote(pool_id)
        if handle is None:
            return None
        try:
            snap = await asyncio.wait_for(handle.snapshot.remote(), 2)
        except (ray.exceptions.RayError, TimeoutError):
            return None
        if snap["pid"] == old_pid or snap["state"] == "created":
            return None
        assert snap["state"] == "starting", f"missed the start window: {snap}"
        running = [c for c in snap["children"] if c["state"] == "running"]
        return (handle, running[0]) if running else None

    return await wait_for(found, timeout_s=60, interval_s=0.05)  # type: ignore[return-value]


async def test_a_child_without_a_breaker_is_never_parked(tree) -> None:
    """A core child (circuit_breaker=False) killed again and again, past the breaker's
    threshold and past the intensity (circuit_break), always comes back running."""
    root = await tree.start(
        sup(
            tree.uid("core"),
            [worker("tm", name=f"tm:{tree.uid('x')}", circuit_breaker=False), worker("agentish")],
            max_restarts=2,
            period_s=300,
            on_intensity="circuit_break",
            breaker={"failure_threshold": 2, "reset_timeout_s": 60, "max_reset_timeout_s": 60},
        )
    )
    pid = (await children_of(root))["tm"]["pid"]
    for _ in range(5):
        kill(pid)
        began = time.monotonic()
        while True:  # never circuit_open on the way back
            child = (await children_of(root))["tm"]
            assert child["state"] != "circuit_open" and child["breaker"] == "closed", child
            if child["state"] == "running" and child["pid"] != pid:
                pid = child["pid"]
                break
            assert time.monotonic() - began < RECOVERY_S, child
            await asyncio.sleep(0.05)
    # the same treatment parks a child that has a breaker
    other = (await children_of(root))["agentish"]["pid"]
    kill(other)
    await wait_for(lambda: _state(root, "agentish", "circuit_open"), timeout_s=RECOVERY_S)


async def test_core_escalation_brings_back_the_named_core_children(tree) -> None:
    """Past its intensity a core supervisor escalates; its parent starts it again, and it
    starts its named children again (their old names released)."""
    core_id = tree.uid("core")
    names = {"tm": f"tm:{tree.uid('n')}", "relay": f"relay:{tree.uid('n')}"}
    core = sup(
        core_id,
        [worker(cid, name=name, circuit_breaker=False) for cid, name in names.items()],
        max_restarts=1,
    )
    root = await tree.start(
        sup(tree.uid("root"), [{"id": core_id, "supervisor": core, "circuit_breaker": False}])
    )
    core_pid = (await children_of(root))[core_id]["pid"]
    handle = await root.child_handle.remote(core_id)
    pids = {cid: c["pid"] for cid, c in (await children_of(handle)).items()}
    kill(pids["tm"])  # restart 1: within intensity
    again = await back_running(handle, {"tm": pids["tm"]})
    kill(again["tm"]["pid"])  # restart 2: past it -> escalate
    await back_running(root, {core_id: core_pid})
    new_core = await root.child_handle.remote(core_id)
    fresh = await back_running(new_core, pids)
    for cid, name in names.items():
        named = ray.get_actor(name, namespace=tree.namespaces[-1])
        assert (await named.whoami.remote())["pid"] == fresh[cid]["pid"]


async def test_a_dead_agent_is_reported_to_the_task_manager(tree) -> None:
    template = tree.uid("told")
    pool_id = tree.uid("toldpool")
    pool_spec = {
        "id": pool_id,
        "strategy": "simple_one_for_one",
        "template": {"id": template, "agent": "actors.builtin.echo:CounterAgent"},
        "size": 1,
        "heartbeat": FAST_HEARTBEAT,
        "backoff": NO_BACKOFF,
    }
    root = await tree.start(
        sup(
            tree.uid("told"),
            [
                {"id": "tm-0", "actor": TM_STAND_IN, "name": "tm:0"},
                {"id": pool_id, "supervisor": pool_spec},
            ],
            # a loaded machine may stall the stand-in's loop past a fast heartbeat's bound
            heartbeat={"interval_s": 1.0, "timeout_s": 5.0, "misses": 5},
        )
    )
    tm = await root.child_handle.remote("tm-0")
    pool = await root.child_handle.remote(pool_id)
    member = f"{template}-1"
    pid = (await children_of(pool))[member]["pid"]
    kill(pid)
    assert await wait_for(lambda: _downs(tm, member), timeout_s=RECOVERY_S)
    await back_running(pool, {member: pid}, timeout_s=AGENT_RECOVERY_S)


async def _downs(tm: Any, member: str) -> bool:
    return member in await tm.downs.remote()


async def _restart_began(handle: Any, child_id: str, old_pid: int) -> bool:
    child = (await children_of(handle))[child_id]
    return child["state"] == "starting" or (child["state"] == "running" and child["pid"] != old_pid)


async def _state(handle: Any, child_id: str, state: str) -> bool:
    return (await children_of(handle))[child_id]["state"] == state


async def _events(pool: Any, supervisor_id: str) -> list[tuple[str, str | None, str]]:
    rows = await pool.fetch(
        "SELECT event, child_id, reason FROM supervisor_events WHERE supervisor_id = $1"
        " ORDER BY id",
        supervisor_id,
    )
    return [(r["event"], r["child_id"], r["reason"]) for r in rows]


# ---- decisions while PostgreSQL is unreachable ---------------------------------------


async def test_decisions_made_while_postgres_is_down_are_written_once_it_answers(
    tree, services, system_pool
) -> None:
    """This session's embedded PostgreSQL is stopped under a running supervisor: the
    child is still restarted, and the decisions are written, in order, once it is back."""
    assert services.postgres is not None, "this test stops the embedded PostgreSQL"
    sup_id = tree.uid("outage")
    root = await tree.start(sup(sup_id, [worker("w")]))
    pid = (await children_of(root))["w"]["pid"]
    await wait_for(lambda: _kinds(system_pool, sup_id), timeout_s=RECOVERY_S)
    await asyncio.to_thread(services.postgres.stop)
    try:
        kill(pid)
        await back_running(root, {"w": pid})  # supervision does not wait for its store
    finally:
        await asyncio.to_thread(services.postgres.start)
    await system_pool.expire_connections()
    expected = ["child_started", "child_exited", "restart_scheduled", "child_started", "restarted"]

    async def all_written() -> bool:
        return await _kinds(system_pool, sup_id) == expected

    try:
        await wait_for(all_written, timeout_s=RECOVERY_S, interval_s=0.2)
    except AssertionError:
        raise AssertionError(f"written: {await _kinds(system_pool, sup_id)}") from None


async def _kinds(pool: Any, sup_id: str) -> list[str] | None:
    try:
        return [e for e, c, _ in await _events(pool, sup_id) if c == "w"]
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None  # the session's pool reconnecting after the outage


# ---- the writer's retry and the start's wait for the store, as units ----------------


class _FlakyStore:
    """Refuses `fail` writes as an unreachable server does, then accepts."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.written: list[int] = []

    async def write(self, item: int) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionRefusedError("connection refused")
        self.written.append(item)


async def test_decisions_are_written_in_order_once_the_store_answers() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    store = _FlakyStore(fail=7)
    writer = asyncio.create_task(write_in_order(queue, store.write, min_s=0.001, max_s=0.004))
    try:
        for item in range(5):
            queue.put_nowait(item)
        await asyncio.wait_for(queue.join(), 10)
        assert store.written == [0, 1, 2, 3, 4]
        assert store.fail == 0
    finally:
        writer.cancel()


async def test_a_decision_the_store_refuses_for_good_is_dropped_alone() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    written: list[int] = []

    async def write(item: int) -> None:
        if item == 1:
            raise asyncpg.exceptions.StringDataRightTruncationError("value too long")
        written.append(item)

    writer = asyncio.create_task(write_in_order(queue, write, min_s=0.001))
    try:
        for item in range(3):
            queue.put_nowait(item)
        await asyncio.wait_for(queue.join(), 10)
        assert written == [0, 2]
    finally:
        writer.cancel()


async def test_a_start_waits_a_bounded_time_for_the_store() -> None:
    store = _FlakyStore(fail=3)
    await retry_until(lambda: store.write(1), budget_s=5, min_s=0.001)
    assert store.written == [1]
    forever = _FlakyStore(fail=10**9)
    began = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        await retry_until(lambda: forever.write(1), budget_s=0.2, min_s=0.01, max_s=0.05)
    assert time.monotonic() - began < 1
