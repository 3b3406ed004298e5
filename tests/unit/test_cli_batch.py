"""`rayvisor submit --file`: the file is checked whole, each problem naming its line."""

from __future__ import annotations

import json
from pathlib import Path

from serve.cli_batch import read_task_file


def test_a_good_file_gives_its_tasks_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"title": "a"}\n\n  \n{"title": "b", "idempotency_key": "k"}\n')
    tasks, problems = read_task_file(path)
    assert problems == []
    assert tasks == [(1, {"title": "a"}), (4, {"title": "b", "idempotency_key": "k"})]


def test_each_bad_line_is_named_with_its_number_and_field(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    lines = ['{"title": "ok"}', "{oops", "[1, 2]", json.dumps({"title": "", "priority": 10})]
    path.write_text("\n".join(lines))
    tasks, problems = read_task_file(path)
    assert [n for n, _ in tasks] == [1]
    assert problems[0].startswith("line 2: not JSON")
    assert problems[1] == "line 3: not a JSON object but list"
    assert [p.split(":")[:2] for p in problems[2:]] == [
        ["line 4", " title"],
        ["line 4", " priority"],
    ]


def test_an_empty_or_missing_file_is_a_problem(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert read_task_file(empty)[1] == [f"{empty}: no tasks (one JSON object a line)"]
    missing = tmp_path / "missing.jsonl"
    assert "cannot be read" in read_task_file(missing)[1][0]
