"""Chunk planning without Ray: exact, line-aligned coverage, bad inputs, bounded memory."""

from __future__ import annotations

import tracemalloc
from itertools import pairwise
from pathlib import Path

import pytest

from actors.builtin.logs.chunks import (
    MAX_CHUNKS,
    count_lines,
    plan_chunks,
    plan_file,
    plan_text_chunks,
    read_lines,
    split_lines,
)
from runtime.errors import LogicalError

REPO = Path(__file__).resolve().parents[2]
LOGS = REPO / "actors" / "builtin" / "data" / "loghub"
FILES = ("OpenSSH_2k.log", "Apache_2k.log", "HDFS_2k.log")


def check_plan(path: Path, plan: list[dict], overlap_lines: int = 0) -> None:
    """The chunks cover the file once, in order, line-aligned, with the right first_line."""
    data = path.read_bytes()
    assert [c["index"] for c in plan] == list(range(len(plan)))
    assert plan[0]["start"] == 0 and plan[-1]["end"] == len(data)
    for c, nxt in pairwise(plan):
        assert c["end"] == nxt["start"]
    for c in plan:
        assert c["path"] == str(path)
        assert c["start"] < c["end"]  # never empty
        assert c["start"] == 0 or data[c["start"] - 1 : c["start"]] == b"\n"
        assert c["first_line"] == data[: c["start"]].count(b"\n") + 1
        if overlap_lines:
            o = c["overlap_start"]
            assert o == 0 or data[o - 1 : o] == b"\n"
            assert data[o : c["start"]].count(b"\n") == min(overlap_lines, c["first_line"] - 1)
        else:
            assert "overlap_start" not in c
    lines = [line for c in plan for line in read_lines(path, c["start"], c["end"])]
    assert lines == [x.rstrip("\r\n") for x in split_lines(data.decode())]


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("chunks", [1, 2, 7, 8, 100, 1999, 2000, 5000])
def test_chunks_cover_a_file_once_on_line_boundaries(name: str, chunks: int) -> None:
    path = LOGS / name
    info = plan_file(path, chunks=chunks, overlap_lines=3)
    assert info["bytes"] == path.stat().st_size
    assert info["lines"] == 2000
    assert len(info["chunks"]) <= min(chunks, 2000)  # two targets in one line: one chunk
    if chunks <= 100:
        assert len(info["chunks"]) == chunks
    check_plan(path, info["chunks"], overlap_lines=3)


@pytest.mark.parametrize("chunk_bytes", [29, 100, 4096, 10**9])
def test_chunk_bytes_sets_the_size(chunk_bytes: int) -> None:
    path = LOGS / "HDFS_2k.log"
    plan = plan_chunks(path, chunk_bytes=chunk_bytes)
    check_plan(path, plan)
    longest = max(len(line) for line in path.read_bytes().split(b"\n"))
    # a boundary moves forward to the next line start: at most one line further
    assert all(c["end"] - c["start"] <= chunk_bytes + longest for c in plan)
    assert len(plan) <= -(-path.stat().st_size // chunk_bytes)


def test_odd_files_are_chunked_exactly(tmp_path: Path) -> None:
    cases = {
        "no-final-newline.log": b"a\nb\nc",
        "crlf.log": b"one\r\ntwo\r\nthree\r\n",
        "blank-lines.log": b"\n\n\nx\n\n",
        "one-long-line.log": b"x" * 300_000 + b"\n" + b"y\n",
        "one-line.log": b"only",
        "utf8.log": "é\n".encode() * 1000,
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for chunks in (1, 2, 3, 10):
            check_plan(path, plan_chunks(path, chunks=chunks, overlap_lines=2), overlap_lines=2)
        assert plan_file(path, chunks=1)["lines"] == len(split_lines(data.decode()))
    assert len(plan_chunks(tmp_path / "one-long-line.log", chunks=10)) == 2


def test_bad_inputs_raise_logical_errors_naming_the_path(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    binary = tmp_path / "image.bin"
    binary.write_bytes(b"GIF89a\x00\x01\x02" + b"\n" * 10)
    latin = tmp_path / "latin1.log"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    ok = LOGS / "Apache_2k.log"
    cases = [
        (tmp_path / "missing.log", {"chunks": 2}, "no such file"),
        (tmp_path, {"chunks": 2}, "not a regular file"),
        (empty, {"chunks": 2}, "empty"),
        (binary, {"chunks": 2}, "binary"),
        (latin, {"chunks": 2}, "not UTF-8"),
        (ok, {"chunks": 0}, "1 to 10000"),
        (ok, {"chunks": MAX_CHUNKS + 1}, "1 to 10000"),
        (ok, {"chunk_bytes": 0}, "chunk_bytes must be at least 1"),
        (ok, {"chunk_bytes": 10}, "1 to 10000"),  # 17,124 chunks
        (ok, {}, "exactly one of chunks or chunk_bytes"),
        (ok, {"chunks": 2, "chunk_bytes": 10}, "exactly one of chunks or chunk_bytes"),
        (ok, {"chunks": 2, "overlap_lines": -1}, "overlap_lines"),
    ]
    for path, kwargs, reason in cases:
        with pytest.raises(LogicalError, match=reason) as info:
            plan_chunks(path, **kwargs)
        assert str(path) in info.value.reason
        assert info.value.detail == {"path": str(path)}


def test_read_lines_checks_its_range_at_once() -> None:
    path = LOGS / "Apache_2k.log"
    size = path.stat().st_size
    with pytest.raises(LogicalError, match="not at the start of a line"):
        read_lines(path, 5, 100)
    with pytest.raises(LogicalError, match="bad range"):
        read_lines(path, 0, size + 1)
    with pytest.raises(LogicalError, match="bad range"):
        read_lines(path, 100, 50)
    assert list(read_lines(path, size, size)) == []
    assert count_lines(path) == 1999  # newlines: the last line has none
    assert count_lines(path, 0) == 0


def test_planning_and_reading_a_big_file_take_little_memory(tmp_path: Path) -> None:
    sample = (LOGS / "OpenSSH_2k.log").read_bytes()
    path = tmp_path / "big.log"
    with open(path, "wb") as f:
        for _ in range(225):  # ~50 MB
            f.write(sample.rstrip(b"\r\n") + b"\r\n")  # the sample has no final newline
    size = path.stat().st_size
    assert size > 50_000_000
    del sample
    tracemalloc.start()
    try:
        info = plan_file(path, chunks=8, overlap_lines=5)
        _, planning_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        chunk = info["chunks"][3]
        n = sum(1 for _ in read_lines(path, chunk["start"], chunk["end"]))
        _, reading_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info["lines"] == 225 * 2000
    assert len(info["chunks"]) == 8
    assert n == info["chunks"][4]["first_line"] - chunk["first_line"]
    assert planning_peak < 1_000_000, planning_peak  # 2% of the file, about one block
    assert reading_peak < 1_000_000, reading_peak


def test_text_chunks_split_between_lines() -> None:
    text = "".join(f"line {i}\n" for i in range(1, 101)) + "last, no newline"
    plan = plan_text_chunks(text, 7, overlap_lines=3)
    assert "".join(c["text"] for c in plan) == text
    assert [c["index"] for c in plan] == list(range(7))
    assert sum(c["lines"] for c in plan) == 101
    for c in plan:
        assert c["text"].startswith("line " + str(c["first_line"])) or c["first_line"] == 101
        before = split_lines(text)[max(0, c["first_line"] - 4) : c["first_line"] - 1]
        assert c["overlap_text"] == "".join(before)
    assert len(plan_text_chunks("a\nb\n", 10)) == 2  # never an empty chunk
    assert "overlap_text" not in plan_text_chunks("a\nb\n", 2)[0]
    # a form feed is not a line end (str.splitlines would say it is)
    assert [c["lines"] for c in plan_text_chunks("a\fb\nc\n", 2)] == [1, 1]
    for text, chunks, reason in [("", 2, "empty"), ("  \n", 2, "empty"), ("a\n", 0, "chunks")]:
        with pytest.raises(LogicalError, match=reason):
            plan_text_chunks(text, chunks)
