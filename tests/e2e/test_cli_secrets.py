"""A system started with passwords in its service URLs shows them nowhere Ray shows
things: not in `ray.util.state`, not in the dashboard's HTTP API, not in the logs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import ray
from helpers import delete_stream, free_port, rayvisor_cli, start_up

pytestmark = pytest.mark.integration


def _with_password(url: str, user: str, password: str) -> tuple[str, str]:
    """`url` with a password (its own if it has one, which trust auth ignores otherwise):
    (URL, the password)."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(
        parts._replace(netloc=f"{parts.username or user}:{password}@{host}")
    ), password


def _dashboard_answers(paths: list[str]) -> str:
    """What the session dashboard's HTTP API answers on `paths`, signed in with its token."""
    from ray._private.worker import get_dashboard_url

    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    answers = []
    with httpx.Client(base_url=f"http://{get_dashboard_url()}", timeout=60) as http:
        for path in paths:
            answer = http.get(path, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
            answers.append(answer.text)
    return "\n".join(answers)


def _logs_naming(secrets: list[str], since: float) -> list[str]:
    """The session's log files (what the dashboard's log viewer shows) written since
    `since` that hold one of `secrets`."""
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    wanted = [s.encode() for s in secrets]
    return [
        path.name
        for path in logs.rglob("*")
        if path.is_file()
        and path.stat().st_mtime >= since
        and any(s in path.read_bytes() for s in wanted)
    ]


def test_up_shows_no_service_password_to_ray(services, ray_session, tmp_path: Path) -> None:
    from ray.util import state

    config = tmp_path / "rayvisor.yaml"
    config.write_text("tree:\n  pools: []\n")  # the system's own actors only: a quick start

    database_url, db_password = _with_password(
        services.database_url, "postgres", f"db-{uuid.uuid4().hex}"
    )
    nats_url, nats_password = _with_password(
        services.nats_url, "rayvisor", f"nats-{uuid.uuid4().hex}"
    )
    secrets = [db_password, nats_password]
    port = free_port()
    namespace = f"secrets-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "RAYVISOR_HOME": str(services.home),
        "RAYVISOR_DATABASE_URL": database_url,
        "RAYVISOR_NATS_URL": nats_url,
        "RAYVISOR_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "RAYVISOR_NAMESPACE": namespace,
        "RAYVISOR_HTTP_PORT": str(port),
        "RAYVISOR_CONFIG": str(config),
        "COLUMNS": "250",
    }
    printed: list[str] = []
    began = time.time()
    up, key = start_up(env, printed)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            ready = http.get("/readyz")  # the workers found the URLs: the task manager is up
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["tm:0"] == "ok"
            auth = {"Authorization": f"Bearer {key}"}
            assert http.get("/api/v1/supervisors/tree", headers=auth).status_code == 200
        gcs = ray.get_runtime_context().gcs_address
        actors = state.list_actors(
            address=gcs, detail=True, limit=10_000, raise_on_missing_output=False
        )
        assert any(a.ray_namespace == namespace for a in actors)  # the system's actors
        jobs = state.list_jobs(address=gcs, detail=True, raise_on_missing_output=False)
        shown = {
            "state API": json.dumps([str(a) for a in actors] + [str(j) for j in jobs]),
            "dashboard": _dashboard_answers(
                [
                    "/api/jobs/",
                    "/api/v0/actors?detail=1&limit=10000",
                    "/api/v0/jobs?detail=1",
                    "/logical/actors",
                    "/api/serve/applications/",
                ]
            ),
            "up's output": "".join(printed),
        }
        assert "RAYVISOR_NAMESPACE" not in shown["state API"]  # env of a driver: never shown
        assert "RAYVISOR_SECRETS_KEY" in shown["state API"]  # the job's runtime env is shown
        for where, text in shown.items():
            assert [s for s in secrets if s in text] == [], where
        down = rayvisor_cli(env, "down")
        assert down.returncode == 0, down.stderr
        assert up.wait(timeout=120) == 0
        assert [s for s in secrets if s in up.stdout.read() + up.stderr.read()] == []
        assert _logs_naming(secrets, began) == []
    finally:
        if up.poll() is None:
            subprocess.run([sys.executable, "-m", "serve.cli", "down"], env=env, timeout=180)
            up.kill()
        asyncio.run(delete_stream(services.nats_url, "RAYVISOR"))


async def test_up_keeps_one_admin_key_of_its_own(pool) -> None:
    """`up` reuses the key its file holds; a lost or revoked one is replaced and every
    earlier `up` key revoked: however many `up`s, one admin key of `up` works."""
    from runtime.store import api_keys
    from serve.cli_system import UP_KEY_NAME, up_admin_key

    async def live_up_keys() -> list[str]:
        keys = await api_keys.list_keys(pool, include_revoked=False)
        return [k.prefix for k in keys if k.name == UP_KEY_NAME]

    async with pool.acquire() as conn:
        first = await up_admin_key(conn, None)
        assert await up_admin_key(conn, first) == first  # the second `up`
        _, other = await api_keys.create(conn, "ci", ["admin"])  # not `up`'s: kept
        lost = await up_admin_key(conn, None)  # the key file was deleted
        assert lost != first and await api_keys.find(conn, first) is None
        assert await api_keys.find(conn, other) is not None
        await api_keys.revoke(conn, api_keys._prefix_of(lost) or "")
        fresh = await up_admin_key(conn, lost)  # a revoked key is not reused
    assert fresh != lost and await api_keys.find(pool, fresh) is not None
    assert await live_up_keys() == [api_keys._prefix_of(fresh)]
