"""`rayvisor analyze` refuses bad input before it starts or calls anything: exit 2 with
the reason, for each file that cannot be analysed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serve.cli import app
from serve.cli_projects import check_log_file, findings_tables


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    binary = tmp_path / "core.bin"
    binary.write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    latin = tmp_path / "latin.log"
    latin.write_bytes(("caf\xe9 " * 100).encode("latin-1") + b"\n" + b"x" * 100)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    return {
        "missing": (tmp_path / "nope.log", "no such file"),
        "directory": (tmp_path, "a directory"),
        "empty": (empty, "empty"),
        "binary": (binary, "NUL bytes"),
        "not-utf8": (latin, "not UTF-8"),
        "fifo": (fifo, "not a regular file"),
    }


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "binary", "not-utf8", "fifo"])
def test_analyze_refuses_each_bad_input_with_exit_2(tmp_path: Path, kind: str) -> None:
    path, reason = _bad_files(tmp_path)[kind]
    home = tmp_path / "home"
    ran = CliRunner().invoke(
        app, ["analyze", str(path)], env={"RAYVISOR_HOME": str(home), "COLUMNS": "200"}
    )
    assert ran.exit_code == 2, ran.output
    assert reason in ran.output and str(path) in ran.output
    assert not home.exists()  # nothing was set up, started or called


def test_analyze_names_every_bad_file_and_starts_nothing_for_the_good_ones(
    tmp_path: Path,
) -> None:
    good = tmp_path / "auth.log"
    good.write_text("Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user x from 1.2.3.4\n")
    missing = tmp_path / "gone.log"
    ran = CliRunner().invoke(
        app, ["analyze", str(good), str(missing), str(tmp_path)], env={"COLUMNS": "300"}
    )
    assert ran.exit_code == 2
    assert "gone.log: no such file" in ran.output and "a directory" in ran.output
    assert "auth.log" not in ran.output.replace(str(tmp_path), "")


def test_a_log_file_passes_the_check(tmp_path: Path) -> None:
    log = tmp_path / "utf8.log"
    log.write_text("héllo wörld\n" * 2000)  # a multi-byte character may straddle the block
    assert check_log_file(log) is None


def test_findings_tables_show_the_report() -> None:
    report = {
        "top_addresses": [
            {"address": "183.62.140.253", "count": 286, "first_seen": "a", "last_seen": "b"}
        ],
        "invalid_users": {"total": 3, "distinct": 2, "top": [{"user": "admin", "count": 2}]},
        "break_in_attempts": {"total": 2, "top": [{"address": "173.234.31.186", "count": 2}]},
        "error_components": {"mod_jk": 5},
    }
    tables = findings_tables(report)
    assert [t.title for t in tables] == [
        "top attacking addresses (failed passwords)",
        "invalid user names (2 distinct)",
        "POSSIBLE BREAK-IN ATTEMPT (2 in all)",
        "errors by component",
    ]
    assert tables[0].columns[0]._cells == ["183.62.140.253"]
    assert tables[3].columns[1]._cells == ["5"]
