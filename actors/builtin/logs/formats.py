"""Log line formats: detect one from a file's first lines and parse lines into `Record`s.

Four formats, three parsers:

| name | example | parser |
|---|---|---|
| `sshd` | `Dec 10 06:55:46 LabSZ sshd[24200]: Failed password for ...` | syslog |
| `syslog` | `Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; ...` | syslog |
| `apache` | `[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6` | apache |
| `hdfs` | `081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 ...` | hdfs |

`sshd` is syslog whose every line comes from `sshd`: both names use the syslog parser (the
*family*), and the analysis tells them apart from what it saw, so a chunk of a mixed auth
log can never be labelled differently from the whole file. Syslog lines carry no year:
the caller gives one (default 2026); a log that crosses New Year is not unwrapped.

A line no parser understands is not an error: the analysis counts it as `unparsed`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import islice

from runtime.errors import LogicalError

__all__ = [
    "DEFAULT_YEAR",
    "FORMATS",
    "Record",
    "detect_format",
    "family",
    "parser_for",
]

DEFAULT_YEAR = 2026
FORMATS: dict[str, str] = {"sshd": "syslog", "syslog": "syslog", "apache": "apache", "hdfs": "hdfs"}
"""Format name -> parser family."""
DETECT_LINES = 20
"""How many non-empty lines detection looks at."""

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


@dataclass(frozen=True, slots=True)
class Record:
    """One parsed line. `component` is the syslog process, the Apache module or the HDFS
    class; `level` is lower-case (`error`, `warn`, ...) or None when the format has none."""

    line_no: int
    timestamp: datetime
    host: str | None
    component: str
    pid: int | None
    level: str | None
    content: str


Parser = Callable[[str, int], Record | None]

# ---- syslog (sshd and friends) -----------------------------------------------------------

_SYSLOG = re.compile(
    r"^(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d) "
    r"(?P<host>\S+) (?P<proc>[^\s\[\]:(]+(?:\([^)\s]*\))?)(?:\[(?P<pid>\d+)\])?: ?"
    r"(?P<content>.*)$"
)
_SYSLOG_LEVEL = re.compile(r"^(error|fatal|warning|critical):", re.IGNORECASE)


def _syslog(year: int) -> Parser:
    def parse(line: str, line_no: int) -> Record | None:
        m = _SYSLOG.match(line)
        if m is None or m["mon"] not in _MONTHS:
            return None
        try:
            ts = datetime(
                year, _MONTHS[m["mon"]], int(m["day"]), int(m["h"]), int(m["m"]), int(m["s"])
            )
        except ValueError:  # Feb 29 in a year that has none, hour 25, ...
            return None
        content = m["content"]
        lvl = _SYSLOG_LEVEL.match(content)  # sshd writes "error: ..." / "fatal: ..."
        pid = m["pid"]
        return Record(
            line_no,
            ts,
            m["host"],
            m["proc"],
            int(pid) if pid else None,
            lvl[1].lower() if lvl else None,
            content,
        )

    return parse


# ---- Apache error log (2.2 and 2.4 style) ------------------------------------------------

_APACHE = re.compile(
    r"^\[(?:[A-Z][a-z]{2}) (?P<mon>[A-Z][a-z]{2}) (?P<day>\d{1,2}) "
    r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)(?:\.\d+)? (?P<year>\d{4})\] "
    r"\[(?:(?P<module>[\w.-]+):)?(?P<level>[a-z]+\d?)\] "
    r"(?:\[pid (?P<pid>\d+)(?::tid \d+)?\] )?"
    r"(?:\[client (?P<client>[^\]\s]+)\] )?(?P<content>.*)$"
)
_APACHE_WORD = re.compile(r"[A-Za-z_][\w.]*")


def _apache_component(module: str | None, client: str | None, content: str) -> str:
    """Apache 2.2 lines name no module: take the message's first word (`mod_jk`,
    `jk2_init`, `workerEnv.init`), or `client` for a request error."""
    if module:
        return module
    if client:
        return "client"
    word = _APACHE_WORD.match(content)
    return word[0] if word else "-"


def _apache(year: int) -> Parser:
    del year  # Apache lines carry their year

    def parse(line: str, line_no: int) -> Record | None:
        m = _APACHE.match(line)
        if m is None or m["mon"] not in _MONTHS:
            return None
        try:
            ts = datetime(
                int(m["year"]),
                _MONTHS[m["mon"]],
                int(m["day"]),
                int(m["h"]),
                int(m["m"]),
                int(m["s"]),
            )
        except ValueError:
            return None
        content = m["content"]
        if m["client"]:
            content = f"[client {m['client']}] {content}"
        return Record(
            line_no,
            ts,
            m["client"],
            _apache_component(m["module"], m["client"], m["content"]),
            int(m["pid"]) if m["pid"] else None,
            m["level"].lower(),
            content,
        )

    return parse


# ---- HDFS --------------------------------------------------------------------------------

_HDFS = re.compile(
    r"^(?P<yy>\d\d)(?P<mo>\d\d)(?P<dd>\d\d) (?P<h>\d\d)(?P<m>\d\d)(?P<s>\d\d) (?P<pid>\d+) "
    r"(?P<level>[A-Z]+) (?P<comp>[^\s:]+): ?(?P<content>.*)$"
)


def _hdfs(year: int) -> Parser:
    del year  # HDFS lines carry a two-digit year: 20yy

    def parse(line: str, line_no: int) -> Record | None:
        m = _HDFS.match(line)
        if m is None:
            return None
        try:
            ts = datetime(
                2000 + int(m["yy"]),
                int(m["mo"]),
                int(m["dd"]),
                int(m["h"]),
                int(m["m"]),
                int(m["s"]),
            )
        except ValueError:
            return None
        return Record(line_no, ts, None, m["comp"], int(m["pid"]), m["level"].lower(), m["content"])

    return parse


_PARSERS: dict[str, Callable[[int], Parser]] = {
    "syslog": _syslog,
    "apache": _apache,
    "hdfs": _hdfs,
}

# ---- public ------------------------------------------------------------------------------


def family(fmt: str) -> str:
    """The parser family of a format name; LogicalError for an unknown name."""
    try:
        return FORMATS[fmt]
    except (KeyError, TypeError):
        raise LogicalError(
            f"unknown log format {fmt!r}: expected 'auto' or one of {sorted(FORMATS)}",
            {"format": fmt},
        ) from None


def parser_for(fmt: str, year: int = DEFAULT_YEAR) -> Parser:
    """`parse(line, line_no) -> Record | None` for a format name or family."""
    return _PARSERS[family(fmt)](year)


def detect_format(lines: Iterable[str], source: str = "input") -> str:
    """The format of the first non-empty lines: the parser that understands most of them
    (`sshd` when every syslog line is from sshd). LogicalError if none understands any."""
    sample = list(islice((s for s in (x.rstrip("\r\n") for x in lines) if s.strip()), DETECT_LINES))
    if not sample:
        raise LogicalError(f"{source}: no log lines to detect a format from", {"source": source})
    best, best_records = "", []
    for name in ("apache", "hdfs", "syslog"):
        parse = _PARSERS[name](DEFAULT_YEAR)
        records = [r for r in (parse(s, 0) for s in sample) if r is not None]
        if len(records) > len(best_records):
            best, best_records = name, records
    if not best_records:
        raise LogicalError(
            f"{source}: no known log format detected (tried {sorted(FORMATS)}); "
            f"first line: {sample[0][:120]!r}",
            {"source": source},
        )
    if best == "syslog" and all(r.component == "sshd" for r in best_records):
        return "sshd"
    return best
