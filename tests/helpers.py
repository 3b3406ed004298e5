"""Helpers for tests: waiting on a condition with a deadline, never sleeping blind."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit


async def wait_for(
    condition: Callable[[], object], *, timeout_s: float = 30, interval_s: float = 0.02
) -> object:
    """Poll `condition` (sync or async) until it returns something truthy, or fail."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


def with_database(url: str, database: str) -> str:
    """The same server URL, naming another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def wait_until(
    condition: Callable[[], object], *, timeout_s: float = 30, interval_s: float = 0.02
) -> object:
    """`wait_for` for synchronous code: poll until truthy, or fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Listener:
    """Reads an SSE stream on a daemon thread (it ends with its client); events land in
    `events`, for `take` to wait on with a deadline."""

    def __init__(self, client: Any, path: str, **options: object) -> None:
        self.events: queue.Queue[Any] = queue.Queue()
        self._stream: Iterator[Any] = client.stream(path, **options)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for event in self._stream:
            self.events.put(event)

    def take(self, count: int, timeout_s: float = 30) -> list[Any]:
        return [self.events.get(timeout=timeout_s) for _ in range(count)]

    def nothing_more(self, within_s: float = 1.0) -> bool:
        try:
            extra = self.events.get(timeout=within_s)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected event {extra}")


async def delete_stream(nats_url: str, stream: str) -> None:
    """Delete a system's JetStream stream when its test is done: bus tests make streams of
    their own on the same subjects, which NATS refuses while another stream holds them."""
    from runtime.bus import Bus

    bus = await Bus.connect(nats_url)
    try:
        with contextlib.suppress(Exception):
            await bus.js.delete_stream(stream)
    finally:
        await bus.close()


async def child_pid(pool: Any, child_id: str, timeout_s: float = 30) -> int:
    """The pid of a supervised child's current process, from its `child_started` event
    (written by the supervisor a moment after the child is up: waited for)."""

    async def started() -> Any:
        return await pool.fetchval(
            "SELECT detail FROM supervisor_events WHERE child_id = $1"
            " AND event = 'child_started' ORDER BY id DESC LIMIT 1",
            child_id,
        )

    detail = await wait_for(started, timeout_s=timeout_s)
    return int(detail["pid"])


def worker_runtime_env(env: dict[str, str]) -> dict[str, Any]:
    """A `runtime_env` for an actor a test starts by hand, with `env` set in its process the
    way rayvisor sets it (`runtime.worker_env`): the secret variables (the services' URLs)
    go through Ray's KV, not the `runtime_env` that Ray's state API and dashboard show."""
    from runtime import worker_env

    plain, secrets = worker_env.split(env)
    key = f"env:test-{uuid.uuid4().hex[:12]}"
    return {"env_vars": {**plain, **worker_env.publish(key, secrets)}}


def start_up(
    env: dict[str, str], printed: list[str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """`rayvisor up` as a user runs it, once it has printed its admin key: (process, key);
    the lines it printed up to the key go to `printed`."""
    up = subprocess.Popen(
        [sys.executable, "-m", "serve.cli", "up"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def key_printed() -> str | None:
        line = up.stdout.readline() if up.stdout else ""
        assert line or up.poll() is None, up.stderr.read() if up.stderr else ""
        if printed is not None:
            printed.append(line)
        found = re.search(r"admin key\s*│?\s*(rv_\S+)", line)
        return found.group(1) if found else None

    try:
        return up, wait_until(key_printed, timeout_s=180, interval_s=0)
    except BaseException:
        up.kill()
        raise


def rayvisor_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`rayvisor ARGS` in a process of its own, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=180,
    )
