"""Keys, scopes, rate limits and body limits on every route, enumerated from OpenAPI."""

from __future__ import annotations

import re
import time
import uuid

import pytest

pytestmark = pytest.mark.integration

HEALTH = {"/healthz", "/readyz"}
_RANK = {"read": 1, "write": 2, "admin": 3}
_LOWER = {"write": "read", "admin": "write"}


def _operations(http_system) -> list[tuple[str, str, str]]:
    """(method, concrete path, required scope) of every non-health operation."""
    with http_system.raw() as http:
        document = http.get("/openapi.json").json()
    found = []
    for path, operations in document["paths"].items():
        if path in HEALTH:
            continue
        concrete = re.sub(r"\{task_id\}", str(uuid.uuid4()), path)
        concrete = re.sub(r"\{[a-z_]+\}", "nobody", concrete)
        for method, operation in operations.items():
            (requirement,) = operation["security"]
            (scopes,) = requirement.values()
            found.append((method.upper(), concrete, max(scopes, key=_RANK.__getitem__)))
    return found


def test_every_route_but_health_refuses_a_missing_or_unknown_key(http_system) -> None:
    operations = _operations(http_system)
    assert len(operations) >= 18  # the document lists the whole API
    with http_system.raw() as http:
        for method, path, _ in operations:
            for headers in ({}, {"Authorization": "Bearer rv_AAAAAAAA_not-a-real-secret"}):
                response = http.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.headers["content-type"].startswith("application/problem+json")


def test_every_route_refuses_a_key_of_a_lower_scope(http_system) -> None:
    checked = 0
    with http_system.raw() as http:
        for method, path, scope in _operations(http_system):
            lower = _LOWER.get(scope)
            if lower is None:
                continue  # `read` is the lowest scope: nothing below it to refuse
            headers = {"Authorization": f"Bearer {http_system.keys[lower]}"}
            response = http.request(method, path, headers=headers)
            assert response.status_code == 403, (method, path, scope, response.text)
            assert scope in response.json()["detail"]
            checked += 1
    assert checked >= 8


def test_health_needs_no_key(http_system) -> None:
    with http_system.raw() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
    assert ready.status_code == 200
    checks = {"postgres": "ok", "nats": "ok", "tree": "ok", "tm:0": "ok"}
    assert ready.json() == {"ready": True, "checks": checks}


def test_rate_limit_answers_429_with_retry_after_once_the_burst_is_spent(http_system) -> None:
    headers = {"Authorization": f"Bearer {http_system.keys['limited']}"}  # burst 5, 1/s
    with http_system.raw() as http:
        statuses = [http.get("/api/v1/agents", headers=headers) for _ in range(12)]
    codes = [r.status_code for r in statuses]
    assert codes.count(200) >= 5
    assert 429 in codes
    refused = next(r for r in statuses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert "rate limit" in refused.json()["detail"]


def test_a_revoked_key_stops_working(http_system) -> None:
    with http_system.client("admin") as admin:
        made = admin.http.post("/api/v1/keys", json={"name": "short-lived", "scopes": ["read"]})
        assert made.status_code == 201
        key = made.json()
        assert key["key"].startswith(f"rv_{key['prefix']}_")
        listed = admin.http.get("/api/v1/keys").json()
        assert any(k["prefix"] == key["prefix"] and "key" not in k for k in listed)
        with http_system.raw() as http:
            headers = {"Authorization": f"Bearer {key['key']}"}
            assert http.get("/api/v1/agents", headers=headers).status_code == 200
            assert admin.http.delete(f"/api/v1/keys/{key['prefix']}").status_code == 204
            deadline = time.monotonic() + 10  # keys are trusted for key_cache_s (2 s)
            while http.get("/api/v1/agents", headers=headers).status_code != 401:
                assert time.monotonic() < deadline, "a revoked key kept working"
                time.sleep(0.1)
        assert admin.http.delete(f"/api/v1/keys/{key['prefix']}").status_code == 404


def test_a_body_over_the_limit_is_413_and_writes_nothing(http_system) -> None:
    capability = f"big-{uuid.uuid4().hex[:6]}"
    limit = http_system.settings.http.max_body_bytes
    body = {"title": "big", "required_capabilities": [capability], "description": "x" * limit}
    headers = {"Authorization": f"Bearer {http_system.keys['write']}"}
    with http_system.raw() as http:
        response = http.post("/api/v1/tasks", json=body, headers=headers)
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("application/problem+json")

        def chunks():  # no Content-Length: counted as it streams
            yield b'{"title": "big", "description": "'
            for _ in range(limit // 65536 + 2):
                yield b"x" * 65536
            yield b'"}'

        streamed = http.post("/api/v1/tasks", content=chunks(), headers=headers)
        assert streamed.status_code == 413
        listed = http.get("/api/v1/tasks", params={"capability": capability}, headers=headers)
    assert listed.json()["items"] == []
