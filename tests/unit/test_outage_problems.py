"""What a store outage looks like to a client: every error PostgreSQL or the network raises
while a store is down or shutting down is a 503 with `Retry-After`, never a 500."""

from __future__ import annotations

import asyncpg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve import problems

OUTAGE_ERRORS = [
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.TooManyConnectionsError("too many clients already"),
    ConnectionRefusedError(111, "Connection refused"),
]


@pytest.mark.parametrize("error", OUTAGE_ERRORS, ids=lambda e: type(e).__name__)
def test_a_store_outage_is_503_with_retry_after(error: Exception) -> None:
    app = FastAPI()
    problems.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.headers["content-type"] == "application/problem+json"
    assert type(error).__name__ in response.json()["detail"]
