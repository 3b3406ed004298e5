"""`rayvisor demo` as a user runs it (its own local Ray): its output is the demo's, with
none of Ray's chatter (the raylet's messages, worker output, Ray's start-up notices), even
though the demo SIGKILLs an agent part-way."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import delete_stream, free_port

pytestmark = pytest.mark.integration

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_FROM_RAY = re.compile(r"^\((raylet|pid=\d+|[\w.:-]+ pid=\d+)[,)]")
_RAY_NOTICES = (
    "A worker died or was killed",
    "PYTHON worker processes have been started",
    "Started a local Ray instance",
    "Token authentication is enabled for this Ray cluster",
    "View the dashboard at",
)


def chatter(output: str) -> list[str]:
    """The lines of `output` that come from Ray: the raylet, a worker, Ray's notices."""
    found = []
    for raw in output.splitlines():
        line = _ANSI.sub("", raw).strip()
        if _FROM_RAY.match(line) or any(notice in line for notice in _RAY_NOTICES):
            found.append(line)
    return found


def test_chatter_is_found_in_ray_shaped_lines() -> None:
    output = "\n".join(
        [
            "\x1b[33m(raylet)\x1b[0m A worker died or was killed while executing a task",
            "(AgentHost pid=4242) hello",
            "(pid=77) started",
            "2026-12-02 15:40:01,123\tINFO worker.py:2000 -- Started a local Ray instance.",
            "project 1b2c: Investigate SSH incident (http://127.0.0.1:8000)",
            "(no chunk was running when the demo looked: nothing was killed)",
        ]
    )
    assert len(chatter(output)) == 4


def test_demo_prints_its_story_and_no_ray_chatter(
    services: Any, database_url: str, tmp_path: Path
) -> None:
    stream = f"DEMO{uuid.uuid4().hex[:8].upper()}"
    env = {
        **os.environ,
        "RAYVISOR_HOME": str(tmp_path / "home"),
        "RAYVISOR_DATABASE_URL": database_url,  # a database of its own, schema applied
        "RAYVISOR_NATS_URL": services.nats_url,
        "RAYVISOR_STREAM_NAME": stream,
        "RAYVISOR_HTTP_PORT": str(free_port()),
        "COLUMNS": "200",
    }
    for name in ("RAYVISOR_RAY_ADDRESS", "RAY_ADDRESS"):  # its own local Ray, as a user's
        env.pop(name, None)
    try:
        ran = subprocess.run(
            [str(Path(sys.executable).parent / "rayvisor"), "demo", "--chunks", "6"],
            env=env,
            cwd=tmp_path,
            text=True,
            capture_output=True,
            timeout=420,
        )
    finally:
        asyncio.run(delete_stream(services.nats_url, stream))
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-4000:]
    assert chatter(output) == [], "\n".join(chatter(output))
    for own in (
        "project ",
        "top attacking addresses",
        "supervision events during the demo",
        "Services keep running",
    ):
        assert own in output, f"{own!r} missing from:\n{output[-4000:]}"
    assert "SIGKILL agent" in output or "nothing was killed" in output, output[-4000:]
