"""Log analysis as a mergeable partial aggregate: `analyze` a range of lines, `merge` the
partials of any chunking, and compute `findings` from the result.

The one property everything here serves: `findings(merge(partials of any chunking)) ==
findings(analyze(whole input))`, and in fact `merge(...) == analyze(whole)`. So a partial
holds only exact, summable facts: counts, first/last timestamps (min/max), counts per
fixed clock-aligned time bucket, and the k examples with the smallest line numbers. A
threshold, a top N or a median is only ever applied in `findings`, after the merge.

What counts (sshd, see the README of the loghub samples for where these come from):
- a *failed password* is a line `Failed password for [invalid user] USER from ADDR port N
  ...` (one), or `message repeated N times: [ Failed password for ... ]` (N). `Failed none`
  and `Failed publickey` are not password guesses and are not counted.
- an *invalid user* is a line `Invalid user USER from ADDR`: sshd writes it once per attempt
  to log in as a user that does not exist. The `input_userauth_request: invalid user USER`
  line that follows repeats the same attempt and the `Failed password for invalid user`
  lines are its password guesses (counted as failed passwords), so neither is counted here.
- a *break-in attempt* is a line with `POSSIBLE BREAK-IN ATTEMPT` (a reverse mapping that
  failed), keyed by the bracketed address (or `Address ADDR maps ...`).
- an *auth failure* is a PAM `authentication failure; ... rhost=ADDR [user=USER]` line
  (how old syslogs record sshd/ftpd failures); `PAM N more authentication failures` lines
  summarise failures already logged and are not counted.
- a *login* is `Accepted METHOD for USER from ADDR port N`.
- an *error* is a line at level warn or above (Apache `error`, HDFS `WARN`, sshd `error:`).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from itertools import chain, islice
from typing import Any

from actors.builtin.logs.formats import DEFAULT_YEAR, Record, detect_format, family, parser_for
from runtime.errors import LogicalError

__all__ = [
    "DEFAULT_BUCKET_S",
    "ERROR_LEVELS",
    "EXAMPLES",
    "Partial",
    "analyze",
    "check_partial",
    "findings",
    "merge",
    "merge_counts",
    "merge_examples",
]

Partial = dict[str, Any]
"""A plain JSON-able dict; its keys are listed in `_empty`."""

VERSION = 1
EXAMPLES = 3  # examples kept per tally: the ones with the smallest line numbers
EXAMPLE_CHARS = 300
DEFAULT_BUCKET_S = 10  # the finest time bucket; `findings` windows are multiples of it
ERROR_LEVELS = frozenset(
    {"warn", "warning", "error", "err", "crit", "critical", "alert", "emerg", "fatal", "severe"}
)
_DETECT_HEAD = 200  # raw lines held back for format detection

_FAILED = re.compile(
    r"^Failed password for (?:invalid user )?(?P<user>.*?) from (?P<addr>\S+) port"
)
_REPEATED = re.compile(
    r"^message repeated (?P<n>\d+) times: \[ ?Failed password for (?:invalid user )?"
    r"(?P<user>.*?) from (?P<addr>\S+) port"
)
_INVALID = re.compile(r"^Invalid user (?P<user>.*?) from (?P<addr>\S+?)(?: port \d+)?\s*$")
_BREAK_IN = re.compile(r"\[(?P<a>[0-9A-Fa-f.:]+)\][^\[]*POSSIBLE BREAK-IN|^Address (?P<b>\S+) ")
_ACCEPTED = re.compile(r"^Accepted (?P<method>\S+) for (?P<user>\S+) from (?P<addr>\S+) port")
_AUTH_FAILURE = re.compile(
    r"authentication failure;.*?\brhost=(?P<addr>[^\s=]*)(?:\s+user=(?P<user>\S+))?"
)
_CONNECTION = re.compile(r"\bconnection from (?P<addr>[0-9A-Fa-f.:]+)")

_TALLIES = (
    "failed_password",  # address -> tally of failed passwords
    "failed_users",  # user -> tally of failed passwords
    "invalid_users",  # user -> tally of "Invalid user" lines
    "break_in",  # address -> tally of POSSIBLE BREAK-IN ATTEMPT lines
    "auth_failures",  # address -> tally of PAM authentication failures
    "addresses",  # address -> tally of every security line naming it (for correlation)
    "errors",  # component -> tally of error lines
)
_COUNTS = ("levels", "components")  # key -> count
_NESTED = ("level_components", "fail_buckets", "auth_buckets")  # key -> key -> count


def _empty(fam: str, bucket_s: int, source: str | None) -> Partial:
    return {
        "version": VERSION,
        "family": fam,
        "bucket_s": bucket_s,
        "sources": [source] if source else [],
        "lines": 0,
        "parsed": 0,
        "unparsed": 0,
        "unparsed_examples": [],
        "first": None,
        "last": None,
        **{k: {} for k in (*_TALLIES, *_COUNTS, *_NESTED)},
        "error_buckets": {},  # bucket start -> {count, components, examples}
        "logins": {},  # address -> sorted [[iso, line_no, user, method, text], ...]
    }


_KEYS = frozenset(_empty("syslog", 1, None))

# ---- analyze -----------------------------------------------------------------------------


def _example(examples: list[list[Any]], line_no: int, text: str) -> None:
    if len(examples) < EXAMPLES:
        examples.append([line_no, text[:EXAMPLE_CHARS]])


def _tally(table: dict[str, Any], key: str, rec: Record, iso: str, text: str, n: int = 1) -> None:
    t = table.get(key)
    if t is None:
        table[key] = {"count": n, "first": iso, "last": iso, "examples": [[rec.line_no, text]]}
        return
    t["count"] += n
    t["first"], t["last"] = min(t["first"], iso), max(t["last"], iso)
    _example(t["examples"], rec.line_no, text)


def _bump(table: dict[str, int], key: str, n: int = 1) -> None:
    table[key] = table.get(key, 0) + n


def _bump2(table: dict[str, dict[str, int]], key: str, sub: str, n: int = 1) -> None:
    _bump(table.setdefault(key, {}), sub, n)


def _security(p: Partial, rec: Record, iso: str, bucket: str, text: str) -> None:
    """The sshd/PAM events of one syslog line (see the module docstring for what counts)."""
    c = rec.content
    addr = user = None
    n = 1
    if c.startswith("Failed password"):
        m = _FAILED.match(c)
    elif c.startswith("message repeated"):
        m = _REPEATED.match(c)
        n = int(m["n"]) if m else 1
    else:
        m = None
    if m:
        addr, user = m["addr"], m["user"]
        _tally(p["failed_password"], addr, rec, iso, text, n)
        _tally(p["failed_users"], user, rec, iso, text, n)
        _bump2(p["fail_buckets"], addr, bucket, n)
    elif c.startswith("Invalid user ") and (m := _INVALID.match(c)):
        addr = m["addr"]
        _tally(p["invalid_users"], m["user"], rec, iso, text)
    elif "POSSIBLE BREAK-IN ATTEMPT" in c and (m := _BREAK_IN.search(c)):
        addr = m["a"] or m["b"]
        _tally(p["break_in"], addr, rec, iso, text)
    elif c.startswith("Accepted ") and (m := _ACCEPTED.match(c)):
        addr = m["addr"]
        p["logins"].setdefault(addr, []).append([iso, rec.line_no, m["user"], m["method"], text])
    elif (
        "authentication failure;" in c
        and not c.startswith("PAM ")  # "PAM 1 more authentication failure; ...": a summary
        and (m := _AUTH_FAILURE.search(c))
        and m["addr"]
    ):
        addr = m["addr"]
        _tally(p["auth_failures"], addr, rec, iso, text)
        _bump2(p["auth_buckets"], addr, bucket)
    elif "connection from" in c and (m := _CONNECTION.search(c)):
        addr = m["addr"]
    if addr:
        _tally(p["addresses"], addr, rec, iso, text, n)


def _record(p: Partial, rec: Record, text: str) -> None:
    p["parsed"] += 1
    iso = rec.timestamp.isoformat(timespec="seconds")
    p["first"] = iso if p["first"] is None else min(p["first"], iso)
    p["last"] = iso if p["last"] is None else max(p["last"], iso)
    epoch = calendar.timegm(rec.timestamp.timetuple())
    bucket = str(epoch // p["bucket_s"] * p["bucket_s"])
    _bump(p["components"], rec.component)
    if rec.level:
        _bump(p["levels"], rec.level)
        _bump2(p["level_components"], rec.level, rec.component)
        if rec.level in ERROR_LEVELS:
            _tally(p["errors"], rec.component, rec, iso, text)
            b = p["error_buckets"].setdefault(
                bucket, {"count": 0, "components": {}, "examples": []}
            )
            b["count"] += 1
            _bump(b["components"], rec.component)
            _example(b["examples"], rec.line_no, text)
    if p["family"] == "syslog":
        _security(p, rec, iso, bucket, text)
    elif rec.host and rec.level in ERROR_LEVELS:  # an Apache client error
        _tally(p["addresses"], rec.host, rec, iso, text)


def analyze(
    lines: Iterable[str],
    first_line_no: int = 1,
    fmt: str = "auto",
    *,
    year: int = DEFAULT_YEAR,
    bucket_s: int = DEFAULT_BUCKET_S,
    source: str | None = None,
) -> Partial:
    """The partial aggregate of `lines`, the first of which is line `first_line_no`.

    `fmt` is a format name or "auto" (detected from the first non-empty lines). Blank lines
    count in `lines` only; a line the format does not parse counts in `unparsed`.
    """
    if bucket_s < 1:
        raise LogicalError(f"bucket_s must be at least 1, got {bucket_s}")
    it = iter(lines)
    if fmt == "auto":
        head = list(islice(it, _DETECT_HEAD))
        fmt = detect_format(head, source or "input")
        it = chain(head, it)
    fam = family(fmt)
    parse = parser_for(fam, year)
    p = _empty(fam, bucket_s, source)
    for line_no, raw in enumerate(it, first_line_no):
        p["lines"] += 1
        text = raw.rstrip("\r\n")
        if not text.strip():
            continue
        rec = parse(text, line_no)
        if rec is None:
            p["unparsed"] += 1
            _example(p["unparsed_examples"], line_no, text[:EXAMPLE_CHARS])
        else:
            _record(p, rec, text[:EXAMPLE_CHARS])
    for logins in p["logins"].values():
        logins.sort()
    return p


# ---- merge -------------------------------------------------------------------------------


def merge_examples(lists: Iterable[list[list[Any]]]) -> list[list[Any]]:
    return sorted(chain.from_iterable(lists))[:EXAMPLES]


def _merge_tallies(tables: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table in tables:
        for key, t in table.items():
            o = out.get(key)
            if o is None:
                out[key] = {**t, "examples": list(t["examples"])}
                continue
            o["count"] += t["count"]
            o["first"], o["last"] = min(o["first"], t["first"]), max(o["last"], t["last"])
            o["examples"] = merge_examples((o["examples"], t["examples"]))
    return out


def merge_counts(tables: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for table in tables:
        for key, n in table.items():
            _bump(out, key, n)
    return out


def _merge_nested(tables: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    keys = {k for t in tables for k in t}
    return {k: merge_counts(t[k] for t in tables if k in t) for k in keys}


def check_partial(partial: Any, name: str = "partial") -> Partial:
    """`partial` if it is a partial of this version; a LogicalError naming it if not."""
    if not isinstance(partial, dict) or partial.get("version") != VERSION:
        raise LogicalError(f"{name} is not a version {VERSION} log-analysis partial")
    if missing := _KEYS - partial.keys():
        raise LogicalError(f"{name} is not a log-analysis partial: no {sorted(missing)}")
    return partial


def merge(partials: Iterable[Partial], *, strict: bool = True) -> Partial:
    """One partial for all of `partials`, in any order. `strict` refuses to mix formats;
    otherwise mixed formats merge as family "mixed" (for a report across sources)."""
    ps = [check_partial(p, f"partials[{i}]") for i, p in enumerate(partials)]
    if not ps:
        raise LogicalError("nothing to merge: no partials")
    buckets = {p["bucket_s"] for p in ps}
    if len(buckets) > 1:
        raise LogicalError(f"cannot merge partials with different bucket_s: {sorted(buckets)}")
    fams = sorted({p["family"] for p in ps})
    if len(fams) > 1 and strict:
        raise LogicalError(f"cannot merge partials of different formats: {fams}")
    firsts = [p["first"] for p in ps if p["first"]]
    lasts = [p["last"] for p in ps if p["last"]]
    out = _empty(fams[0] if len(fams) == 1 else "mixed", ps[0]["bucket_s"], None)
    out["sources"] = sorted({s for p in ps for s in p["sources"]})
    for key in ("lines", "parsed", "unparsed"):
        out[key] = sum(p[key] for p in ps)
    out["unparsed_examples"] = merge_examples(p["unparsed_examples"] for p in ps)
    out["first"], out["last"] = min(firsts, default=None), max(lasts, default=None)
    for key in _TALLIES:
        out[key] = _merge_tallies([p[key] for p in ps])
    for key in _COUNTS:
        out[key] = merge_counts(p[key] for p in ps)
    for key in _NESTED:
        out[key] = _merge_nested([p[key] for p in ps])
    for bucket in {b for p in ps for b in p["error_buckets"]}:
        parts = [p["error_buckets"][bucket] for p in ps if bucket in p["error_buckets"]]
        out["error_buckets"][bucket] = {
            "count": sum(b["count"] for b in parts),
            "components": merge_counts(b["components"] for b in parts),
            "examples": merge_examples(b["examples"] for b in parts),
        }
    for addr in {a for p in ps for a in p["logins"]}:
        out["logins"][addr] = sorted(chain.from_iterable(p["logins"].get(addr, []) for p in ps))
    return out


# ---- findings (in `findings.py`, kept apart for size) -------------------------------------


def findings(partial: Partial, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The findings and summary tables of a (merged) partial: `logs.findings.findings`."""
    from actors.builtin.logs.findings import findings as compute

    return compute(partial, *args, **kwargs)
