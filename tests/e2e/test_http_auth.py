"""Keys, scopes, rate limits and body limits on every route, enumerated from OpenAPI; and
the limits under abuse, on two ingress replicas: unknown keys from one address, a key's
limit across the replicas, a flood from one key beside another key."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from helpers import wait_for, wait_until
from systems import ECHO_POOL, HttpSystem, running_http_system

from runtime.bus import Bus

pytestmark = pytest.mark.integration

REPLICAS = 2


@pytest.fixture(scope="module")
def http_system(services, ray_session) -> Iterator[HttpSystem]:
    """Two ingress replicas: every limit here must hold across them."""
    with running_http_system(services, [ECHO_POOL], http={"replicas": REPLICAS}) as system:
        yield system


def _from(http_system: HttpSystem, address: str) -> httpx.Client:
    """A client whose requests come from `address` (any of 127.0.0.0/8 on loopback)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=http_system.url, timeout=30, transport=transport)


def _new_key(http_system: HttpSystem, rate_per_s: float, burst: int) -> dict[str, str]:
    """Headers with a new read key of this limit (its id in `X-Key-Id`, for the test)."""
    with http_system.client("admin") as admin:
        made = admin.http.post(
            "/api/v1/keys",
            json={"name": "limits", "scopes": ["read"], "rate_per_s": rate_per_s, "burst": burst},
        )
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}", "X-Key-Id": made.json()["id"]}


def _demand_reports(http_system: HttpSystem) -> dict[str, dict[str, float]]:
    """What each ingress replica tells the others of its demand, by replica (5 s at most)."""

    async def collect() -> dict[str, dict[str, float]]:
        bus = await Bus.connect(http_system.settings.nats_servers or "")
        reports: dict[str, dict[str, float]] = {}

        async def heard(msg) -> None:
            report = json.loads(msg.data)
            reports[report["replica"]] = report["demand"]

        try:
            subject = f"ingress.{http_system.settings.stream_name}.demand"
            await bus.nc.subscribe(subject, cb=heard)
            await wait_for(lambda: len(reports) >= REPLICAS, timeout_s=5)
        finally:
            await bus.close()
        return reports

    return asyncio.run(collect())


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
    started = time.monotonic()
    with http_system.raw() as http:
        statuses = [http.get("/api/v1/agents", headers=headers) for _ in range(12)]
    elapsed = time.monotonic() - started
    codes = [r.status_code for r in statuses]
    # the burst (its share in each replica), + 1/s while the 12 went: never 5 per replica
    assert 5 / REPLICAS <= codes.count(200) <= 5 + 1 * elapsed, (codes, elapsed)
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


def test_an_address_sending_unknown_keys_is_refused_and_another_is_not(http_system) -> None:
    burst = http_system.settings.http.bad_key_burst  # 20 by default, per address
    rate = http_system.settings.http.bad_key_rate_per_s
    codes: list[int] = []
    started = time.monotonic()
    with _from(http_system, "127.0.0.3") as attacker:
        for _ in range(3 * burst):
            bad = f"rv_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"
            response = attacker.get("/api/v1/tools", headers={"Authorization": f"Bearer {bad}"})
            codes.append(response.status_code)
            if response.status_code == 429:
                refused = response
    looked_up = codes.count(401)  # each a key PostgreSQL was asked about
    assert burst / REPLICAS <= looked_up <= burst + rate * (time.monotonic() - started) + 1
    assert codes.count(429) >= burst, codes
    assert int(refused.headers["retry-after"]) >= 1
    assert "too many unknown API keys from 127.0.0.3" in refused.json()["detail"]
    # another address: its good key (never seen before) is served, its bad key is a 401
    fresh = _new_key(http_system, rate_per_s=50, burst=100)
    with _from(http_system, "127.0.0.2") as other:
        assert other.get("/api/v1/tools", headers=fresh).status_code == 200
        unknown = {"Authorization": "Bearer rv_BBBBBBBB_unknown-here-too"}
        assert other.get("/api/v1/tools", headers=unknown).status_code == 401


def test_a_key_limit_holds_across_the_replicas(http_system) -> None:
    from ray import serve

    (deployment,) = serve.status().applications["rayvisor"].deployments.values()
    assert deployment.replica_states.get("RUNNING") == REPLICAS
    headers = _new_key(http_system, rate_per_s=0.1, burst=10)
    codes: Counter[int] = Counter()
    started = time.monotonic()

    def send() -> None:
        with http_system.raw() as http:
            for _ in range(10):
                codes[http.get("/api/v1/tools", headers=headers).status_code] += 1

    senders = [threading.Thread(target=send) for _ in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=60)
    elapsed = time.monotonic() - started
    assert sum(codes.values()) == 40 and set(codes) <= {200, 429}, codes
    # one replica alone would admit 10 (its own bucket); two, 20: the cluster admits 10
    assert codes[200] <= 10 + 0.1 * elapsed, codes
    assert codes[200] >= 10 / REPLICAS, codes
    # ... as the replicas share it out: each tells the others of the key's requests
    reports = _demand_reports(http_system)
    assert len(reports) == REPLICAS
    assert all(demand.get(headers["X-Key-Id"], 0) > 0 for demand in reports.values()), reports


def test_a_flood_from_one_key_leaves_another_key_its_rate(http_system) -> None:
    flooder = _new_key(http_system, rate_per_s=1, burst=5)
    steady = _new_key(http_system, rate_per_s=10, burst=10)
    stop = threading.Event()
    flooded: Counter[int] = Counter()

    def flood() -> None:
        with http_system.raw() as http:
            deadline = time.monotonic() + 60
            for _ in range(1000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                flooded[http.get("/api/v1/tools", headers=flooder).status_code] += 1

    floods = [threading.Thread(target=flood) for _ in range(4)]
    flood_started = time.monotonic()
    for thread in floods:
        thread.start()
    latencies, codes, refusals = [], [], []
    try:
        wait_until(lambda: flooded[429] >= 10, timeout_s=30)  # the flood is on
        refused_before = flooded[429]
        with http_system.raw() as http:
            sent = 0.0
            for _ in range(20):  # at most 3/s, under a third of the key's 10/s, never a
                # burst: room for the router moving it between replicas faster than their
                # shares follow, and for requests bunched by a loaded machine (at 5/s, one
                # replica's 63% share refused the 5th at load average 16)
                time.sleep(max(0.0, sent + 1 / 3 - time.monotonic()))  # pacing, not a wait
                sent = time.monotonic()
                response = http.get("/api/v1/tools", headers=steady)
                latencies.append(time.monotonic() - sent)
                codes.append(response.status_code)
                if response.status_code != 200:
                    refusals.append(response.text)
        refused_during = flooded[429] - refused_before
    finally:
        stop.set()
        for thread in floods:
            thread.join(timeout=60)
    flood_s = time.monotonic() - flood_started
    assert codes == [200] * 20, (codes, refusals[:3])
    assert refused_during >= 20, flooded  # the flood went on all along
    assert flooded[200] <= 5 + 1 * flood_s + 1, flooded  # ... and got only its own limit
    # the steady key waited behind nothing but the machine's load (2 cores, shared)
    assert sorted(latencies)[len(latencies) // 2] < 1.0, latencies
