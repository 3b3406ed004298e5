"""One chaos run of `bench/chaos.py` per module, as a subprocess (its own services and a
local Ray of its own, apart from the session's), and the bench module itself, whose
checker the unit tests feed by hand."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "chaos.py"

# CI's run: 20 s at 20 tasks/s (what a loaded 2-core machine sustains with room to spare,
# so that a slow answer is a fault's doing, not the load's), an agent killed every second,
# tm:0 every 6 s, the relay every 9 s, the pool supervisor once (its first kill is at half
# its period: 12 s). The ingress and proxy kills (bench/chaos.py --ingress-every, --proxy-every)
# stay out of CI's run: with a tm:0 restart overlapping a proxy kill the API was down for
# ~20 s on CI's machine and the run's recovery bounds failed. The store outages are
# tests/e2e/test_http_outages.py's.
CHAOS_ARGS = [
    "--duration", "20",
    "--rate", "20",
    "--agent-every", "1",
    "--tm-every", "6",
    "--relay-every", "9",
    "--pool-supervisor-every", "24",
    "--give-up", "60",
    "--recover-timeout", "45",
    "--drain-timeout", "90",
    "--seed", "1",
]  # fmt: skip
RUN_TIMEOUT_S = 420


@pytest.fixture(scope="session")
def chaos_module() -> ModuleType:
    """bench/chaos.py, imported by path (bench/ is no package, and must not be on sys.path:
    its http.py would shadow the standard library's)."""
    spec = importlib.util.spec_from_file_location("bench_chaos", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_chaos"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chaos_run() -> dict[str, Any]:
    """The figures of one chaos run (the last stdout line), with its stderr's tail under
    `_stderr` for the failure messages."""
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(BENCH), *CHAOS_ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the bench stops Serve, Ray and its services
        try:
            stdout, stderr = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        pytest.fail(f"chaos run over {RUN_TIMEOUT_S}s; stderr tail:\n{stderr[-4000:]}")
    lines = stdout.strip().splitlines()
    try:
        figures = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        figures = None
    if process.returncode != 0 or not isinstance(figures, dict):
        pytest.fail(f"chaos run failed (exit {process.returncode}):\n{stderr[-4000:]}")
    figures["_stderr"] = stderr[-3000:]
    figures["_test_wall_s"] = round(time.monotonic() - began, 1)
    return figures
