"""A three-node Ray cluster loses a worker node while tasks run: the tree heals on the
surviving nodes, every task completes exactly once, and a node that comes back takes
new agents.

The cluster runs in a subprocess (`node_loss.py`, its own Ray under a temp dir of its
own, on free ports), so the session's Ray of this xdist worker and the other's are not
touched; it uses the session's PostgreSQL (a database of this module's) and NATS.

Measured here (2 cores shared with other test runs, load average ~30): with `sup:core`
and `sup:agents` on the lost node (both subtrees restarted by the root, every agent and
task manager with them), the tree was whole again 28 s after the node's SIGKILL; all 12
tasks completed, each once (one result event each); the re-added node took the first
agent started after it joined. `RECOVERY_BOUND_S` (45 s) is the bound asserted. The
whole module takes 60-100 s (cluster start ~6 s, tree ~16 s when the machine is quiet).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import delete_stream

from runtime.config import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.quiet]

DRIVER = Path(__file__).with_name("node_loss.py")
ROOT = Path(__file__).resolve().parents[2]
TASKS = 12
RECOVERY_BOUND_S = 45.0
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def node_loss(
    services: Any, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The facts of one run of the driver (its last stdout line; kept in the basetemp's
    `node-loss*/facts.json`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "RAY_ADDRESS", "RAYVISOR_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    try:
        process = subprocess.run(
            [
                sys.executable,
                str(DRIVER),
                "--database-url", database_url,
                "--nats-url", services.nats_url,
                "--tasks", str(TASKS),
                "--recover-timeout", str(RECOVERY_BOUND_S),
            ],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            cwd=ROOT,
            env=env,
        )  # fmt: skip
    finally:  # its subjects would clash with the next stream made on this NATS
        asyncio.run(delete_stream(services.nats_url, load_settings().stream_name))
    lines = process.stdout.strip().splitlines()
    assert lines, f"no output (exit {process.returncode}): {process.stderr[-3000:]}"
    facts = json.loads(lines[-1])
    (tmp_path_factory.mktemp("node-loss") / "facts.json").write_text(
        json.dumps(facts, indent=1) + "\n" + process.stderr[-20000:]
    )
    facts["_stderr"] = process.stderr[-3000:]
    brief = {k: v for k, v in facts.items() if k not in ("tasks", "result_events")}
    assert "error" not in facts, json.dumps(brief, indent=1)[-8000:]
    return facts


def _lost(facts: dict[str, Any]) -> tuple[set[str], list[dict[str, Any]]]:
    """What died with the node: everything on it, and the subtree of every supervisor on
    it (owner fate-sharing); and the supervisors on it."""
    before = facts["before"]
    lost = set(facts["on_victim_before"])
    supervisors = [n for n in before if n["id"] in lost and n["kind"] == "supervisor"]
    frontier = {n["id"] for n in supervisors}
    while frontier:
        children = {n["id"] for n in before if n["parent"] in frontier}
        frontier = children - lost
        lost |= children
    return lost, supervisors


def test_the_victim_node_held_a_supervisor_and_agents_with_tasks_running(node_loss) -> None:
    # Ray places the supervisors; one on the victim node (the case measured in the README)
    # is not guaranteed: the restart of a lost supervisor is checked when it happened
    assert any(n.startswith("echo-") for n in node_loss["on_victim_before"]), node_loss["before"]
    assert node_loss["running_on_victim"], "no task ran on the victim node when it died"


def test_the_tree_is_whole_on_the_surviving_nodes_within_the_bound(node_loss) -> None:
    assert node_loss["recovery_s"] is not None, node_loss["after"]
    assert node_loss["recovery_s"] <= RECOVERY_BOUND_S
    after = node_loss["after"]
    assert all(n["node_id"] != node_loss["victim"] for n in after)
    assert all(n["state"] == "running" for n in after)
    # what ran on the node, and the subtrees of its supervisors wherever they ran, are
    # new actors: restarted by their parents
    lost, supervisors = _lost(node_loss)
    assert lost <= set(node_loss["restarted_here"]), sorted(lost)
    exits = {(e["supervisor_id"], e["child_id"]) for e in node_loss["supervisor_events"]}
    for sup in supervisors:
        # the root is restarted by Ray itself; a supervisor whose parent was lost too comes
        # back inside its parent's restarted subtree, not by an exit of its own
        if sup["parent"] is not None and sup["parent"] not in lost:
            assert (sup["parent"], sup["id"]) in exits


def test_every_task_completes_exactly_once(node_loss) -> None:
    assert node_loss["statuses"] == {"completed": TASKS}
    assert len(node_loss["tasks"]) == TASKS
    for task in node_loss["tasks"]:
        assert task["status"] == "completed"
        assert task["result_matches"], task
        assert node_loss["result_events"].get(task["id"]) == 1, task


def test_a_node_that_comes_back_takes_new_agents(node_loss) -> None:
    assert node_loss.get("new_node_agent"), node_loss["new_node_spawns"]
