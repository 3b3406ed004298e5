"""`rayvisor submit`'s pure parts: which agents can take a task, why none can, and the
status line `--wait` shows."""

from __future__ import annotations

from serve.cli import capability_offers, no_agent_reason, status_line

ECHO = {"id": "echo-1", "capabilities": ["echo"], "state": "idle", "supervisor_id": "pool-echo"}
COUNT = {"id": "count-1", "capabilities": ["count"], "state": "busy"}
TREE = {
    "id": "root",
    "strategy": "one_for_one",
    "children": [
        {
            "id": "agents",
            "strategy": "one_for_one",
            "children": [
                {
                    "id": "pool-scan",
                    "strategy": "simple_one_for_one",
                    "children": [{"id": "scan-1", "kind": "worker", "state": "restarting"}],
                }
            ],
        }
    ],
}


def test_live_agents_offer_and_stopped_ones_only_as_members_of_a_running_pool() -> None:
    stopped = {"id": "scan-1", "capabilities": ["scan"], "state": "stopped"}
    failed = {"id": "old-1", "capabilities": ["old"], "state": "failed"}
    member = {"id": "x-9", "capabilities": ["x"], "state": "error", "supervisor_id": "pool-x"}
    agents = [ECHO, COUNT, stopped, failed, member]
    assert capability_offers(agents) == {
        "echo-1": {"echo"},
        "count-1": {"count"},
        "x-9": {"x"},  # error: its supervisor is restarting it
    }
    with_tree = capability_offers(agents, TREE)
    assert with_tree["scan-1"] == {"scan"}  # a member of pool-scan in the live tree
    assert "old-1" not in with_tree


def test_a_pool_in_the_tree_counts_its_members_by_supervisor_too() -> None:
    gone = {
        "id": "scan-7",
        "capabilities": ["scan"],
        "state": "stopped",
        "supervisor_id": "pool-scan",
    }
    assert capability_offers([gone], TREE) == {"scan-7": {"scan"}}
    assert capability_offers([gone], None) == {}


def test_no_agent_reason_names_what_is_missing_and_what_is_offered() -> None:
    offers = {"echo-1": frozenset({"echo"}), "count-1": frozenset({"count", "sum"})}
    assert no_agent_reason(["echo"], offers) is None
    assert no_agent_reason(["count", "sum"], offers) is None
    assert no_agent_reason([], offers) is None
    assert no_agent_reason(["fly"], offers) == (
        "no running agent or pool offers capability 'fly' (offered: count, echo, sum)"
    )
    assert no_agent_reason(["fly", "echo", "swim"], offers) == (
        "no running agent or pool offers capabilities 'fly', 'swim' (offered: count, echo, sum)"
    )
    assert no_agent_reason(["echo", "count"], offers) == (
        "no single agent offers 'count', 'echo' together (offered: count, echo, sum)"
    )


def test_no_agent_at_all() -> None:
    assert no_agent_reason(["echo"], {}) == "no agent is running and no pool has one"
    assert no_agent_reason([], {}) == "no agent is running and no pool has one"
    assert no_agent_reason([], {"idle-1": frozenset()}) is None


def task(**fields: object) -> dict[str, object]:
    return {"status": "queued", "attempt": 0, "max_attempts": 3, "assigned_to": None, **fields}


def test_status_line_before_the_task_runs() -> None:
    assert status_line(task(status="pending")) == "pending"
    assert status_line(task(status="pending", dependencies=["a"])) == (
        "pending: waiting for its dependencies"
    )
    assert status_line(task()) == "queued"
    assigned = task(status="assigned", attempt=1, assigned_to="echo-1")
    assert status_line(assigned) == "assigned to agent echo-1, attempt 1 of 3"


def test_status_line_while_running_shows_the_progress_of_the_current_attempt_only() -> None:
    running = task(status="running", attempt=2, assigned_to="echo-2")
    assert status_line(running) == "running on agent echo-2, attempt 2 of 3"
    now = {"attempt": 2, "progress": 0.4, "message": "step 2 of 5"}
    assert status_line(running, now) == "running on agent echo-2 40% (step 2 of 5), attempt 2 of 3"
    assert status_line(running, {**now, "message": ""}) == (
        "running on agent echo-2 40%, attempt 2 of 3"
    )
    earlier = {**now, "attempt": 1}
    assert status_line(running, earlier) == "running on agent echo-2, attempt 2 of 3"
    assert status_line(running, {"attempt": 2, "progress": "lots"}) == (
        "running on agent echo-2, attempt 2 of 3"
    )


def test_status_line_of_a_retry_names_the_last_failure_shortly() -> None:
    again = task(attempt=1, attempt_errors=[{"reason": "asked to fail (transient)"}])
    assert status_line(again) == "queued for attempt 2 of 3 (attempt 1: asked to fail (transient))"
    long = task(attempt=2, attempt_errors=[{"reason": "x" * 100}])
    assert status_line(long) == f"queued for attempt 3 of 3 (attempt 2: {'x' * 57}...)"
    assert status_line(task(attempt=1)) == "queued for attempt 2 of 3"


def test_status_line_of_an_ended_task() -> None:
    done = task(status="completed", attempt=1, assigned_to="echo-1")
    assert status_line(done) == "completed on agent echo-1"
    failed = task(status="failed", attempt=3, assigned_to="echo-2")
    assert status_line(failed) == "failed on agent echo-2 after 3 attempts"
    assert status_line(task(status="cancelled")) == "cancelled"
