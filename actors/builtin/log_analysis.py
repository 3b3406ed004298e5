"""`LogAnalysisAgent` (capability `log_analysis`): sshd, syslog, Apache and HDFS logs.

Parameters (`mode: "analyze"`, the default): exactly one of `path` (a file; `loghub:NAME`
names a bundled sample, see `LOGHUB_DIR`) or `text`; for a chunk, `start`/`end` (byte
offsets) and `first_line` (a `chunking` chunk can be passed as is: its `index`,
`overlap_start`, `overlap_text` and `lines` are accepted and only echoed or ignored);
`format` (`auto` or one of sshd, syslog, apache, hdfs), `year` (for syslog, which has
none), `top_n`, `burst_threshold`, `window_s`, `bucket_s`, `source` (a label, default the
file name) and `share` (share each finding as a discovery; default true for a whole input,
false for a chunk). Result:

    {"source", "format", "lines", "chunk": {"index", "start", "end", "first_line"} | None,
     "partial": {...}, "findings": {...}, "shared": int}

`mode: "correlate"` takes `results` (earlier `log_analysis`/`reduce` results, one per
source) and returns `{"mode", "sources", "shared_addresses", "logins_after_bursts",
"timeline", "shared"}`; `share` (default true) shares the shared addresses and late logins. Without
`results`, it correlates the results of the tasks it depends on (`ctx.dependency_results`,
a project step after the analyses).

`pace_s` (0 to 60) makes a task last at least that long: a demo knob, so that progress,
a kill and a retry can be watched.

All the work runs in `ctx.run_blocking`: parsing 50 MB must not stall the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from actors.agent import Agent, AgentContext
from actors.builtin.logs.analysis import DEFAULT_BUCKET_S, analyze
from actors.builtin.logs.chunks import count_lines, read_lines, split_lines
from actors.builtin.logs.findings import describe, findings
from actors.builtin.logs.formats import DEFAULT_YEAR, FORMATS
from runtime.errors import LogicalError

__all__ = [
    "LOGHUB_DIR",
    "LogAnalysisAgent",
    "correlate",
    "parse_params",
    "resolve_path",
    "results_or_dependencies",
    "share_findings",
]

LOGHUB_DIR = Path(__file__).parent / "data" / "loghub"
"""The bundled loghub samples (OpenSSH_2k.log, Apache_2k.log, HDFS_2k.log)."""
_TIMELINE = 100  # entries kept in a correlation's timeline

M = TypeVar("M", bound=BaseModel)


def parse_params(model: type[M], task: dict[str, Any]) -> M:
    """The task's parameters as `model`; a LogicalError naming the first bad field."""
    params = task.get("parameters", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise LogicalError(f"parameters must be an object, got {type(params).__name__}")
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "parameters"
        raise LogicalError(
            f"parameter {field!r}: {err['msg']}", {"field": field, "errors": exc.error_count()}
        ) from None


def resolve_path(path: str) -> str:
    """`loghub:NAME` -> the bundled sample NAME; any other path as given."""
    if path.startswith("loghub:"):
        name = path.removeprefix("loghub:")
        if "/" in name or name.startswith("."):
            raise LogicalError(f"path {path!r}: a loghub sample is a bare file name")
        return str(LOGHUB_DIR / name)
    return path


class AnalysisParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["analyze", "correlate"] = "analyze"
    path: str | None = Field(None, min_length=1)
    text: str | None = None
    start: int | None = Field(None, ge=0)
    end: int | None = Field(None, ge=0)
    first_line: int | None = Field(None, ge=1)
    index: int | None = Field(None, ge=0)
    overlap_start: int | None = Field(None, ge=0)
    overlap_text: str | None = None
    lines: int | None = Field(None, ge=0)
    format: str = "auto"
    year: int = Field(DEFAULT_YEAR, ge=1970, le=9999)
    bucket_s: int = Field(DEFAULT_BUCKET_S, ge=1, le=86_400)
    top_n: int = Field(10, ge=1, le=1000)
    burst_threshold: int = Field(10, ge=1)
    window_s: int = Field(60, ge=1, le=7 * 86_400)
    share: bool | None = None
    source: str | None = Field(None, min_length=1, max_length=500)
    results: list[Any] | None = None
    pace_s: float = Field(0.0, ge=0.0, le=60.0)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value != "auto" and value not in FORMATS:
            raise ValueError(f"must be 'auto' or one of {sorted(FORMATS)}, got {value!r}")
        return value

    def check(self) -> AnalysisParams:
        """Cross-field rules, as LogicalErrors naming the field."""
        if self.mode == "correlate":
            if self.path is not None or self.text is not None:
                raise LogicalError("parameter 'path'/'text': not used by mode 'correlate'")
            return self
        if self.results is not None:
            raise LogicalError("parameter 'results': only for mode 'correlate'")
        if (self.path is None) == (self.text is None):
            raise LogicalError("parameter 'path'/'text': give exactly one of them")
        if self.text is not None and (self.start is not None or self.end is not None):
            raise LogicalError("parameter 'start'/'end': only for a 'path'")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise LogicalError(f"parameter 'end': {self.end} is before start {self.start}")
        if self.window_s % self.bucket_s:
            raise LogicalError(
                f"parameter 'window_s': {self.window_s} is not a multiple of bucket_s "
                f"{self.bucket_s}"
            )
        return self

    @property
    def is_chunk(self) -> bool:
        parts = (self.start, self.end, self.first_line, self.index, self.overlap_start)
        return any(x is not None for x in parts) or self.overlap_text is not None


def analyze_input(p: AnalysisParams) -> dict[str, Any]:
    """The blocking part of `mode: "analyze"`: read, parse, aggregate, find."""
    if p.path is not None:
        path = resolve_path(p.path)
        source = p.source or Path(path).name
        lines = read_lines(path, p.start or 0, p.end)  # checks the file and the range
        first = p.first_line or (count_lines(path, p.start) + 1 if p.start else 1)
    else:
        source = p.source or "text"
        lines = split_lines(p.text or "")
        first = p.first_line or 1
    partial = analyze(lines, first, p.format, year=p.year, bucket_s=p.bucket_s, source=source)
    found = findings(partial, p.top_n, p.burst_threshold, p.window_s)
    chunk = None
    if p.is_chunk:
        chunk = {"index": p.index, "start": p.start, "end": p.end, "first_line": first}
    return {
        "source": source,
        "format": found["format"],
        "lines": partial["lines"],
        "chunk": chunk,
        "partial": partial,
        "findings": found,
        "shared": 0,
    }


async def results_or_dependencies(results: list[Any] | None, ctx: Any) -> list[Any]:
    """`results` as given, else the results of the tasks this one depends on."""
    if results is not None:
        return results
    fetch = getattr(ctx, "dependency_results", None)
    found = await fetch() if fetch is not None else []
    if not found:
        raise LogicalError(
            "parameter 'results': required (or run after the tasks whose results to use)"
        )
    return list(found)


async def share_findings(ctx: AgentContext, found: dict[str, Any], source: str | None) -> int:
    """Share each finding as a discovery of its kind; how many were shared."""
    for finding in found["findings"]:
        await ctx.share_discovery(
            type=finding["kind"],
            content=describe(finding, source),
            confidence=finding["confidence"],
            data={**finding, "source": source},
        )
    return len(found["findings"])


# ---- correlate ---------------------------------------------------------------------------


def _addresses(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """address -> {count, first, last} of a result: from its partial when it has one,
    else from its findings' tables (top N only)."""
    if isinstance(result.get("partial"), dict):
        return {
            a: {"count": t["count"], "first": t["first"], "last": t["last"]}
            for a, t in result["partial"].get("addresses", {}).items()
        }
    out: dict[str, dict[str, Any]] = {}
    f = result.get("findings") or {}
    rows = [*f.get("top_addresses", []), *f.get("break_in_attempts", {}).get("top", [])]
    for row in [*rows, *f.get("auth_failures", {}).get("top", [])]:
        o = out.setdefault(row["address"], {"count": 0, "first": None, "last": None})
        o["count"] += row["count"]
        for key, pick in (("first", min), ("last", max)):
            seen = [x for x in (o[key], row.get(f"{key}_seen")) if x]
            o[key] = pick(seen) if seen else None
    return out


def correlate(results: list[Any], top_n: int = 10) -> dict[str, Any]:
    """Cross-source correlations of several results (each with `partial` or `findings`):
    addresses seen in several sources, logins after a burst seen in any source, and one
    timeline of all findings."""
    if not isinstance(results, list) or not results:
        raise LogicalError("parameter 'results': a non-empty list of analysis results")
    seen: dict[str, dict[str, dict[str, Any]]] = {}  # address -> source -> facts
    bursts: dict[str, tuple[str, str]] = {}  # address -> (first burst, source)
    logins: list[tuple[str, str, str, str]] = []  # (at, address, user, source)
    timeline: list[dict[str, Any]] = []
    sources: set[str] = set()
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not ("partial" in r or "findings" in r):
            raise LogicalError(f"results[{i}] is not an analysis result (no partial or findings)")
        f = r.get("findings") or {}
        source = str(r.get("source") or f"results[{i}]")
        sources.add(source)
        for addr, facts in _addresses(r).items():
            seen.setdefault(addr, {})[source] = facts
        for x in f.get("findings", []):
            timeline.append(
                {k: x[k] for k in ("kind", "subject", "count", "first_seen", "last_seen")}
                | {"source": source}
            )
            if x["kind"] == "brute_force":
                burst = (x["detail"]["first_burst_at"], source)
                bursts[x["subject"]] = min(bursts.get(x["subject"], burst), burst)
        if isinstance(r.get("partial"), dict):  # every login, not only the top N
            for addr, xs in r["partial"].get("logins", {}).items():
                logins.extend((x[0], addr, x[2], source) for x in xs)
        else:
            logins.extend((x["at"], x["address"], x["user"], source) for x in f.get("logins", []))
    shared = [
        {
            "address": addr,
            "sources": {s: v["count"] for s, v in sorted(per.items())},
            "total": sum(v["count"] for v in per.values()),
            "first_seen": min((v["first"] for v in per.values() if v["first"]), default=None),
            "last_seen": max((v["last"] for v in per.values() if v["last"]), default=None),
        }
        for addr, per in seen.items()
        if len(per) > 1
    ]
    shared.sort(key=lambda x: (-len(x["sources"]), -x["total"], x["address"]))
    late = [
        {
            "address": a,
            "user": u,
            "at": at,
            "login_source": s,
            "burst_source": bursts[a][1],
            "first_burst_at": bursts[a][0],
        }
        for at, a, u, s in sorted(set(logins))
        if a in bursts and at >= bursts[a][0]  # ISO timestamps of one form: they sort
    ]
    timeline.sort(key=lambda x: (x["first_seen"] or "", x["source"], x["kind"], x["subject"]))
    return {
        "mode": "correlate",
        "sources": sorted(sources),
        "shared_addresses": shared[:top_n],
        "logins_after_bursts": late,
        "timeline": timeline[:_TIMELINE],
    }


async def share_correlations(ctx: AgentContext, corr: dict[str, Any]) -> int:
    n = 0
    for x in corr["shared_addresses"]:
        where = ", ".join(f"{s} ({c:,})" for s, c in x["sources"].items())
        await ctx.share_discovery(
            type="shared_address",
            content=f"{x['address']} appears in {len(x['sources'])} sources: {where}",
            confidence=0.8,
            data=x,
        )
        n += 1
    for x in corr["logins_after_bursts"]:
        await ctx.share_discovery(
            type="login_after_burst",
            content=(
                f"login after burst: {x['user']} logged in from {x['address']} at {x['at']} "
                f"({x['login_source']}) after a burst from {x['first_burst_at']} "
                f"({x['burst_source']})"
            ),
            confidence=0.9,
            data=x,
        )
        n += 1
    return n


class LogAnalysisAgent(Agent):
    """Analyses a log (whole, or one chunk of it) or correlates several analyses."""

    capabilities = frozenset({"log_analysis"})

    async def handle(self, task: dict[str, Any], ctx: AgentContext) -> dict[str, Any]:
        p = parse_params(AnalysisParams, task).check()
        if p.pace_s:
            await asyncio.sleep(p.pace_s)
        if p.mode == "correlate":
            results = await results_or_dependencies(p.results, ctx)
            corr = await ctx.run_blocking(correlate, results, p.top_n)
            corr["shared"] = await share_correlations(ctx, corr) if p.share is not False else 0
            return corr
        result = await ctx.run_blocking(analyze_input, p)
        share = (not p.is_chunk) if p.share is None else p.share
        if share:
            result["shared"] = await share_findings(ctx, result["findings"], result["source"])
        return result
