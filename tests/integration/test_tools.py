"""Tools on real PostgreSQL: validation, rate limit, circuit breaker, the built-in tools'
refusals, and a `tool_executions` row for every call, refused ones included."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
import tool_functions
from helpers import free_port

from runtime.config import ToolsSettings
from runtime.errors import ConfigError, LogicalError, TransientError
from runtime.policies import CircuitState
from runtime.tools import RateLimited, ToolRefused, ToolRegistry, ToolRunner, ToolUnavailable

pytestmark = pytest.mark.integration


def runner(pool: asyncpg.Pool, **tools: Any) -> ToolRunner:
    settings = ToolsSettings.model_validate(tools)
    return ToolRunner(ToolRegistry.from_settings(settings), pool, f"agent-{uuid4().hex[:8]}")


async def rows(pool: asyncpg.Pool, agent_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT tool, status, error, input, output, finished_at, duration_ms"
        " FROM tool_executions WHERE agent_id = $1 ORDER BY started_at, id",
        agent_id,
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    inside = tmp_path / "allowed"
    inside.mkdir()
    (inside / "auth.log").write_text("Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster\n")
    (tmp_path / "secret.txt").write_text("do not read\n")
    (inside / "escape").symlink_to(tmp_path / "secret.txt")
    return inside


async def test_read_file_reads_inside_and_refuses_every_way_out(pool, files: Path) -> None:
    tools = runner(pool, read_file={"dirs": [str(files)]})
    found = await tools.call("read_file", {"path": "auth.log"}, None)
    assert found["content"].startswith("Dec 10 06:55:46") and not found["truncated"]
    by_absolute = await tools.call("read_file", {"path": str(files / "auth.log")}, None)
    assert by_absolute["content"] == found["content"]
    short = await tools.call("read_file", {"path": "auth.log", "max_bytes": 6}, None)
    assert short == {**short, "content": "Dec 10", "truncated": True}

    refusals = {
        "../secret.txt": "'..' is not allowed",
        str(files.parent / "secret.txt"): "is outside the allowed directories",
        "escape": "leads outside the allowed directories",
        "/etc/passwd": "is outside the allowed directories",
        "missing.log": "is not a file",
    }
    for path, reason in refusals.items():
        with pytest.raises(ToolRefused, match=reason):
            await tools.call("read_file", {"path": path}, None)

    recorded = await rows(pool, tools.agent_id)
    assert [r["status"] for r in recorded] == ["succeeded"] * 3 + ["rejected"] * 5
    assert [r["input"]["path"] for r in recorded[3:]] == list(refusals)
    assert all(r["finished_at"] is not None and r["duration_ms"] >= 0 for r in recorded)
    assert "do not read" not in str([r["output"] for r in recorded])
    # refusals are the caller's mistakes: the circuit stays closed
    assert tools.circuit("read_file") is CircuitState.CLOSED


async def test_read_file_with_no_directory_configured_refuses(pool) -> None:
    tools = runner(pool)
    with pytest.raises(ToolRefused, match=r"set tools.read_file.dirs"):
        await tools.call("read_file", {"path": "anything"}, None)


async def test_unknown_tool_and_bad_arguments_are_logical_errors_with_a_row(pool) -> None:
    tools = runner(pool)
    with pytest.raises(LogicalError, match=r"no tool named 'nope' \(registered: http_request"):
        await tools.call("nope", {}, None)
    with pytest.raises(LogicalError, match=r"path: Field required.*; colour: Extra inputs"):
        await tools.call("read_file", {"colour": "red"}, None)
    with pytest.raises(LogicalError, match=r"max_bytes: Input should be greater than or equal"):
        await tools.call("read_file", {"path": "x", "max_bytes": 0}, None)
    recorded = await rows(pool, tools.agent_id)
    assert [(r["tool"], r["status"]) for r in recorded] == [
        ("nope", "rejected"),
        ("read_file", "rejected"),
        ("read_file", "rejected"),
    ]
    assert "colour" in recorded[1]["error"]


async def test_rate_limit_waits_for_tokens_then_refuses_past_max_wait(pool, files) -> None:
    limits = {"dirs": [str(files)], "rate_per_s": 20.0, "burst": 1}
    tools = runner(pool, read_file=limits)
    started = time.monotonic()
    for _ in range(5):  # 1 from the burst, then one every 50 ms
        await tools.call("read_file", {"path": "auth.log"}, None)
    assert time.monotonic() - started >= 4 / 20.0 - 0.01

    strict = runner(pool, read_file={**limits, "rate_per_s": 0.01, "burst": 2, "max_wait_s": 0})
    for _ in range(2):
        await strict.call("read_file", {"path": "auth.log"}, None)
    with pytest.raises(RateLimited, match=r"rate limit of 0.01/s") as refused:
        await strict.call("read_file", {"path": "auth.log"}, None)
    assert isinstance(refused.value, TransientError)
    statuses = [r["status"] for r in await rows(pool, strict.agent_id)]
    assert statuses == ["succeeded", "succeeded", "rejected"]


async def test_circuit_opens_after_failures_then_half_opens_and_closes(pool) -> None:
    tool = {"function": "tool_functions:flaky", "failure_threshold": 3, "reset_timeout_s": 0.3}
    tools = runner(pool, custom={"flaky": tool})
    tool_functions.calls.clear()
    for n in range(3):
        with pytest.raises(ConnectionError):
            await tools.call("flaky", {"fail": True, "note": f"fail {n}"}, None)
    assert tools.circuit("flaky") is CircuitState.OPEN
    with pytest.raises(ToolUnavailable, match=r"circuit open after repeated failures"):
        await tools.call("flaky", {"note": "refused"}, None)
    assert "refused" not in tool_functions.calls  # the function was not called

    await asyncio.sleep(0.35)  # the breaker's own reset timeout: what the test is about
    assert tools.circuit("flaky") is CircuitState.HALF_OPEN
    with pytest.raises(ConnectionError):  # a failed probe opens it again, for longer
        await tools.call("flaky", {"fail": True, "note": "probe 1"}, None)
    assert tools.circuit("flaky") is CircuitState.OPEN
    await asyncio.sleep(0.65)
    assert await tools.call("flaky", {"note": "probe 2"}, None) == {"note": "probe 2"}
    assert tools.circuit("flaky") is CircuitState.CLOSED

    recorded = await rows(pool, tools.agent_id)
    assert [r["status"] for r in recorded] == ["failed"] * 3 + ["rejected", "failed", "succeeded"]
    assert "backend down" in recorded[0]["error"]
    assert recorded[-1]["output"] == {"note": "probe 2"}


async def test_custom_tool_output_that_is_not_json_fails_the_call(pool) -> None:
    tools = runner(pool, custom={"odd": {"function": "tool_functions:not_json"}})
    with pytest.raises(LogicalError, match="output is not JSON"):
        await tools.call("odd", {}, None)
    assert [r["status"] for r in await rows(pool, tools.agent_id)] == ["failed"]


def test_custom_tools_are_checked_when_registered() -> None:
    def build(function: str) -> None:
        settings = ToolsSettings.model_validate({"custom": {"t": {"function": function}}})
        ToolRegistry.from_settings(settings)

    with pytest.raises(ConfigError, match=r"tools.custom.t.function: cannot import"):
        build("no_such_module:f")
    with pytest.raises(ConfigError, match=r"must be an async function"):
        build("tool_functions:not_async")
    with pytest.raises(ValueError, match="may not reuse a built-in name"):
        ToolsSettings.model_validate({"custom": {"read_file": {"function": "m:f"}}})
    flaky = ToolRegistry.from_settings(
        ToolsSettings.model_validate({"custom": {"flaky": {"function": "tool_functions:flaky"}}})
    ).get("flaky")
    assert flaky is not None
    described = flaky.describe()
    assert described["description"].startswith("Fails when told to")
    assert described["parameters"]["properties"]["fail"]["type"] == "boolean"


class _Backend(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b"x" * 5000 if self.path == "/big" else b'{"ok": true}'
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    _Backend.status = 200


async def test_http_request_only_to_listed_hosts_with_size_limit_and_breaker(
    pool, backend: str
) -> None:
    limits = {"hosts": ["127.0.0.1"], "max_bytes": 1000, "failure_threshold": 2}
    tools = runner(pool, http_request={**limits, "reset_timeout_s": 60})
    answer = await tools.call("http_request", {"url": f"{backend}/status"}, None)
    assert answer["status"] == 200 and answer["body"] == '{"ok": true}'

    with pytest.raises(ToolRefused, match=r"host 'localhost' is not allowed"):
        await tools.call("http_request", {"url": backend.replace("127.0.0.1", "localhost")}, None)
    with pytest.raises(ToolRefused, match=r"only http and https"):
        await tools.call("http_request", {"url": "file:///etc/passwd"}, None)
    with pytest.raises(ToolRefused, match=r"over 1000 bytes"):
        await tools.call("http_request", {"url": f"{backend}/big"}, None)
    assert tools.circuit("http_request") is CircuitState.CLOSED

    _Backend.status = 500  # a 500 storm: two failures open the circuit
    for _ in range(2):
        with pytest.raises(TransientError, match="answered 500"):
            await tools.call("http_request", {"url": f"{backend}/status"}, None)
    with pytest.raises(ToolUnavailable):
        await tools.call("http_request", {"url": f"{backend}/status"}, None)
    statuses = [r["status"] for r in await rows(pool, tools.agent_id)]
    assert statuses == ["succeeded"] + ["rejected"] * 3 + ["failed"] * 2 + ["rejected"]


async def test_http_request_to_a_closed_port_is_transient(pool) -> None:
    tools = runner(pool, http_request={"hosts": ["127.0.0.1"], "timeout_s": 5})
    with pytest.raises(TransientError, match="ConnectError"):
        await tools.call("http_request", {"url": f"http://127.0.0.1:{free_port()}/"}, None)


def test_a_symlink_inside_to_inside_is_followed(tmp_path: Path) -> None:
    from runtime.builtin_tools import resolve_inside

    (tmp_path / "real.log").write_text("x")
    os.symlink(tmp_path / "real.log", tmp_path / "link.log")
    assert resolve_inside("link.log", [tmp_path]) == (tmp_path / "real.log").resolve()
