"""`ReduceAgent` (capability `reduce`): merge chunk analyses, or report on analyses.

Parameters: `results` (a list; without it, the results of the tasks this one depends on,
`ctx.dependency_results`), `mode` (`merge`, the default, or `report`), `top_n`,
`burst_threshold`, `window_s`, `share` (default true), `source` (a label).

`mode: "merge"`: `results` are `log_analysis` results of chunks of one input, each with a
`partial`. Returns the same shape as a whole-input `log_analysis` result, equal to it
(the merge is exact), plus how many were merged:

    {"source", "format", "lines", "chunk": None, "partial", "findings", "shared", "merged"}

`mode: "report"`: `results` are merged analyses (with `partial`, any formats) and/or
correlations (`log_analysis` with `mode: "correlate"`). Returns

    {"summary", "top_addresses", "invalid_users", "break_in_attempts", "error_components",
     "levels", "sources", "lines", "findings", "shared_addresses", "logins_after_bursts",
     "shared"}

where the tables add up every source (a cross-source merge), `sources` is `[{"source",
"format", "lines"}]` and `summary` a few sentences naming the top attacking address.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from actors.agent import Agent, AgentContext
from actors.builtin.log_analysis import (
    correlate,
    parse_params,
    results_or_dependencies,
    share_findings,
)
from actors.builtin.logs.analysis import check_partial, merge
from actors.builtin.logs.findings import findings
from runtime.errors import LogicalError

__all__ = ["ReduceAgent", "merge_results", "report"]


class ReduceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    results: list[Any] | None = None
    mode: Literal["merge", "report"] = "merge"
    top_n: int = Field(10, ge=1, le=1000)
    burst_threshold: int = Field(10, ge=1)
    window_s: int = Field(60, ge=1, le=7 * 86_400)
    share: bool = True
    source: str | None = Field(None, min_length=1, max_length=500)


def _partial(result: Any, i: int) -> dict[str, Any] | None:
    """The checked partial of results[i], or None if it has none."""
    if not isinstance(result, dict):
        raise LogicalError(f"results[{i}] is not an object: {type(result).__name__}", {"index": i})
    if "partial" not in result:
        return None
    return check_partial(result["partial"], f"results[{i}].partial")


def merge_results(p: ReduceParams) -> dict[str, Any]:
    """`mode: "merge"`: one analysis of all the chunks."""
    results = p.results or []
    if not results:
        raise LogicalError("parameter 'results': nothing to merge (an empty list)")
    partials = []
    for i, r in enumerate(results):
        partial = _partial(r, i)
        if partial is None:
            raise LogicalError(f"results[{i}] has no 'partial' (not a log_analysis result)")
        partials.append(partial)
    merged = merge(partials)
    found = findings(merged, p.top_n, p.burst_threshold, p.window_s)
    return {
        "source": p.source or ", ".join(merged["sources"]) or "merged",
        "format": found["format"],
        "lines": merged["lines"],
        "chunk": None,
        "partial": merged,
        "findings": found,
        "shared": 0,
        "merged": len(partials),
    }


def _summary(f: dict[str, Any] | None, sources: list[dict[str, Any]], late: list[Any]) -> str:
    """A few sentences a person reads first."""
    names = ", ".join(s["source"] for s in sources)
    lines = sum(s["lines"] or 0 for s in sources)
    out = [f"Analysed {lines:,} lines from {len(sources)} source(s): {names or 'none'}."]
    if f is None:
        return " ".join(out)
    if top := f["top_addresses"]:
        a = top[0]
        out.append(
            f"The top attacking address is {a['address']} with {a['count']:,} failed "
            f"passwords between {a['first_seen']} and {a['last_seen']} "
            f"({f['failed_passwords']:,} failed passwords in all)."
        )
    if (inv := f["invalid_users"])["total"]:
        u = inv["top"][0]
        out.append(
            f"{inv['total']:,} login attempts named {inv['distinct']} invalid users, most "
            f"often {u['user']!r} ({u['count']:,})."
        )
    if (brk := f["break_in_attempts"])["total"]:
        b = brk["top"][0]
        out.append(
            f"{brk['total']:,} POSSIBLE BREAK-IN ATTEMPT warnings came from "
            f"{brk['addresses']} addresses, most from {b['address']} ({b['count']:,})."
        )
    if late:
        x = late[0]
        out.append(
            f"{len(late)} successful login(s) followed a burst of failures from the same "
            f"address, first {x['user']} from {x['address']} at {x['at']}."
        )
    if comps := f["components"]:
        comp, n = next(iter(comps.items()))
        out.append(f"{sum(comps.values()):,} error lines, most from {comp} ({n:,}).")
    if len(out) == 1:
        out.append("No attacks or errors were found.")
    return " ".join(out)


def report(p: ReduceParams) -> dict[str, Any]:
    """`mode: "report"`: the tables of all sources added up, with correlations."""
    results = p.results or []
    if not results:
        raise LogicalError("parameter 'results': nothing to report on (an empty list)")
    analyses, correlations = [], []
    for i, r in enumerate(results):
        if _partial(r, i) is not None:
            analyses.append(r)
        elif r.get("mode") == "correlate":
            correlations.append(r)
        else:
            raise LogicalError(
                f"results[{i}] is neither an analysis (with 'partial') nor a correlation"
            )
    sources = [
        {"source": r.get("source"), "format": r.get("format"), "lines": r["partial"]["lines"]}
        for r in analyses
    ]
    f = None
    if analyses:
        merged = merge([r["partial"] for r in analyses], strict=False)
        f = findings(merged, p.top_n, p.burst_threshold, p.window_s)
        correlations.append(correlate(analyses, p.top_n))
    shared: dict[str, dict[str, Any]] = {}
    for c in correlations:
        for x in c.get("shared_addresses", []):
            if x["total"] > shared.get(x["address"], {"total": -1})["total"]:
                shared[x["address"]] = x
    late: dict[tuple[str, str, str], dict[str, Any]] = {}  # one row per login
    for c in correlations:
        for x in c.get("logins_after_bursts", []):
            late.setdefault((x["at"], x["address"], x["user"]), x)
    late_rows = [late[k] for k in sorted(late)]
    t = f or {
        "top_addresses": [],
        "invalid_users": {"total": 0, "distinct": 0, "top": []},
        "break_in_attempts": {"total": 0, "addresses": 0, "top": []},
        "components": {},
        "levels": {},
        "findings": [],
    }
    return {
        "summary": _summary(f, sources, late_rows),
        "top_addresses": t["top_addresses"],
        "invalid_users": t["invalid_users"],
        "break_in_attempts": t["break_in_attempts"],
        "error_components": t["components"],
        "levels": t["levels"],
        "sources": sources,
        "lines": sum(s["lines"] for s in sources),
        "findings": t["findings"],
        "shared_addresses": sorted(
            shared.values(), key=lambda x: (-len(x["sources"]), -x["total"], x["address"])
        )[: p.top_n],
        "logins_after_bursts": late_rows,
        "shared": 0,
    }


class ReduceAgent(Agent):
    """Merges chunk analyses exactly (`merge`) or reports across sources (`report`)."""

    capabilities = frozenset({"reduce"})

    async def handle(self, task: dict[str, Any], ctx: AgentContext) -> dict[str, Any]:
        p = parse_params(ReduceParams, task)
        p.results = await results_or_dependencies(p.results, ctx)
        if p.mode == "merge":
            result = await ctx.run_blocking(merge_results, p)
            if p.share:
                result["shared"] = await share_findings(ctx, result["findings"], result["source"])
            return result
        rep = await ctx.run_blocking(report, p)
        if p.share:
            await ctx.share_discovery(
                type="log_report",
                content=rep["summary"],
                confidence=0.9,
                data={k: v for k, v in rep.items() if k not in ("findings", "shared")},
            )
            rep["shared"] = 1
        return rep
