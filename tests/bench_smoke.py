"""Every bench still runs and still prints the figures its issue names.

`make test` runs this after pytest (each bench starts its own services and Ray, which must
not share the machine with the test session's; `bench/chaos.py` is not here: tests/chaos
runs it whole and checks its keys). The runs are tiny: this checks that the
scripts work and keep their keys, not what they measure. A bench that broke unnoticed
once (a refactor dropped the baseline's seed) is why this exists.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUNS: dict[str, tuple[list[str], set[str]]] = {
    "restart.py": (
        ["--kills", "1", "--hangs", "1"],
        {"restart_p50_ms", "standby_p50_ms", "ray_native_p50_ms", "hang_detect_max_ms"},
    ),
    "throughput.py": (
        ["--tasks", "200", "--agents", "2", "--tracing"],
        {
            "tasks_per_s",
            "raw_ray_calls_per_s",
            "ratio",
            "lost",
            "completed_twice",
            "traced_tasks_per_s",
            "tracing_ratio",
        },
    ),
    "http.py": (
        [
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--rounds",
            "1",
            "--no-uvicorn",
            "--batch-tasks",
            "400",
        ],
        {
            "batch_tasks_per_s",
            "batch_completed",
            "tasks_rps",
            "tasks_p50_ms",
            "tasks_p99_ms",
            "trivial_rps",
            "trivial_p50_ms",
            "trivial_p99_ms",
            "uvicorn_rps",
            "serve_settings",
        },
    ),
    "fuzz.py": (
        ["--examples", "2", "--stream-examples", "1", "--agents", "1"],
        {"operations", "stream_operations", "cases", "failures", "server_errors"},
    ),
    "sse.py": (
        ["--clients", "20", "--duration", "3", "--grace", "10"],
        {"clients", "events", "delivered", "missing", "p99_delivery_ms", "baseline_p99_ms"},
    ),
    "latency.py": (
        ["--quick"],
        {"taskclient_p50_ms", "taskclient_p99_ms", "http_p50_ms", "http_p99_ms", "raw_ray_p50_ms"},
    ),
    "scale.py": (
        ["--quick"],
        {
            "agents",
            "shards",
            "tasks_per_s",
            "pool_sizes",
            "pool_start_s",
            "host_uss_mib",
            "ray_actor_uss_mib",
            "host_uss_ratio",
            "kills",
            "restart_p50_ms",
            "sse_clients",
            "sse_p99_delivery_ms",
        },
    ),
}


def run(script: str) -> str | None:
    """Run one bench; None if it printed its keys, else what went wrong."""
    args, keys = RUNS[script]
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    try:
        figures = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        figures = None
    missing = sorted(keys - set(figures)) if isinstance(figures, dict) else sorted(keys)
    took = time.monotonic() - began
    if done.returncode != 0 or missing:
        return (
            f"FAIL {script} ({took:.0f} s): exit {done.returncode}, missing {missing}\n"
            + (done.stderr[-3000:])
        )
    print(f"ok   {script} ({took:.0f} s)", flush=True)
    return None


def main() -> int:
    # two at a time: each spends much of its run starting services and Ray, or waiting
    # out a window, so two share the machine's two cores (figures are not checked here)
    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(run, RUNS) if f is not None]
    for failure in failures:
        print(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
