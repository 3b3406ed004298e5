"""`rayvisor services`: up, status, down, up again keeps the data; a second up reuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import nats
import pytest

from runtime.config import load_settings
from runtime.services import service_status

pytestmark = pytest.mark.integration


def rayvisor(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYVISOR_")}
    env |= {"RAYVISOR_HOME": str(home), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return result


def statuses(home: Path) -> dict:
    return {s.name: s for s in service_status(load_settings(home=home))}


async def test_up_status_down_up_keeps_data(tmp_path: Path, monkeypatch) -> None:
    for name in [n for n in os.environ if n.startswith("RAYVISOR_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    rayvisor(home, "services", "up")
    first = statuses(home)
    assert first["postgres"].running and first["nats"].running
    try:
        # a second `up` reuses the running servers
        rayvisor(home, "services", "up")
        again = statuses(home)
        assert again["postgres"].pid == first["postgres"].pid
        assert again["nats"].pid == first["nats"].pid
        assert "running" in rayvisor(home, "services", "status").stdout

        conn = await asyncpg.connect(first["postgres"].url)
        await conn.execute("INSERT INTO projects (id, name) VALUES (gen_random_uuid(), 'kept')")
        await conn.close()
        nc = await nats.connect(first["nats"].url)
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        await js.publish("kept.one", b"still here")
        await nc.close()

        assert "postgres, nats" in rayvisor(home, "services", "down").stdout
        stopped = statuses(home)
        assert not stopped["postgres"].running and not stopped["nats"].running

        rayvisor(home, "services", "up")
        back = statuses(home)
        assert back["postgres"].url == first["postgres"].url  # same ports: clients reconnect
        conn = await asyncpg.connect(back["postgres"].url)
        assert await conn.fetchval("SELECT name FROM projects") == "kept"
        await conn.close()
        nc = await nats.connect(back["nats"].url)
        msg = await nc.jetstream().get_msg("KEPT", 1)
        assert msg.data == b"still here"
        await nc.close()
    finally:
        rayvisor(home, "services", "down")
