"""`rayvisor up` serves the API with a fresh admin key; `rayvisor down` stops it all."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid

import httpx
import pytest
import ray
from helpers import delete_stream, free_port, wait_until

pytestmark = pytest.mark.integration


def test_up_prints_a_working_admin_key_and_down_stops_everything(services, ray_session) -> None:
    port = free_port()
    env = {
        **os.environ,
        "RAYVISOR_HOME": str(services.home),
        "RAYVISOR_DATABASE_URL": services.database_url,
        "RAYVISOR_NATS_URL": services.nats_url,
        "RAYVISOR_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "RAYVISOR_NAMESPACE": f"up-{uuid.uuid4().hex[:6]}",
        "RAYVISOR_HTTP_PORT": str(port),
        "COLUMNS": "250",
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "serve.cli", "up"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        lines: list[str] = []

        def key_printed() -> str | None:
            line = up.stdout.readline() if up.stdout else ""
            assert line or up.poll() is None, up.stderr.read() if up.stderr else ""
            lines.append(line)
            found = re.search(r"admin key\s*│?\s*(rv_\S+)", line)
            return found.group(1) if found else None

        key = wait_until(key_printed, timeout_s=180, interval_s=0)
        assert (services.home / "api_key").read_text().strip() == key
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text
            agents = http.get("/api/v1/agents", headers={"Authorization": f"Bearer {key}"})
            assert agents.status_code == 200
        down = subprocess.run(
            [sys.executable, "-m", "serve.cli", "down"],
            env=env,
            text=True,
            capture_output=True,
            timeout=180,
        )
        assert down.returncode == 0, down.stderr
        assert "HTTP API" in down.stdout and "supervision tree" in down.stdout
        assert up.wait(timeout=60) == 0
        with pytest.raises(httpx.TransportError), httpx.Client(timeout=5) as http:
            http.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        if up.poll() is None:
            up.kill()
        asyncio.run(delete_stream(services.nats_url, "RAYVISOR"))
