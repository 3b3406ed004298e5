"""One system for the modules here: they submit, read, stream and kill an agent, each
with names of its own, so none needs a fresh tree or Serve app (test_metrics_export.py,
which counts a namespace's tasks from zero, has a system of its own). Starting one is the
heaviest part of an e2e module (25-70 s on a loaded 2-core machine); `make test` hands the
package to one worker (`pytest_xdist_make_scheduler` in tests/conftest.py), so the system
starts once and stops after the package's last test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from systems import ECHO_POOL, HttpSystem, running_http_system


@pytest.fixture(scope="package")
def http_system(services, ray_session) -> Iterator[HttpSystem]:
    with running_http_system(services, [ECHO_POOL]) as system:
        yield system
