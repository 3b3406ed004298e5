"""The `rayvisor` commands that use the HTTP API, as a user runs them."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from helpers import wait_until
from systems import rayvisor

pytestmark = pytest.mark.integration


def test_submit_wait_then_list(http_system) -> None:
    title = f"from the cli {uuid.uuid4().hex[:6]}"
    done = rayvisor(http_system, "submit", title, "-c", "echo", "-p", "n=7", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed" in done.stdout and '{"n": 7}' in done.stdout
    listed = rayvisor(http_system, "tasks", "--status", "completed", "--capability", "echo")
    assert listed.returncode == 0, listed.stderr
    assert title in listed.stdout


def test_submit_wait_shows_the_status_then_the_result(http_system) -> None:
    done = rayvisor(http_system, "submit", "slow", "-c", "echo", "-p", "sleep_s=1.5", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    # not a terminal: a line per change of status, then the table
    running = [line for line in lines if ": running on agent echo-" in line]
    assert running and running[0].endswith("attempt 1 of 3"), done.stdout
    ended = [line for line in lines if ": completed on agent echo-" in line]
    assert ended and lines.index(ended[0]) > lines.index(running[0]), done.stdout
    assert '{"sleep_s": 1.5}' in done.stdout


def test_submit_wait_on_a_terminal_shows_a_spinner_line(http_system) -> None:
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    done = rayvisor(
        http_system, "submit", "slow", "-c", "echo", "-p", "sleep_s=1", "--wait", env=terminal
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "running on agent echo-" in done.stdout and "\x1b[" in done.stdout  # redrawn
    assert "completed" in done.stdout and '{"sleep_s": 1}' in done.stdout


def test_submit_wait_for_a_capability_nobody_offers_exits_1_at_once(http_system) -> None:
    capability = f"nobody-{uuid.uuid4().hex[:6]}"
    began = time.monotonic()
    refused = rayvisor(http_system, "submit", "x", "-c", capability, "-c", "echo", "--wait")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert time.monotonic() - began < 60  # at once: no waiting for an agent
    message = " ".join(refused.stderr.split())
    assert f"no running agent or pool offers capability '{capability}'" in message
    assert "offered: " in message and "echo" in message.partition("offered: ")[2]
    assert "not submitted" in message and "--force" in message
    listed = rayvisor(http_system, "tasks", "--capability", capability)
    assert "latest tasks (0)" in listed.stdout, listed.stdout

    # --force queues it anyway: it waits (until --timeout) and says so
    forced = rayvisor(
        http_system, "submit", "x", "-c", capability, "--wait", "--force", "--timeout", "1"
    )
    assert forced.returncode == 1, forced.stdout + forced.stderr
    assert "queued anyway (--force)" in " ".join(forced.stderr.split())
    assert "is still queued after 1 s" in " ".join(forced.stderr.split())
    with http_system.client() as client:
        (task,) = client.list_tasks(capability=capability)["items"]
        assert task["status"] == "queued"
        client.cancel_task(task["id"])

    # without --wait the task is submitted, with a note that nobody takes it yet
    queued = rayvisor(http_system, "submit", "later", "-c", capability)
    assert queued.returncode == 0, queued.stderr
    assert "stays queued until one does" in " ".join(queued.stderr.split())
    with http_system.client() as client:
        for task in client.list_tasks(capability=capability, status="queued")["items"]:
            client.cancel_task(task["id"])


def test_task_progress_reaches_the_client(http_system) -> None:
    reports: list[dict] = []
    with http_system.client() as client, client.fork() as follower:
        task = client.submit_task(
            {
                "title": "steps",
                "required_capabilities": ["echo"],
                "parameters": {"sleep_s": 1.0, "progress": 3},
            }
        )

        def follow() -> None:
            for report in follower.task_progress(task["id"]):
                reports.append(report)
                if report["progress"] >= 1.0:
                    return

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        assert client.wait_task(task["id"], 60)["status"] == "completed"
        wait_until(lambda: len(reports) == 3, timeout_s=10, interval_s=0.05)
    assert [round(r["progress"], 2) for r in reports] == [0.33, 0.67, 1.0]
    assert all(r["attempt"] == 1 and r["message"].startswith("step ") for r in reports)
    assert json.dumps(reports)  # plain JSON, as the event stream carries it


def test_bad_input_exits_2_naming_the_problem_and_changes_nothing(http_system) -> None:
    capability = f"cli-{uuid.uuid4().hex[:6]}"
    refused = rayvisor(http_system, "submit", "x", "-c", capability, "--priority", "12")
    assert refused.returncode == 2 and "priority" in refused.stderr
    refused = rayvisor(http_system, "submit", "x", "-c", capability, "-p", "novalue")
    assert refused.returncode == 2 and "key=value" in refused.stderr
    refused = rayvisor(http_system, "submit", "", "-c", capability)
    assert refused.returncode == 2 and "body.title" in refused.stderr
    refused = rayvisor(http_system, "tasks", "--status", "exploded")
    assert refused.returncode == 2 and "status" in refused.stderr
    listed = rayvisor(http_system, "tasks", "--capability", capability)
    assert "latest tasks (0)" in listed.stdout


def test_a_read_key_cannot_submit(http_system) -> None:
    refused = rayvisor(http_system, "submit", "x", "-c", "echo", key="read")
    assert refused.returncode == 2 and "403" in refused.stderr


def test_agents_and_events(http_system) -> None:
    agents = rayvisor(http_system, "agents", "--capability", "echo")
    assert agents.returncode == 0, agents.stderr
    assert "echo-1" in agents.stdout and "echo-2" in agents.stdout
    tail = rayvisor(
        http_system,
        "events",
        "supervisors.pool-echo.events",
        "--last-event-id",
        "0",
        "--count",
        "2",
    )
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.count("supervisors.pool-echo.events") == 2
    assert "child_started" in tail.stdout


def test_keys_create_list_revoke(http_system) -> None:
    name = f"cli-key-{uuid.uuid4().hex[:6]}"
    made = rayvisor(http_system, "keys", "create", name, "--scope", "write", "--rate", "5")
    assert made.returncode == 0, made.stderr
    prefix = made.stdout.split()[1]
    assert f"rv_{prefix}_" in made.stdout
    listed = rayvisor(http_system, "keys", "list")
    assert name in listed.stdout and prefix in listed.stdout
    assert rayvisor(http_system, "keys", "revoke", prefix).returncode == 0
    again = rayvisor(http_system, "keys", "revoke", prefix)
    assert again.returncode == 1 and "no live key" in again.stderr
    bad = rayvisor(http_system, "keys", "create", name, "--scope", "root")
    assert bad.returncode == 2 and "scope" in bad.stderr
