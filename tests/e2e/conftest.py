"""The e2e tests' default system: each module that asks for `http_system` gets its own
(those of tests/e2e/shared_http share one, see its conftest)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from systems import ECHO_POOL, HttpSystem, running_http_system


@pytest.fixture(scope="module")
def http_system(services, ray_session) -> Iterator[HttpSystem]:
    with running_http_system(services, [ECHO_POOL]) as system:
        yield system
