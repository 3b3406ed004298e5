"""Chaos: tasks submitted over HTTP while agents, tm:0, the relay and the pool supervisor
are SIGKILLed are each completed exactly once, with exactly one result event, and after
every kind of fault the system takes tasks again and the killed actor runs again (within
the run's `--recover-timeout`; how fast is the bench's figure, not an assertion here).
The checker itself is tested first, on records made by hand: a checker that never sees a
loss would make the run worthless."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.quiet


def _report(figures: dict[str, Any]) -> str:
    """What a failure message shows: the figures without the fault log and stderr, then
    the fault log and the tail of the run's stderr."""
    main = {k: v for k, v in figures.items() if k not in ("fault_log", "_stderr")}
    return (
        json.dumps(main, indent=1)
        + "\nfault log: "
        + json.dumps(figures.get("fault_log"))
        + "\nstderr tail:\n"
        + str(figures.get("_stderr", ""))[-1500:]
    )


# ---- the checker, on records made by hand ------------------------------------------------


def _key(chaos: ModuleType, n: int, ids: list[str], **extra: Any) -> Any:
    return chaos.KeyState(f"k{n}", {"i": n}, ids=ids, **extra)


def _row(n: int, status: str = "completed", result: Any = "same") -> dict[str, Any]:
    return {
        "id": f"t{n}",
        "idempotency_key": f"k{n}",
        "status": status,
        "attempt": 1,
        "result": {"i": n} if result == "same" else result,
        "error": None if status == "completed" else {"reason": "agent died"},
        "attempt_errors": [],
    }


def _event(n: int, event_id: str, status: str = "completed") -> dict[str, Any]:
    return {"task_id": f"t{n}", "event_id": event_id, "status": status}


def test_checker_counts_a_clean_run_as_clean(chaos_module: ModuleType) -> None:
    keys = [_key(chaos_module, n, [f"t{n}"]) for n in range(3)]
    rows = [_row(n) for n in range(3)]
    events = [_event(n, f"e{n}") for n in range(3)]
    figures = chaos_module.check(keys, rows, events)
    assert figures["submitted"] == figures["completed_once"] == 3
    for name in ("completed_twice", "lost", "failed", "events_missing", "events_duplicated"):
        assert figures[name] == 0, name


def test_checker_sees_every_kind_of_breakage(chaos_module: ModuleType) -> None:
    keys = [
        _key(chaos_module, 0, ["t0"]),  # completed, but its result event twice (same id)
        _key(chaos_module, 1, ["t1", "t1b"]),  # two task ids answered for one key
        _key(chaos_module, 2, ["t2"]),  # accepted, not in PostgreSQL
        _key(chaos_module, 3, [], gave_up=True),  # never accepted
        _key(chaos_module, 4, ["t4"]),  # failed
        _key(chaos_module, 5, ["t5"]),  # completed, no result event
        _key(chaos_module, 6, ["t6"]),  # completed twice: two completed result events
        _key(chaos_module, 7, ["t7"]),  # never ended
        _key(chaos_module, 8, ["t8"]),  # completed with another task's result
    ]
    rows = [
        _row(0),
        _row(1),
        _row(4, "failed"),
        _row(5),
        _row(6),
        _row(7, "running"),
        _row(8, result={"i": 0}),
    ]
    events = [
        _event(0, "e0"),
        _event(0, "e0"),
        _event(1, "e1"),
        _event(4, "e4", "failed"),
        _event(6, "e6a"),
        _event(6, "e6b"),
        _event(8, "e8"),
    ]
    figures = chaos_module.check(keys, rows, events)
    assert figures["attempted"] == 9
    assert figures["submitted"] == 8
    assert figures["completed_twice"] == 3  # keys 0 (same event twice), 1, 6
    assert figures["lost"] == 3  # keys 2, 3, 7
    assert figures["lost_detail"] == {"not_in_db": 1, "gave_up": 1, "not_ended:running": 1}
    assert figures["failed"] == 1
    assert figures["examples"]["failed"][0]["error"] == json.dumps({"reason": "agent died"})
    assert figures["completed_once"] == 2  # keys 5, 8
    assert figures["events_missing"] == 1  # key 5
    assert figures["wrong_result"] == 1  # key 8
    assert figures["events_duplicated"] == 2  # tasks t0 (by event id) and t6 (by task)
    assert figures["events_duplicated_by"] == {"event_id": 1, "task_id": 2}


def test_overlapping_faults_are_told_apart(chaos_module: ModuleType) -> None:
    fault = chaos_module.Fault
    faults = [
        fault("agent", 1.0, "agent:echo-1", 1, took_ms=100.0),  # alone
        fault("agent", 5.0, "agent:echo-2", 2, took_ms=4000.0),  # tm:0 died meanwhile
        fault("tm", 6.0, "tm:0", 3, took_ms=3000.0),
        fault("relay", 20.0, "relay", 4, took_ms=None),  # never recovered: the bound
        fault("agent", 25.0, "agent:echo-3", 5, took_ms=50.0),  # within the relay's bound
    ]
    chaos_module.mark_overlaps(faults, 10.0)
    assert [f.overlapped_by for f in faults] == [[], ["tm@6.0"], [], [], ["relay@20.0"]]


def test_an_outage_counts_the_answers_until_it_healed(chaos_module: ModuleType) -> None:
    # PostgreSQL stopped at 10 s, started again 10 s later, /readyz green 1 s after that
    outage = chaos_module.Fault("postgres", 10.0, "postgres", 0, 500.0, 1000.0, 10000.0)
    run = chaos_module.Run()
    run.faults.append(outage)
    run.answers += [(5.0, "503"), (12.0, "503"), (15.0, "500"), (20.9, "429"), (21.5, "503")]
    chaos_module.fault_answers(run, 30.0)
    assert outage.http == {"503": 1, "500": 1, "429": 1}
    summary = chaos_module.fault_summary(run, dict.fromkeys(chaos_module.KINDS, 0.0), 30.0)
    assert summary["postgres"]["http_during"] == outage.http


# ---- the run -----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(480)
def test_every_task_completes_exactly_once(chaos_run: dict[str, Any]) -> None:
    figures = chaos_run
    report = _report(figures)
    assert figures["submitted"] > 0, report
    assert figures["completed_once"] == figures["submitted"] == figures["attempted"], report
    assert figures["completed_twice"] == 0, report
    assert figures["lost"] == 0, report
    assert figures["failed"] == figures["cancelled"] == figures["timed_out"] == 0, report
    assert figures["wrong_result"] == 0, report
    probes = figures["probes"]
    assert probes["accepted_not_in_db"] == 0, report
    assert set(probes["in_db"]) <= {"completed"}, report


@pytest.mark.integration
@pytest.mark.timeout(480)
def test_every_result_event_arrives_once(chaos_run: dict[str, Any]) -> None:
    figures = chaos_run
    report = _report(figures)
    assert figures["events_missing"] == 0, report
    assert figures["events_duplicated"] == 0, report
    assert figures["events_status_mismatch"] == 0, report


@pytest.mark.integration
@pytest.mark.timeout(480)
def test_every_fault_kind_is_recovered_from(chaos_run: dict[str, Any]) -> None:
    figures = chaos_run
    report = _report(figures)
    for kind, fault in figures["faults"].items():
        if not fault["every_s"]:  # a kind this run does not inject
            continue
        assert fault["count"] >= 1, f"no {kind} was killed\n{report}"
        # within the run's --recover-timeout; how fast is the bench's to say, not a test's
        assert fault["unrecovered"] == 0, f"{kind}: tasks not taken again\n{report}"
        assert fault["not_back"] == 0, f"{kind}: not running again\n{report}"
