"""The log agents' own logic, without Ray or services: parameters, result shapes, sharing,
chunk -> analyse -> reduce, correlation and the report. The context is a small fake that
records discoveries (the real one needs a database to share them)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actors.agent import AgentContext
from actors.builtin.chunking import ChunkingAgent
from actors.builtin.log_analysis import LOGHUB_DIR, LogAnalysisAgent
from actors.builtin.reduce import ReduceAgent
from runtime.errors import LogicalError
from runtime.models.common import TYPE_NAME_PATTERN

REPO = Path(__file__).resolve().parents[2]
LOGS = REPO / "actors" / "builtin" / "data" / "loghub"
FILES = ("OpenSSH_2k.log", "Apache_2k.log", "HDFS_2k.log")
ANALYSIS_KEYS = {"source", "format", "lines", "chunk", "partial", "findings", "shared"}


class FakeContext:
    """What the log agents use of an `AgentContext`: `run_blocking` and `share_discovery`."""

    def __init__(self) -> None:
        self.discoveries: list[dict[str, Any]] = []
        self.blocking_calls = 0

    async def run_blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.blocking_calls += 1
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def share_discovery(
        self, type: str, content: str, confidence: float, data: dict[str, Any] | None = None
    ) -> int:
        self.discoveries.append(
            {"type": type, "content": content, "confidence": confidence, "data": data}
        )
        return len(self.discoveries)


async def run(agent: Any, params: Any, ctx: Any = None) -> Any:
    return await agent.handle({"parameters": params}, ctx or FakeContext())


def assert_json(value: Any) -> None:
    assert json.loads(json.dumps(value, allow_nan=False)) == value


def test_the_bundled_samples_are_where_the_agents_look() -> None:
    assert LOGHUB_DIR == LOGS
    assert {p.name for p in LOGS.iterdir()} >= {*FILES, "README.md"}


async def test_a_whole_file_is_analysed_and_its_findings_shared() -> None:
    ctx = FakeContext()
    result = await run(LogAnalysisAgent(), {"path": str(LOGS / FILES[0])}, ctx)
    assert set(result) == ANALYSIS_KEYS
    assert (result["source"], result["format"], result["lines"]) == (FILES[0], "sshd", 2000)
    assert result["chunk"] is None
    assert result["findings"]["top_addresses"][0]["address"] == "183.62.140.253"
    assert_json(result)
    assert ctx.blocking_calls == 1
    assert result["shared"] == len(ctx.discoveries) == len(result["findings"]["findings"]) > 0
    for d in ctx.discoveries:
        assert re.match(TYPE_NAME_PATTERN, d["type"])
        assert 0 < len(d["content"]) < 10_000 and "\n" not in d["content"]
        assert 0.0 <= d["confidence"] <= 1.0
        assert d["data"]["source"] == FILES[0]
        assert_json(d["data"])
    first = ctx.discoveries[0]
    assert first["type"] == "brute_force"
    assert first["content"].startswith("brute force: 286 failed passwords from 183.62.140.253")


async def test_a_real_context_runs_the_agent_when_nothing_is_shared() -> None:
    ctx = AgentContext("a-1", pool=None, bus=None)
    text = (LOGS / "Apache_2k.log").read_text()
    result = await LogAnalysisAgent().handle(
        {"parameters": {"text": text, "share": False, "source": "web"}}, ctx
    )
    assert (result["source"], result["format"], result["lines"], result["shared"]) == (
        "web",
        "apache",
        2000,
        0,
    )
    with pytest.raises(RuntimeError, match="no database"):  # sharing needs the pool
        await LogAnalysisAgent().handle({"parameters": {"text": text}}, ctx)


@pytest.mark.parametrize("name", FILES)
async def test_chunk_analyse_reduce_equals_one_analysis(name: str) -> None:
    ctx = FakeContext()
    plan = await run(ChunkingAgent(), {"path": f"loghub:{name}", "chunks": 8, "overlap_lines": 2})
    assert set(plan) == {"source", "bytes", "lines", "format", "chunks"}
    assert (plan["source"], plan["lines"], len(plan["chunks"])) == (name, 2000, 8)
    assert set(plan["chunks"][0]) == {
        *("path", "index", "start", "end", "first_line", "overlap_start", "format", "source")
    }
    assert_json(plan)
    parts = [await run(LogAnalysisAgent(), chunk, ctx) for chunk in plan["chunks"]]
    assert not ctx.discoveries  # a chunk shares nothing by default
    assert [p["chunk"]["index"] for p in parts] == list(range(8))
    assert parts[1]["chunk"]["first_line"] == plan["chunks"][1]["first_line"]
    merged = await run(ReduceAgent(), {"results": parts[::-1]}, ctx)
    assert set(merged) == ANALYSIS_KEYS | {"merged"}
    assert merged["merged"] == 8
    assert merged["shared"] == len(ctx.discoveries)
    one = await run(LogAnalysisAgent(), {"path": str(LOGS / name), "share": False})
    assert merged["partial"] == one["partial"]
    assert merged["findings"] == one["findings"]
    assert (merged["source"], merged["format"], merged["lines"]) == (
        one["source"],
        one["format"],
        one["lines"],
    )
    assert_json(merged)


async def test_a_chunk_found_from_its_offset_alone_gets_its_first_line() -> None:
    plan = await run(ChunkingAgent(), {"path": "loghub:HDFS_2k.log", "chunks": 4})
    c = plan["chunks"][2]
    result = await run(LogAnalysisAgent(), {"path": c["path"], "start": c["start"]})
    assert result["chunk"]["first_line"] == c["first_line"]
    assert result["lines"] == 2000 - c["first_line"] + 1


async def test_text_is_chunked_and_reduced_too() -> None:
    text = (LOGS / "OpenSSH_2k.log").read_text()
    plan = await run(ChunkingAgent(), {"text": text, "chunks": 5, "source": "auth"})
    assert (plan["source"], plan["lines"], plan["format"]) == ("auth", 2000, "sshd")
    parts = [await run(LogAnalysisAgent(), chunk) for chunk in plan["chunks"]]
    merged = await run(ReduceAgent(), {"results": parts, "share": False})
    one = await run(LogAnalysisAgent(), {"text": text, "source": "auth", "share": False})
    assert merged["findings"] == one["findings"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"path": "x.log", "bogus": 1}, "bogus"),
        ({"path": "x.log", "top_n": 0}, "top_n"),
        ({"path": "x.log", "top_n": "many"}, "top_n"),
        ({"path": "x.log", "format": "xml"}, "format"),
        ({"path": "x.log", "start": -1}, "start"),
        ({"path": "x.log", "window_s": 45}, "window_s"),
        ({"path": "x.log", "start": 10, "end": 5}, "end"),
        ({"path": "x.log", "text": "y"}, "path"),
        ({}, "path"),
        ({"text": "y", "start": 0}, "start"),
        ({"path": "x.log", "results": []}, "results"),
        ({"mode": "correlate"}, "results"),
        ({"mode": "nope"}, "mode"),
        ({"path": 7}, "path"),
    ],
)
async def test_log_analysis_parameters_are_validated(params: dict[str, Any], field: str) -> None:
    with pytest.raises(LogicalError, match=f"parameter '[^']*{field}") as info:
        await run(LogAnalysisAgent(), params)
    assert field in info.value.reason


async def test_bad_inputs_fail_as_logical_errors(tmp_path: Path) -> None:
    binary = tmp_path / "core"
    binary.write_bytes(b"\x7fELF\x00\x00")
    notes = tmp_path / "notes.txt"
    notes.write_text("dear diary\nnothing happened\n")
    cases = [
        ({"path": str(tmp_path / "missing.log")}, "no such file"),
        ({"path": str(tmp_path)}, "not a regular file"),
        ({"path": str(binary)}, "binary"),
        ({"path": str(notes)}, "no known log format"),
        ({"path": "loghub:../secrets"}, "bare file name"),
        ({"text": ""}, "no log lines"),
    ]
    for params, reason in cases:
        with pytest.raises(LogicalError, match=reason):
            await run(LogAnalysisAgent(), params)
    with pytest.raises(LogicalError, match="parameters must be an object"):
        await LogAnalysisAgent().handle({"parameters": ["path"]}, FakeContext())


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"path": "loghub:HDFS_2k.log"}, "chunks'/'chunk_bytes"),
        ({"path": "loghub:HDFS_2k.log", "chunks": 2, "chunk_bytes": 5}, "chunks'/'chunk_bytes"),
        ({"path": "loghub:HDFS_2k.log", "chunks": 0}, "parameter 'chunks'"),
        ({"path": "loghub:HDFS_2k.log", "chunks": 10_001}, "parameter 'chunks'"),
        ({"path": "loghub:HDFS_2k.log", "chunks": 2, "extra": 1}, "parameter 'extra'"),
        ({"text": "a\n", "chunk_bytes": 5}, "parameter 'chunk_bytes'"),
        ({"chunks": 2}, "path'/'text"),
        ({"path": "/nonexistent/x.log", "chunks": 2}, "/nonexistent/x.log: no such file"),
        ({"text": "", "chunks": 2}, "empty text"),
    ],
)
async def test_chunking_parameters_are_validated(params: dict[str, Any], reason: str) -> None:
    with pytest.raises(LogicalError, match=re.escape(reason)):
        await run(ChunkingAgent(), params)


async def test_reduce_refuses_bad_results() -> None:
    good = await run(LogAnalysisAgent(), {"path": "loghub:HDFS_2k.log", "share": False})
    web = await run(LogAnalysisAgent(), {"path": "loghub:Apache_2k.log", "share": False})
    cases = [
        ({"results": "all of them"}, "parameter 'results'"),
        ({}, "parameter 'results'"),
        ({"results": []}, "nothing to merge"),
        ({"results": [good, 42]}, "results[1] is not an object"),
        ({"results": [good, {"findings": {}}]}, "results[1] has no 'partial'"),
        ({"results": [{"partial": {"version": 0}}]}, "results[0].partial is not"),
        ({"results": [good, web]}, "different formats"),
        ({"results": [good], "mode": "sum"}, "parameter 'mode'"),
        ({"results": [good], "mode": "report", "top_n": 0}, "parameter 'top_n'"),
        ({"results": [{"x": 1}], "mode": "report"}, "results[0] is neither"),
        ({"results": [], "mode": "report"}, "nothing to report"),
    ]
    for params, reason in cases:
        with pytest.raises(LogicalError, match=re.escape(reason)):
            await run(ReduceAgent(), params)


def sshd_text(address: str, *, login_at: str | None = None) -> str:
    lines = [
        f"Mar  1 10:00:{s:02d} gw sshd[{s}]: Failed password for root from {address} port {s} ssh2"
        for s in range(15)
    ]
    if login_at:
        lines.append(
            f"Mar  1 {login_at} gw sshd[99]: Accepted publickey for ops from {address} port 2"
        )
    return "\n".join(lines) + "\n"


async def test_correlate_finds_addresses_and_late_logins_across_sources() -> None:
    ctx = FakeContext()
    a = await run(LogAnalysisAgent(), {"text": sshd_text("10.9.8.7"), "source": "gw1"}, ctx)
    b = await run(
        LogAnalysisAgent(),
        {"text": sshd_text("10.9.8.7", login_at="11:00:00"), "source": "gw2", "share": False},
    )
    web = "[Wed Mar 01 10:30:00 2026] [error] [client 10.9.8.7] Directory index forbidden\n"
    c = await run(LogAnalysisAgent(), {"text": web, "source": "web", "share": False})
    ctx.discoveries.clear()
    corr = await run(LogAnalysisAgent(), {"mode": "correlate", "results": [a, b, c]}, ctx)
    assert set(corr) == {
        *("mode", "sources", "shared_addresses", "logins_after_bursts", "timeline", "shared")
    }
    assert corr["sources"] == ["gw1", "gw2", "web"]
    assert corr["shared_addresses"] == [
        {
            "address": "10.9.8.7",
            "sources": {"gw1": 15, "gw2": 16, "web": 1},
            "total": 32,
            "first_seen": "2026-03-01T10:00:00",
            "last_seen": "2026-03-01T11:00:00",
        }
    ]
    assert [
        (x["user"], x["login_source"], x["burst_source"]) for x in corr["logins_after_bursts"]
    ] == [
        ("ops", "gw2", "gw1")  # the earliest burst is kept (gw1 sorts first at the same time)
    ]
    assert [x["source"] for x in corr["timeline"]][:2] == ["gw1", "gw2"]
    assert corr["shared"] == len(ctx.discoveries) == 2
    assert {d["type"] for d in ctx.discoveries} == {"shared_address", "login_after_burst"}
    assert_json(corr)

    report = await run(ReduceAgent(), {"mode": "report", "results": [a, b, c, corr]}, ctx)
    assert set(report) == {
        *("summary", "top_addresses", "invalid_users", "break_in_attempts", "error_components"),
        *("levels", "sources", "lines", "findings", "shared_addresses", "logins_after_bursts"),
        "shared",
    }
    assert report["top_addresses"][0]["address"] == "10.9.8.7"
    assert report["top_addresses"][0]["count"] == 30
    assert report["error_components"] == {"client": 1}
    assert report["lines"] == 15 + 16 + 1
    assert "10.9.8.7 with 30 failed passwords" in report["summary"]
    assert "ops from 10.9.8.7" in report["summary"]
    assert len(report["logins_after_bursts"]) == 1
    assert ctx.discoveries[-1]["type"] == "log_report"
    assert ctx.discoveries[-1]["content"] == report["summary"]
    assert_json(report)


async def test_the_report_over_the_samples_names_the_top_attacker() -> None:
    results = [
        await run(LogAnalysisAgent(), {"path": f"loghub:{name}", "share": False}) for name in FILES
    ]
    report = await run(ReduceAgent(), {"mode": "report", "results": results, "share": False})
    assert report["summary"].startswith("Analysed 6,000 lines from 3 source(s)")
    assert (
        "The top attacking address is 183.62.140.253 with 286 failed passwords"
        in (report["summary"])
    )
    assert report["invalid_users"]["total"] == 113
    assert report["break_in_attempts"]["total"] == 85
    assert report["error_components"]["mod_jk"] == 551
    assert [s["format"] for s in report["sources"]] == ["sshd", "apache", "hdfs"]
    assert report["shared"] == 0


class DependentContext(FakeContext):
    """A context whose task depends on earlier tasks (a project step)."""

    def __init__(self, results: list[Any]) -> None:
        super().__init__()
        self.results = results

    async def dependency_results(self) -> list[Any]:
        return self.results


async def test_without_results_a_step_reads_its_dependencies() -> None:
    analyses = [
        await run(LogAnalysisAgent(), {"path": f"loghub:{name}", "share": False})
        for name in FILES[:2]
    ]
    corr = await run(
        LogAnalysisAgent(), {"mode": "correlate", "share": False}, DependentContext(analyses)
    )
    assert corr["sources"] == sorted(FILES[:2])
    report = await run(
        ReduceAgent(), {"mode": "report", "share": False}, DependentContext([*analyses, corr])
    )
    assert "183.62.140.253" in report["summary"]
    with pytest.raises(LogicalError, match="parameter 'results': required"):
        await run(ReduceAgent(), {"mode": "report"}, DependentContext([]))


async def test_pace_and_an_explicit_format_are_honoured() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    text = "Jun  9 06:06:20 combo kernel: Linux version 2.6.5-1.358\n"
    result = await run(LogAnalysisAgent(), {"text": text, "pace_s": 0.2, "share": False})
    assert loop.time() - started >= 0.2
    assert result["format"] == "syslog"
    plan = await run(ChunkingAgent(), {"text": text * 4, "chunks": 2, "format": "syslog"})
    assert {c["format"] for c in plan["chunks"]} == {"syslog"}
    with pytest.raises(LogicalError, match="parameter 'format'"):
        await run(ChunkingAgent(), {"text": text, "chunks": 2, "format": "csv"})
    with pytest.raises(LogicalError, match="parameter 'pace_s'"):
        await run(LogAnalysisAgent(), {"text": text, "pace_s": 61})
