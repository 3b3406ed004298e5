"""`rayvisor up` serves the API with a fresh admin key; `rayvisor down` stops it all; a
second `up` on the same home or database, or on a taken port, is refused."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
import ray
from helpers import delete_stream, free_port, rayvisor_cli, start_up, wait_until

pytestmark = pytest.mark.integration


def _env(services, port: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "RAYVISOR_HOME": str(services.home),
        "RAYVISOR_DATABASE_URL": services.database_url,
        "RAYVISOR_NATS_URL": services.nats_url,
        "RAYVISOR_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "RAYVISOR_NAMESPACE": f"up-{uuid.uuid4().hex[:6]}",
        "RAYVISOR_HTTP_PORT": str(port),
        "COLUMNS": "250",
        **extra,
    }


@pytest.mark.timeout(600)  # two `up`s and 30 s of work: ~220 s on a loaded 2-core machine
def test_up_serves_refuses_a_second_up_and_down_then_up_finishes_every_task_once(
    services, ray_session, tmp_path: Path
) -> None:
    """One `up` as a user runs it: it prints a working admin key and how to sign in to the
    dashboard; a second `up` on the same home or database is refused naming the first; a
    deploy loses nothing: `rayvisor down` while tasks run hands them back (no attempt
    spent, none cancelled) and stops everything, and the next `up` on the same home reuses
    its key and finishes them. (One test: each `up` starts a whole tree and Serve app.)"""
    config = tmp_path / "rayvisor.yaml"
    pool = "{id: echo, agent: 'actors.builtin.echo:EchoAgent', size: 2}"
    config.write_text(f"tree:\n  pools:\n    - {pool}\n")
    port = free_port()
    env = _env(services, port, RAYVISOR_CONFIG=str(config))
    # 6 tasks of 10 s on 2 agents: 30 s of work; `down` stops Serve first (up to ~20 s on
    # a loaded machine), and must still find tasks running or waiting to hand back
    body = {"title": "deploy", "required_capabilities": ["echo"], "parameters": {"sleep_s": 10}}
    printed: list[str] = []
    up, key = start_up(env, printed)
    try:
        assert (services.home / "api_key").read_text().strip() == key
        _assert_dashboard_sign_in_works(printed)
        _assert_a_second_up_is_refused(services, env, up, port, tmp_path)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["tm:0"] == "ok"
            auth = {"Authorization": f"Bearer {key}"}
            assert http.get("/api/v1/agents", headers=auth).status_code == 200
            ids = []
            for _ in range(6):
                created = http.post("/api/v1/tasks", json=body, headers=auth)
                assert created.status_code == 201, created.text
                ids.append(created.json()["id"])
            wait_until(  # work is under way
                lambda: _count(services.database_url, ids, "started_at IS NOT NULL") >= 2,
                timeout_s=60,
            )
        down = rayvisor_cli(env, "down")
        assert down.returncode == 0, down.stderr
        assert "HTTP API" in down.stdout and "supervision tree" in down.stdout
        assert up.wait(timeout=120) == 0
        with pytest.raises(httpx.TransportError), httpx.Client(timeout=5) as http:
            http.get(f"http://127.0.0.1:{port}/healthz")
        assert _owner_pid(services.database_url) is None  # released with the process
        assert _count(services.database_url, ids, "status = 'completed'") < len(ids)

        up, second_key = start_up(env)
        assert second_key == key  # `up` reuses its admin key, and it is the only one
        assert _live_up_keys(services.database_url) == [key.split("_")[1]]
        wait_until(
            lambda: _count(services.database_url, ids, "status = 'completed'") == len(ids),
            timeout_s=240,
            interval_s=0.5,
        )
        assert _count(services.database_url, ids, "attempt = 1 AND attempt_errors = '[]'") == 6
        assert _count_results(services.database_url, ids) == {"completed": 6}
        assert rayvisor_cli(env, "down").returncode == 0
        assert up.wait(timeout=120) == 0
    finally:
        if up.poll() is None:  # stop its Serve app and tree too: the next modules need Serve
            rayvisor_cli(env, "down")
            up.kill()
        asyncio.run(delete_stream(services.nats_url, "RAYVISOR"))


def _assert_dashboard_sign_in_works(printed: list[str]) -> None:
    """The "Ray dashboard" row names the dashboard and the token file to sign in with (Ray
    asks for it); with that token the dashboard's API answers, without it refuses."""
    said = "".join(printed)
    found = re.search(r"Ray dashboard\s*│\s*(http://\S+)", said)
    assert found, said
    dashboard = found.group(1)
    token_in = re.search(r"sign in with the token in (\S+) \(`ray get-auth-token`", said)
    assert token_in, said
    token_file = Path(token_in.group(1))
    assert token_file.is_file(), token_file
    token = token_file.read_text().strip()
    with httpx.Client(base_url=dashboard, timeout=30) as http:
        assert http.get("/api/v0/actors?limit=1").status_code == 401
        signed_in = http.get("/api/v0/actors?limit=1", headers={"Authorization": f"Bearer {token}"})
        assert signed_in.status_code == 200, signed_in.text


def _assert_a_second_up_is_refused(
    services, env: dict[str, str], up: subprocess.Popen[str], port: int, tmp_path: Path
) -> None:
    """A second `up` on the same home (refused by the home's lock) or on another home with
    the same database (refused by the database's lock, named by its row) changes nothing:
    the first serves on and still owns the database."""
    again = rayvisor_cli({**env, "RAYVISOR_HTTP_PORT": str(free_port())}, "up")
    assert again.returncode != 0
    said = " ".join(again.stderr.split())
    assert f"home {services.home}" in said and f"pid {up.pid}" in said, said
    assert f"http://127.0.0.1:{port}" in said and "dashboard" in said, said
    assert "Ray " in said and "started " in said, said
    assert "is ready" not in again.stdout
    other = _env(services, free_port(), RAYVISOR_HOME=str(tmp_path / "other-home"))
    elsewhere = rayvisor_cli(other, "up")
    assert elsewhere.returncode != 0
    said = " ".join(elsewhere.stderr.split())
    assert "database" in said and f"pid {up.pid}" in said, said
    assert f"http://127.0.0.1:{port}" in said, said
    assert _owner_pid(services.database_url) == up.pid


def test_up_on_a_taken_port_is_refused(services, ray_session, database_url, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(
            services,
            port,
            RAYVISOR_HOME=str(tmp_path / "home"),
            RAYVISOR_DATABASE_URL=database_url,
        )
        refused = rayvisor_cli(env, "up")
    assert refused.returncode != 0
    said = " ".join(refused.stderr.split())
    assert f"port {port}" in said and "taken" in said, said
    assert _owner_pid(database_url) is None


def _owner_pid(database_url: str) -> int | None:
    async def read() -> int | None:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval("SELECT pid FROM system_owner")
        finally:
            await conn.close()

    return asyncio.run(read())


def _live_up_keys(database_url: str) -> list[str]:
    """The prefixes of the live admin keys `up` made."""

    async def read() -> list[str]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT prefix FROM api_keys WHERE name = 'admin (rayvisor up)'"
                " AND revoked_at IS NULL"
            )
            return [r["prefix"] for r in rows]
        finally:
            await conn.close()

    return asyncio.run(read())


def _count(database_url: str, ids: list[str], where: str) -> int:
    async def read() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(
                f"SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[]) AND {where}",
                [uuid.UUID(i) for i in ids],
            )
        finally:
            await conn.close()

    return asyncio.run(read())


def _count_results(database_url: str, ids: list[str]) -> dict[str, int]:
    """Result events in the outbox by status: one per task, or a task ended twice."""

    async def read() -> dict[str, int]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT payload->>'status' AS status, count(*) AS n FROM outbox"
                " WHERE subject = ANY($1::text[]) GROUP BY 1",
                [f"tasks.{i}.result" for i in ids],
            )
            return {r["status"]: r["n"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(read())
