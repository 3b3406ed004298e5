"""The HTTP API across task-manager failures: a SIGKILLed `tm:0` is restarted by its
supervisor and submits reach the new one; a shard that stays down makes `/readyz` name it
and submits answer 503 with `Retry-After` after the restart bound; a retry with the same
`Idempotency-Key` then gets one task."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import pytest
import ray
from helpers import wait_until

from actors.tasks import RESTART_WAIT_S

pytestmark = pytest.mark.integration

ECHO_TASK = {"title": "after a fault", "required_capabilities": ["echo"], "parameters": {"n": 1}}


def _node(tree: dict[str, Any], actor_name: str) -> dict[str, Any] | None:
    if tree.get("actor_name") == actor_name:
        return tree
    for child in tree.get("children", []):
        found = _node(child, actor_name)
        if found is not None:
            return found
    return None


def _running_tm_pid(rv: Any) -> int | None:
    """tm:0's pid from the supervision tree, once its current incarnation runs."""
    node = _node(rv.tree(), "tm:0")
    return node["pid"] if node and node["state"] == "running" else None


def _auth(http_system: Any, scope: str = "write") -> dict[str, str]:
    return {"Authorization": f"Bearer {http_system.keys[scope]}"}


def test_a_submit_after_a_task_manager_sigkill_is_created(http_system) -> None:
    with http_system.client() as rv, http_system.raw() as http:
        pid = wait_until(lambda: _running_tm_pid(rv), timeout_s=60)
        os.kill(pid, signal.SIGKILL)
        began = time.monotonic()
        # one request, no client retry: the ingress waits for the restarted tm:0 itself
        created = http.post("/api/v1/tasks", json=ECHO_TASK, headers=_auth(http_system))
        elapsed = time.monotonic() - began
        assert created.status_code == 201, created.text
        assert elapsed < RESTART_WAIT_S + 2, elapsed
        assert rv.wait_task(created.json()["id"], timeout_s=60)["status"] == "completed"
        # and every later one (the bug was a cached handle to the dead actor: 503 forever)
        for _ in range(3):
            again = http.post("/api/v1/tasks", json=ECHO_TASK, headers=_auth(http_system))
            assert again.status_code == 201, again.text
            assert http.get(f"/api/v1/tasks/{again.json()['id']}",
                            headers=_auth(http_system)).status_code == 200  # fmt: skip
        new_pid = wait_until(lambda: _running_tm_pid(rv), timeout_s=60)
        assert new_pid != pid


def test_a_shard_that_stays_down_is_named_by_readyz_and_refused_submits_succeed_on_retry(
    http_system,
) -> None:
    namespace = http_system.settings.namespace
    core = ray.get_actor("sup:core", namespace=namespace)
    assert ray.get(core.terminate_child.remote("tm-0"), timeout=60)  # gone, not restarted
    key = f"faults-{uuid.uuid4()}"
    headers = {**_auth(http_system), "Idempotency-Key": key}
    with http_system.client() as rv, http_system.raw() as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503, ready.text
        checks = ready.json()["checks"]
        assert checks["tm:0"].startswith("not running"), checks
        assert checks["postgres"] == "ok" and checks["tree"] == "ok", checks

        began = time.monotonic()
        refused = http.post("/api/v1/tasks", json=ECHO_TASK, headers=headers)
        waited = time.monotonic() - began
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert "tm:0" in refused.json()["detail"]
        assert RESTART_WAIT_S <= waited < RESTART_WAIT_S + 5, waited

        # the root restarts the core supervisor, which starts tm:0 again
        ray.kill(core, no_restart=True)
        wait_until(lambda: http.get("/readyz").status_code == 200, timeout_s=60, interval_s=0.1)

        first = http.post("/api/v1/tasks", json=ECHO_TASK, headers=headers)
        assert first.status_code == 201, first.text
        second = http.post("/api/v1/tasks", json=ECHO_TASK, headers=headers)
        assert second.status_code == 200, second.text
        assert second.json()["id"] == first.json()["id"]
        assert rv.wait_task(first.json()["id"], timeout_s=60)["status"] == "completed"
        found = rv.list_tasks(limit=500, newest_first=True)["items"]
        assert sum(1 for t in found if t.get("idempotency_key") == key) == 1
