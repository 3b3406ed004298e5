"""Log analysis without Ray: the parser against loghub's ground truth, and the exactness of
the chunked analysis (merge of any chunking == one pass over the whole file)."""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from actors.builtin.logs.analysis import analyze, check_partial, merge
from actors.builtin.logs.chunks import plan_chunks, plan_text_chunks, read_lines
from actors.builtin.logs.findings import describe, findings
from actors.builtin.logs.formats import detect_format, family, parser_for
from runtime.errors import LogicalError
from runtime.models.common import TYPE_NAME_PATTERN

REPO = Path(__file__).resolve().parents[2]
LOGS = REPO / "actors" / "builtin" / "data" / "loghub"
TRUTH = REPO / "tests" / "data" / "loghub"
FILES = ("OpenSSH_2k.log", "Apache_2k.log", "HDFS_2k.log")


def truth(name: str) -> list[dict[str, str]]:
    with open(TRUTH / f"{name}_structured.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def whole(name: str) -> dict[str, Any]:
    return analyze(read_lines(LOGS / name), 1, "auto", source=name)


def counts(table: dict[str, Any]) -> dict[str, int]:
    return {key: t["count"] for key, t in table.items()}


def after(content: str, marker: str) -> str:
    """The address after the last `marker` in `content` (up to the next space)."""
    return content.rsplit(marker, 1)[1].split()[0]


# ---- ground truth: loghub's structured CSVs ------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_the_samples_match_their_ground_truth_line_for_line(name: str) -> None:
    lines = list(read_lines(LOGS / name))
    rows = truth(name)
    assert len(lines) == len(rows) == 2000
    # loghub trimmed the trailing blanks of some lines
    assert all(
        line.rstrip().endswith(row["Content"].rstrip())
        for line, row in zip(lines, rows, strict=True)
    )


def user(text: str) -> str:
    """The user name of `[invalid user ]NAME from ...`, verbatim (" 0101" is one of them)."""
    return text.removeprefix("invalid user ").rsplit(" from ", 1)[0]


def test_sshd_failed_passwords_and_invalid_users_equal_the_ground_truth() -> None:
    failed: Counter[str] = Counter()
    users: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    break_in: Counter[str] = Counter()
    auth: Counter[str] = Counter()
    for row in truth("OpenSSH_2k.log"):
        template, content = row["EventTemplate"], row["Content"]
        if template in (
            "Failed password for <*> from <*> port <*> ssh2",
            "Failed password for invalid user <*> from <*> port <*> ssh2",
        ):
            failed[after(content, " from ")] += 1
            users[user(content.removeprefix("Failed password for "))] += 1
        elif template.startswith("message repeated <*> times: [ Failed password for "):
            n = int(content.split()[2])
            failed[after(content, " from ")] += n
            users[user(content.split("[ Failed password for ", 1)[1])] += n
        elif template == "Invalid user <*> from <*>":
            invalid[content.removeprefix("Invalid user ").rsplit(" from ", 1)[0]] += 1
        elif template.endswith("POSSIBLE BREAK-IN ATTEMPT!"):
            break_in[content.split("[")[1].split("]")[0]] += 1
        elif template.startswith("pam_unix(sshd:auth): authentication failure;"):
            auth[after(content, "rhost=")] += 1
    p = whole("OpenSSH_2k.log")
    assert counts(p["failed_password"]) == failed
    assert counts(p["failed_users"]) == users
    assert counts(p["invalid_users"]) == invalid
    assert counts(p["break_in"]) == break_in
    assert counts(p["auth_failures"]) == auth
    assert (sum(failed.values()), sum(invalid.values()), len(invalid)) == (528, 113, 57)

    f = findings(p)
    assert f["format"] == "sshd"
    assert (f["lines"], f["unparsed"]) == (2000, 0)
    # 183.62.140.253 leads with 286; 173.234.31.186 (the first line's address) has only 2
    top = failed.most_common(1)[0]
    assert top == ("183.62.140.253", 286)
    assert (f["top_addresses"][0]["address"], f["top_addresses"][0]["count"]) == top
    assert failed["173.234.31.186"] == 2
    expected_top = sorted(failed.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [(r["address"], r["count"]) for r in f["top_addresses"]] == expected_top
    assert f["invalid_users"]["total"] == 113
    assert f["invalid_users"]["distinct"] == len(invalid)
    assert f["invalid_users"]["top"][0] == {**f["invalid_users"]["top"][0], "user": "admin"}
    assert f["break_in_attempts"]["total"] == sum(break_in.values()) == 85
    assert f["time_range"] == {"first": "2026-12-10T06:55:46", "last": "2026-12-10T11:04:45"}


def test_apache_levels_and_error_components_equal_the_ground_truth() -> None:
    rows = truth("Apache_2k.log")
    levels = Counter(row["Level"].lower() for row in rows)
    errors: Counter[str] = Counter()
    for row in rows:
        if row["Level"] == "error":  # the CSV has no component: take the template's module
            template = row["EventTemplate"]
            word = "client" if template.startswith("[client") else re.split(r"[\s(]", template)[0]
            errors[word] += 1
    p = whole("Apache_2k.log")
    assert p["levels"] == levels == {"notice": 1405, "error": 595}
    assert counts(p["errors"]) == errors == {"mod_jk": 551, "client": 32, "jk2_init": 12}
    f = findings(p)
    assert f["format"] == "apache"
    assert f["levels"] == levels
    assert f["components"] == dict(errors.most_common())


def test_hdfs_levels_and_components_equal_the_ground_truth() -> None:
    rows = truth("HDFS_2k.log")
    p = whole("HDFS_2k.log")
    assert p["levels"] == Counter(row["Level"].lower() for row in rows)
    assert p["components"] == Counter(row["Component"] for row in rows)
    per_level: dict[str, Counter[str]] = {}
    for row in rows:
        per_level.setdefault(row["Level"].lower(), Counter())[row["Component"]] += 1
    assert p["level_components"] == per_level
    warnings = Counter(row["Component"] for row in rows if row["Level"] == "WARN")
    assert counts(p["errors"]) == warnings == {"dfs.DataNode$DataXceiver": 80}
    f = findings(p)
    assert f["format"] == "hdfs"
    assert [x["kind"] for x in f["findings"]] == ["errors_by_component"]


# ---- exactness: any chunking, any merge order ----------------------------------------------


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize(
    ("chunks", "chunk_bytes", "overlap"),
    [
        *[(1, None, 0), (2, None, 0), (3, None, 7), (8, None, 0), (8, None, 3), (61, None, 1)],
        *[(None, 4096, 0), (None, 50_000, 10), (2000, None, 0)],
    ],
)
def test_the_merge_of_any_chunking_equals_the_single_pass(
    name: str, chunks: int | None, chunk_bytes: int | None, overlap: int
) -> None:
    path = LOGS / name
    plan = plan_chunks(path, chunks=chunks, chunk_bytes=chunk_bytes, overlap_lines=overlap)
    partials = [
        analyze(read_lines(path, c["start"], c["end"]), c["first_line"], "auto", source=name)
        for c in plan
    ]
    random.Random(len(plan)).shuffle(partials)  # merge is order-independent
    one = whole(name)
    merged = merge(partials)
    assert merged == one
    assert findings(merged) == findings(one)
    assert findings(merged, top_n=3, burst_threshold=5, window_s=300) == findings(
        one, top_n=3, burst_threshold=5, window_s=300
    )
    # associative: merging merges of groups is the same again
    half = len(partials) // 2
    if half:
        assert merge([merge(partials[:half]), merge(partials[half:])]) == one


@pytest.mark.parametrize("name", FILES)
def test_text_chunks_merge_to_the_single_pass(name: str) -> None:
    text = (LOGS / name).read_text(encoding="utf-8")
    plan = plan_text_chunks(text, 8, overlap_lines=2)
    parts = [
        analyze(c["text"].removesuffix("\n").split("\n"), c["first_line"], source=name)
        for c in plan
    ]
    assert merge(parts) == whole(name)


@pytest.mark.parametrize("name", FILES)
def test_a_partial_is_plain_json(name: str) -> None:
    p = whole(name)
    assert json.loads(json.dumps(p, allow_nan=False)) == p
    f = findings(p)
    assert json.loads(json.dumps(f, allow_nan=False)) == f


# ---- formats -------------------------------------------------------------------------------

SYSLOG = [
    "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0 "
    "euid=0 tty=NODEVssh ruser= rhost=218.188.2.4 ",
    "Jun 15 04:06:20 combo su(pam_unix)[21416]: session opened for user cyrus by (uid=0)",
    "Jun 17 07:07:00 combo ftpd[29504]: connection from 24.54.76.216 (24-54-76-216.bflony."
    "adelphia.net) at Fri Jun 17 07:07:00 2005",
    "Jun  9 06:06:20 combo kernel: Linux version 2.6.5-1.358",
]


def test_syslog_lines_parse_with_the_given_year() -> None:
    parse = parser_for("syslog", 2005)
    records = [parse(line, i) for i, line in enumerate(SYSLOG, 1)]
    assert [(r.component, r.pid, r.host) for r in records if r] == [
        ("sshd(pam_unix)", 19939, "combo"),
        ("su(pam_unix)", 21416, "combo"),
        ("ftpd", 29504, "combo"),
        ("kernel", None, "combo"),
    ]
    assert records[3] is not None and records[3].timestamp.isoformat() == "2005-06-09T06:06:20"
    assert records[0] is not None and records[0].content.startswith("authentication failure")
    assert parser_for("sshd")(SYSLOG[3], 1).timestamp.year == 2026  # type: ignore[union-attr]
    assert detect_format(SYSLOG) == "syslog"


def test_sshd_apache_and_hdfs_lines_parse() -> None:
    sshd = parser_for("sshd")("Dec 10 06:55:46 LabSZ sshd[24200]: error: Received bye", 7)
    assert sshd is not None
    assert (sshd.line_no, sshd.component, sshd.pid, sshd.level) == (7, "sshd", 24200, "error")
    apache = parser_for("apache")("[Sun Dec 04 04:47:44 2005] [error] mod_jk child in error", 1)
    assert apache is not None and (apache.level, apache.component) == ("error", "mod_jk")
    assert apache.timestamp.isoformat() == "2005-12-04T04:47:44"
    apache24 = parser_for("apache")(
        "[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 4328636416] "
        "[client 72.15.99.187] File does not exist: /favicon.ico",
        2,
    )
    assert apache24 is not None
    assert (apache24.component, apache24.pid, apache24.host) == ("core", 35708, "72.15.99.187")
    hdfs = parser_for("hdfs")(
        "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 terminating", 3
    )
    assert hdfs is not None
    assert (hdfs.timestamp.isoformat(), hdfs.pid, hdfs.level, hdfs.component) == (
        "2008-11-09T20:36:15",
        148,
        "info",
        "dfs.DataNode$PacketResponder",
    )


@pytest.mark.parametrize(("name", "fmt"), [(FILES[0], "sshd"), (FILES[1], "apache")])
def test_formats_are_detected(name: str, fmt: str) -> None:
    assert detect_format(read_lines(LOGS / name)) == fmt
    assert detect_format(read_lines(LOGS / "HDFS_2k.log")) == "hdfs"


def test_unknown_and_undetectable_formats_raise_logical_errors() -> None:
    with pytest.raises(LogicalError, match="unknown log format 'xml'"):
        family("xml")
    with pytest.raises(LogicalError, match="unknown log format"):
        analyze(["a line"], 1, "json")
    with pytest.raises(LogicalError, match="no known log format detected"):
        analyze(["hello world", "not a log"], 1, "auto", source="notes.txt")
    with pytest.raises(LogicalError, match="no log lines"):
        detect_format(["", "   "])


def test_unparseable_lines_are_counted_not_fatal() -> None:
    lines = ["garbage ~~~", "", SYSLOG[3], "Jun 31 10:00:00 combo kernel: no such day", "\x00"]
    p = analyze(lines, 10, "syslog")
    assert (p["lines"], p["parsed"], p["unparsed"]) == (5, 1, 3)
    assert [n for n, _ in p["unparsed_examples"]] == [10, 13, 14][:3]
    assert findings(p)["unparsed"] == 3


# ---- findings ------------------------------------------------------------------------------


def sshd_burst(address: str = "10.0.0.1", failures: int = 12, login: bool = True) -> list[str]:
    lines = [
        f"Mar  1 10:00:{s:02d} gw sshd[{100 + s}]: Failed password for root from {address} "
        f"port {4000 + s} ssh2"
        for s in range(failures)
    ]
    lines.append(f"Mar  1 10:02:00 gw sshd[900]: Invalid user bob from {address}")
    if login:
        lines.append(
            f"Mar  1 10:05:00 gw sshd[901]: Accepted password for root from {address} port 1"
        )
    return lines


def test_a_burst_then_a_login_from_the_same_address_is_found() -> None:
    f = findings(analyze(sshd_burst(), 1, "auto"), burst_threshold=10)
    kinds = {x["kind"]: x for x in f["findings"]}
    assert set(kinds) == {"brute_force", "login_after_burst", "invalid_users"}
    brute = kinds["brute_force"]
    assert (brute["subject"], brute["count"]) == ("10.0.0.1", 12)
    assert brute["first_seen"] == "2026-03-01T10:00:00"
    assert brute["detail"]["peak"] == 12
    assert [e["line"] for e in brute["examples"]] == [1, 2, 3]
    late = kinds["login_after_burst"]
    assert (late["subject"], late["count"], late["first_seen"]) == (
        "10.0.0.1",
        1,
        "2026-03-01T10:05:00",
    )
    assert late["detail"]["users"] == ["root"]
    for x in f["findings"]:
        assert re.match(TYPE_NAME_PATTERN, x["kind"])
        assert 0.0 <= x["confidence"] <= 1.0
        assert describe(x, "auth.log").endswith("in auth.log")
    assert "12 failed passwords from 10.0.0.1" in describe(brute)


def test_thresholds_and_windows_apply_after_the_merge() -> None:
    p = analyze(sshd_burst(), 1, "auto")
    assert not [
        x for x in findings(p, burst_threshold=13)["findings"] if x["kind"] == "brute_force"
    ]
    # 12 failures in 12 seconds: a 10 s window holds at most 10 of them
    small = findings(p, burst_threshold=11, window_s=10)["findings"]
    assert not [x for x in small if x["kind"] == "brute_force"]
    with pytest.raises(LogicalError, match="multiple of 10"):
        findings(p, window_s=15)
    with pytest.raises(LogicalError, match="top_n"):
        findings(p, top_n=0)


def test_syslog_auth_failures_count_as_evidence_of_brute_force() -> None:
    lines = [
        f"Jun 14 15:16:{s:02d} combo sshd(pam_unix)[{s}]: authentication failure; logname= "
        f"uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4  user=root"
        for s in range(10)
    ]
    f = findings(analyze([*lines, *SYSLOG], 1, "auto"))
    assert f["format"] == "syslog"
    assert f["auth_failures"]["total"] == 11
    brute = [x for x in f["findings"] if x["kind"] == "brute_force"]
    assert [(x["subject"], x["count"], x["detail"]["evidence"]) for x in brute] == [
        ("218.188.2.4", 11, "auth_failures")
    ]


def test_an_error_spike_names_its_components() -> None:
    line = "[Sun Dec 04 {:02d}:{:02d}:{:02d} 2005] [error] mod_{} failed"
    lines = [line.format(h, 0, 0, "a") for h in range(1, 6)]  # one error an hour
    lines += [line.format(7, 0, s, "b" if s % 2 else "a") for s in range(20)]
    f = findings(analyze(lines, 1, "apache"))
    spikes = [x for x in f["findings"] if x["kind"] == "error_spike"]
    assert len(spikes) == 1
    assert (spikes[0]["subject"], spikes[0]["count"]) == ("2005-12-04T07:00:00", 20)
    assert spikes[0]["detail"]["components"] == {"mod_a": 10, "mod_b": 10}
    assert spikes[0]["detail"]["median"] == 1
    assert f["components"] == {"mod_a": 15, "mod_b": 10}


def test_merge_refuses_what_it_cannot_merge_exactly() -> None:
    ssh = analyze(sshd_burst(), 1, "sshd")
    web = analyze(["[Sun Dec 04 04:47:44 2005] [error] x"], 1, "apache")
    with pytest.raises(LogicalError, match="different formats"):
        merge([ssh, web])
    assert merge([ssh, web], strict=False)["family"] == "mixed"
    with pytest.raises(LogicalError, match="bucket_s"):
        merge([ssh, analyze(sshd_burst(), 1, "sshd", bucket_s=5)])
    with pytest.raises(LogicalError, match="nothing to merge"):
        merge([])
    with pytest.raises(LogicalError, match=r"partials\[1\] is not"):
        merge([ssh, {"version": 99}])
    with pytest.raises(LogicalError, match="no \\['errors'"):
        check_partial({k: v for k, v in ssh.items() if k != "errors"})
