"""The `rayvisor` commands that use the HTTP API, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.integration


def rayvisor(http_system, *args: str, key: str = "admin") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RAYVISOR_HOME": str(http_system.settings.home),
        "RAYVISOR_DATABASE_URL": str(http_system.settings.database_url),
        "RAYVISOR_NATS_URL": str(http_system.settings.nats_url),
        "RAYVISOR_HTTP_PORT": str(http_system.settings.http_port),
        "RAYVISOR_API_KEY": http_system.keys[key],
        "COLUMNS": "250",
    }
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_submit_wait_then_list(http_system) -> None:
    title = f"from the cli {uuid.uuid4().hex[:6]}"
    done = rayvisor(http_system, "submit", title, "-c", "echo", "-p", "n=7", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed" in done.stdout and '{"n": 7}' in done.stdout
    listed = rayvisor(http_system, "tasks", "--status", "completed", "--capability", "echo")
    assert listed.returncode == 0, listed.stderr
    assert title in listed.stdout


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
