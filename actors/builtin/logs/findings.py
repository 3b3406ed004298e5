"""Findings: what a (merged) partial means. Thresholds, top N and medians live here and
only here, applied after the merge, so chunked and single-pass analyses agree exactly.

Each finding is `{"kind", "subject", "count", "first_seen", "last_seen", "examples":
[{"line", "text"}], "confidence", "detail": {...}}`; the kinds:

- `brute_force` (one per address, top N by count): an address with at least one window
  of `window_s` seconds (clock-aligned) holding >= `burst_threshold` failed passwords
  (or PAM auth failures, for an address with no failed password line);
- `login_after_burst`: a successful login from such an address at or after its first burst;
- `invalid_users`, `break_in_attempt`: one each, with the top N in `detail.top`;
- `error_spike`: a window whose error count is >= max(`spike_min`, `spike_factor` x the
  median over the windows that have errors; needs 3 such windows), with its components;
- `errors_by_component`: the top N components by error count.
"""

from __future__ import annotations

import calendar
import statistics
from datetime import UTC, datetime
from typing import Any

from actors.builtin.logs.analysis import (
    EXAMPLES,
    Partial,
    check_partial,
    merge_counts,
    merge_examples,
)
from runtime.errors import LogicalError

__all__ = ["describe", "findings"]


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat()


def _epoch(iso: str) -> int:
    return calendar.timegm(datetime.fromisoformat(iso).timetuple())


def _examples(pairs: list[list[Any]]) -> list[dict[str, Any]]:
    return [{"line": n, "text": text} for n, text in pairs]


def _finding(
    kind: str,
    subject: str,
    count: int,
    first: str | None,
    last: str | None,
    examples: list[list[Any]],
    confidence: float,
    **detail: Any,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "subject": subject,
        "count": count,
        "first_seen": first,
        "last_seen": last,
        "examples": _examples(examples),
        "confidence": round(confidence, 2),
        "detail": detail,
    }


def _top(table: dict[str, Any], n: int) -> list[tuple[str, Any]]:
    """The n largest entries (a tally or a count), by count desc then key."""

    def count(v: Any) -> int:
        return v["count"] if isinstance(v, dict) else v

    return sorted(table.items(), key=lambda kv: (-count(kv[1]), kv[0]))[:n]


def _windows(buckets: dict[str, int], window_s: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for bucket, n in buckets.items():
        w = int(bucket) // window_s * window_s
        out[w] = out.get(w, 0) + n
    return out


def _bursts(p: Partial, threshold: int, window_s: int) -> dict[str, dict[str, Any]]:
    """Per address with at least one window of >= threshold failures: its burst facts.
    Failed passwords are the evidence; PAM auth failures only for an address that has no
    failed password (an old syslog), so one attempt is never counted twice."""
    out: dict[str, dict[str, Any]] = {}
    sources = [("failed_password", "fail_buckets"), ("auth_failures", "auth_buckets")]
    for evidence, buckets_key in sources:
        for addr, buckets in p[buckets_key].items():
            if addr in out or (evidence == "auth_failures" and addr in p["failed_password"]):
                continue
            windows = _windows(buckets, window_s)
            bursts = sorted(w for w, n in windows.items() if n >= threshold)
            if bursts:
                peak_at, peak = min(windows.items(), key=lambda wn: (-wn[1], wn[0]))
                out[addr] = {
                    "tally": p[evidence][addr],
                    "evidence": evidence,
                    "bursts": bursts,
                    "peak": peak,
                    "peak_at": peak_at,
                }
    return out


def _security_findings(p: Partial, top_n: int, threshold: int, window_s: int) -> list[Any]:
    found: list[dict[str, Any]] = []
    bursts = _bursts(p, threshold, window_s)
    for addr, b in sorted(bursts.items(), key=lambda kv: (-kv[1]["tally"]["count"], kv[0]))[:top_n]:
        t = b["tally"]
        confidence = (
            0.5 + min(0.3, 0.1 * len(b["bursts"])) + 0.19 * min(1.0, b["peak"] / (3 * threshold))
        )
        found.append(
            _finding(
                "brute_force",
                addr,
                t["count"],
                t["first"],
                t["last"],
                t["examples"],
                confidence,
                evidence=b["evidence"],
                burst_windows=len(b["bursts"]),
                first_burst_at=_iso(b["bursts"][0]),
                peak=b["peak"],
                peak_at=_iso(b["peak_at"]),
                window_s=window_s,
                threshold=threshold,
            )
        )
    for addr in sorted(set(bursts) & set(p["logins"])):
        first_burst = bursts[addr]["bursts"][0]
        after = [x for x in p["logins"][addr] if _epoch(x[0]) >= first_burst]
        if after:
            found.append(
                _finding(
                    "login_after_burst",
                    addr,
                    len(after),
                    after[0][0],
                    after[-1][0],
                    [[x[1], x[4]] for x in after[:EXAMPLES]],
                    0.9,
                    users=sorted({x[2] for x in after}),
                    first_burst_at=_iso(first_burst),
                )
            )
    if inv := p["invalid_users"]:
        tallies = list(inv.values())
        found.append(
            _finding(
                "invalid_users",
                f"{len(inv)} invalid user names",
                sum(t["count"] for t in tallies),
                min(t["first"] for t in tallies),
                max(t["last"] for t in tallies),
                merge_examples(t["examples"] for t in tallies),
                0.8,
                distinct=len(inv),
                top=[{"user": u, "count": t["count"]} for u, t in _top(inv, top_n)],
            )
        )
    if brk := p["break_in"]:
        tallies = list(brk.values())
        found.append(
            _finding(
                "break_in_attempt",
                f"{len(brk)} addresses",
                sum(t["count"] for t in tallies),
                min(t["first"] for t in tallies),
                max(t["last"] for t in tallies),
                merge_examples(t["examples"] for t in tallies),
                0.6,
                top=[{"address": a, "count": t["count"]} for a, t in _top(brk, top_n)],
            )
        )
    return found


def _error_findings(
    p: Partial, top_n: int, window_s: int, factor: float, minimum: int
) -> list[Any]:
    """Error spikes (a window with >= max(minimum, factor x the median of the windows that
    have errors), with its components) and the components that logged errors."""
    found: list[dict[str, Any]] = []
    windows: dict[int, list[dict[str, Any]]] = {}
    for bucket, b in p["error_buckets"].items():
        windows.setdefault(int(bucket) // window_s * window_s, []).append(b)
    counts = {w: sum(b["count"] for b in bs) for w, bs in windows.items()}
    if len(counts) >= 3:
        median = statistics.median(counts.values())
        spikes = [(w, n) for w, n in counts.items() if n >= max(minimum, factor * median)]
        for w, n in sorted(spikes, key=lambda wn: (-wn[1], wn[0]))[:top_n]:
            parts = windows[w]
            components = merge_counts(b["components"] for b in parts)
            found.append(
                _finding(
                    "error_spike",
                    _iso(w),
                    n,
                    _iso(w),
                    _iso(w + window_s - 1),
                    merge_examples(b["examples"] for b in parts),
                    0.5 + min(0.45, 0.05 * n / median),
                    median=median,
                    window_s=window_s,
                    components=dict(_top(components, len(components))),
                )
            )
    total = sum(t["count"] for t in p["errors"].values())
    for comp, t in _top(p["errors"], top_n):
        found.append(
            _finding(
                "errors_by_component",
                comp,
                t["count"],
                t["first"],
                t["last"],
                t["examples"],
                0.7,
                share=round(t["count"] / total, 3),
            )
        )
    return found


def _label(p: Partial) -> str:
    """The format name: a syslog whose every line is from sshd is `sshd`."""
    if p["family"] == "syslog" and set(p["components"]) <= {"sshd"}:
        return "sshd"
    return p["family"]


def findings(
    partial: Partial,
    top_n: int = 10,
    burst_threshold: int = 10,
    window_s: int = 60,
    *,
    spike_factor: float = 3.0,
    spike_min: int = 5,
) -> dict[str, Any]:
    """The findings and summary tables of a (merged) partial. `window_s` must be a multiple
    of the partial's `bucket_s`, so every bucket falls in exactly one window."""
    p = check_partial(partial)
    if top_n < 1 or burst_threshold < 1:
        raise LogicalError(
            f"top_n and burst_threshold must be >= 1, got {top_n}, {burst_threshold}"
        )
    if window_s < 1 or window_s % p["bucket_s"]:
        raise LogicalError(
            f"window_s must be a positive multiple of {p['bucket_s']}, got {window_s}"
        )

    def table(key: str, name: str) -> list[dict[str, Any]]:
        return [
            {name: k, "count": t["count"], "first_seen": t["first"], "last_seen": t["last"]}
            for k, t in _top(p[key], top_n)
        ]

    def total(key: str) -> int:
        return sum(t["count"] for t in p[key].values())

    # a login is [iso, line_no, user, method, text]: list them by time, then line
    logins = sorted((x[0], x[1], a, x[2], x[3]) for a, xs in p["logins"].items() for x in xs)
    return {
        "format": _label(p),
        "sources": p["sources"],
        "lines": p["lines"],
        "parsed": p["parsed"],
        "unparsed": p["unparsed"],
        "time_range": {"first": p["first"], "last": p["last"]},
        "findings": [
            *_security_findings(p, top_n, burst_threshold, window_s),
            *_error_findings(p, top_n, window_s, spike_factor, spike_min),
        ],
        "top_addresses": table("failed_password", "address"),
        "failed_passwords": total("failed_password"),
        "invalid_users": {
            "total": total("invalid_users"),
            "distinct": len(p["invalid_users"]),
            "top": table("invalid_users", "user"),
        },
        "break_in_attempts": {
            "total": total("break_in"),
            "addresses": len(p["break_in"]),
            "top": table("break_in", "address"),
        },
        "auth_failures": {
            "total": total("auth_failures"),
            "top": table("auth_failures", "address"),
        },
        "logins": [
            {"at": at, "address": a, "user": user, "method": method}
            for at, _, a, user, method in logins[:top_n]
        ],
        "levels": dict(_top(p["levels"], len(p["levels"]))),
        "components": {c: t["count"] for c, t in _top(p["errors"], top_n)},
    }


def describe(finding: dict[str, Any], source: str | None = None) -> str:
    """One sentence for a finding (a discovery's `content`)."""
    k, s, n, d = finding["kind"], finding["subject"], finding["count"], finding["detail"]
    span = f"between {finding['first_seen']} and {finding['last_seen']}"
    where = f" in {source}" if source else ""
    if k == "brute_force":
        what = "failed passwords" if d["evidence"] == "failed_password" else "auth failures"
        return (
            f"brute force: {n:,} {what} from {s} {span}, peak {d['peak']} in "
            f"{d['window_s']}s at {d['peak_at']}{where}"
        )
    if k == "login_after_burst":
        return (
            f"login after burst: {n} successful login(s) from {s} as {', '.join(d['users'])} "
            f"{span}, after failed-password bursts from {d['first_burst_at']}{where}"
        )
    if k == "invalid_users":
        top = d["top"][0]
        return (
            f"invalid users: {n:,} attempts with {d['distinct']} names {span}, most often "
            f"{top['user']!r} ({top['count']}){where}"
        )
    if k == "break_in_attempt":
        top = d["top"][0]
        return (
            f"break-in attempts: {n:,} POSSIBLE BREAK-IN ATTEMPT warnings from {s} {span}, "
            f"most from {top['address']} ({top['count']}){where}"
        )
    if k == "error_spike":
        comps = ", ".join(f"{c} ({m})" for c, m in list(d["components"].items())[:3])
        return (
            f"error spike: {n:,} errors in {d['window_s']}s from {s} (median {d['median']:g} "
            f"per window with errors): {comps}{where}"
        )
    if k == "errors_by_component":
        return f"errors: {n:,} error lines from {s} {span}{where}"
    return f"{k}: {s} ({n:,}){where}"
