"""Tasks through real HTTP against the real Serve ingress."""

from __future__ import annotations

import uuid

import pytest
from helpers import wait_until

from runtime.client import ApiError

pytestmark = pytest.mark.integration


def _cap() -> str:
    return f"echo-{uuid.uuid4().hex[:6]}"


def test_submit_runs_on_an_agent_and_completes(http_system) -> None:
    with http_system.client("write") as rv:
        task = rv.submit_task(
            {"title": "hello", "required_capabilities": ["echo"], "parameters": {"x": 1}}
        )
        assert task["status"] in {"pending", "queued", "assigned", "running", "completed"}
        done = rv.wait_task(task["id"], timeout_s=60)
    assert done["status"] == "completed"
    assert done["attempt"] == 1
    assert done["assigned_to"].startswith("echo-")


def test_idempotency_key_returns_the_first_task(http_system) -> None:
    key = f"k-{uuid.uuid4().hex}"
    cap = _cap()
    with http_system.raw() as http:
        headers = {"Authorization": f"Bearer {http_system.keys['write']}", "Idempotency-Key": key}
        body = {"title": "once", "required_capabilities": [cap]}
        first = http.post("/api/v1/tasks", json=body, headers=headers)
        # the same body, written otherwise (a default spelt out, keys reordered): the same
        same = {"priority": first.json()["priority"], **body}
        second = http.post("/api/v1/tasks", json=same, headers=headers)
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["title"] == "once"


def test_idempotency_key_with_another_body_is_422_and_writes_nothing(http_system) -> None:
    key = f"k-{uuid.uuid4().hex}"
    cap = _cap()
    with http_system.raw() as http:
        headers = {"Authorization": f"Bearer {http_system.keys['write']}", "Idempotency-Key": key}
        body = {"title": "once", "required_capabilities": [cap]}
        first = http.post("/api/v1/tasks", json=body, headers=headers)
        other = http.post("/api/v1/tasks", json={**body, "title": "twice"}, headers=headers)
        again = http.post("/api/v1/tasks", json=body, headers=headers)
    assert first.status_code == 201
    assert other.status_code == 422
    error = other.json()["errors"][0]
    assert error["field"] == "header.Idempotency-Key"
    assert "different body" in error["reason"]
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    with http_system.client("read") as rv:
        assert [t["title"] for t in rv.list_tasks(capability=cap)["items"]] == ["once"]


def test_a_result_over_max_result_bytes_fails_the_task_and_the_agent_goes_on(
    http_system,
) -> None:
    limit = http_system.settings.max_result_bytes
    with http_system.client("write") as rv:
        big = rv.submit_task(
            {"title": "big", "required_capabilities": ["echo"],
             "parameters": {"result_bytes": limit + 1}, "max_attempts": 1}
        )  # fmt: skip
        odd = rv.submit_task(
            {"title": "odd", "required_capabilities": ["echo"],
             "parameters": {"not_json": True}, "max_attempts": 1}
        )  # fmt: skip
        failed = rv.wait_task(big["id"], timeout_s=60)
        not_json = rv.wait_task(odd["id"], timeout_s=60)
        after = rv.wait_task(
            rv.submit_task({"title": "after", "required_capabilities": ["echo"]})["id"],
            timeout_s=60,
        )
        shown = rv.get_task(big["id"])
    assert failed["status"] == "failed"
    assert "over the limit of" in shown["error"]["reason"]
    assert "max_result_bytes" in shown["error"]["reason"]
    assert not_json["status"] == "failed"
    assert "not JSON-serialisable" in not_json["error"]["reason"]
    assert after["status"] == "completed"


def test_bad_body_is_422_naming_each_field_and_writes_nothing(http_system) -> None:
    cap = _cap()
    with http_system.raw() as http:
        response = http.post(
            "/api/v1/tasks",
            json={"title": "", "priority": 11, "required_capabilities": [cap], "colour": "red"},
            headers={"Authorization": f"Bearer {http_system.keys['write']}"},
        )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"body.title", "body.priority", "body.colour"} <= fields
    with http_system.client("read") as rv:
        assert rv.list_tasks(capability=cap)["items"] == []


def test_unknown_dependency_is_422_and_unknown_task_404(http_system) -> None:
    cap = _cap()
    with http_system.client("write") as rv:
        with pytest.raises(ApiError) as refused:
            rv.submit_task(
                {"title": "t", "required_capabilities": [cap], "dependencies": [str(uuid.uuid4())]}
            )
        assert refused.value.status == 422
        assert "dependencies" in str(refused.value)
        assert rv.list_tasks(capability=cap)["items"] == []
        with pytest.raises(ApiError) as missing:
            rv.get_task(str(uuid.uuid4()))
        assert missing.value.status == 404
        with pytest.raises(ApiError) as not_uuid:
            rv.get_task("not-a-uuid")
        assert not_uuid.value.status == 422
        assert not_uuid.value.problem["errors"][0]["field"] == "path.task_id"


def test_list_filters_and_pages_with_a_cursor(http_system) -> None:
    cap = _cap()
    with http_system.client("write") as rv:
        made = [
            rv.submit_task({"title": f"t{n}", "required_capabilities": [cap]}) for n in range(5)
        ]
        seen, cursor = [], None
        while True:
            page = rv.list_tasks(capability=cap, limit=2, cursor=cursor)
            seen += [t["id"] for t in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [t["id"] for t in made]
        assert rv.list_tasks(capability=cap, status="completed")["items"] == []
        with pytest.raises(ApiError) as bad:
            rv.list_tasks(cursor="garbage!")
        assert bad.value.problem["errors"][0]["field"] == "query.cursor"


def test_cancel_a_queued_task(http_system) -> None:
    with http_system.client("write") as rv:
        task = rv.submit_task({"title": "nobody can", "required_capabilities": [_cap()]})
        cancelled = rv.cancel_task(task["id"])
        assert cancelled["status"] == "cancelled"
        assert rv.get_task(task["id"])["status"] == "cancelled"


def test_cancel_a_running_task(http_system) -> None:
    with http_system.client("write") as rv:
        task = rv.submit_task(
            {"title": "slow", "required_capabilities": ["echo"], "parameters": {"sleep_s": 30}}
        )
        wait_until(lambda: rv.get_task(task["id"])["status"] == "running", timeout_s=30)
        assert rv.cancel_task(task["id"])["status"] == "cancelled"


def test_concurrent_submits_each_get_their_own_answer(http_system) -> None:
    """Requests arriving together are stored together; a bad one is refused alone."""
    import asyncio

    from runtime.client import AsyncClient

    cap = _cap()

    async def burst() -> list[object]:
        async with AsyncClient(http_system.url, http_system.keys["unlimited"]) as rv:
            bodies = [{"title": f"t{n}", "required_capabilities": [cap]} for n in range(40)]
            for n in (7, 23):
                bodies[n]["dependencies"] = [str(uuid.uuid4())]
            return await asyncio.gather(
                *(rv.submit_task(b) for b in bodies), return_exceptions=True
            )

    answers = asyncio.run(burst())
    refused = [n for n, a in enumerate(answers) if isinstance(a, ApiError)]
    assert refused == [7, 23]
    assert all(answers[n].status == 422 for n in refused)
    stored = [a for a in answers if isinstance(a, dict)]
    assert sorted(t["title"] for t in stored) == sorted(
        f"t{n}" for n in range(40) if n not in (7, 23)
    )
    with http_system.client("read") as rv:
        assert len(rv.list_tasks(capability=cap, limit=100)["items"]) == 38


def test_a_nul_character_in_the_query_is_422(http_system) -> None:
    headers = {"Authorization": f"Bearer {http_system.keys['read']}"}
    with http_system.raw() as http:
        response = http.get("/api/v1/discoveries?types=a%00b", headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query"
