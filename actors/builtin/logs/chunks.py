"""Split a log into line-aligned chunks without loading it.

A boundary is found by seeking near the target offset and reading forward to the next
newline (a small window, larger only for a very long line); `first_line` comes from
counting newlines block by block in one streaming pass. Memory stays at one block whatever
the file size. Chunks cover the file exactly once: `[start, end)` ranges that meet.

`overlap_start` (with `overlap_lines`) is the offset `overlap_lines` lines before `start`:
context a reader may look at, never lines it counts, so an overlap never double-counts.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

from runtime.errors import LogicalError

__all__ = [
    "BLOCK",
    "MAX_CHUNKS",
    "check_file",
    "count_lines",
    "plan_chunks",
    "plan_file",
    "plan_text_chunks",
    "read_lines",
    "split_lines",
]

BLOCK = 1 << 16  # bytes read at a time
MAX_CHUNKS = 10_000


def _fail(path: str | os.PathLike[str], reason: str) -> LogicalError:
    return LogicalError(f"{path}: {reason}", {"path": str(path)})


def check_file(path: str | os.PathLike[str]) -> int:
    """The size of a readable, non-empty text file; LogicalError naming the path if not.
    Text means no NUL byte and valid UTF-8 in the first block."""
    p = Path(path)
    if not p.exists():
        raise _fail(path, "no such file")
    if not p.is_file():
        raise _fail(path, "not a regular file (a directory?)")
    size = p.stat().st_size
    if size == 0:
        raise _fail(path, "the file is empty")
    try:
        with open(p, "rb") as f:
            head = f.read(BLOCK)
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror or exc}") from None
    if b"\0" in head:
        raise _fail(path, "binary file (NUL bytes in the first block), not a text log")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not UTF-8 text (byte {exc.start} of the first block)") from None
    return size


def _check_count(path: str | os.PathLike[str], n: int, what: str) -> None:
    if not 1 <= n <= MAX_CHUNKS:
        raise _fail(path, f"{what} gives {n} chunks: it must give 1 to {MAX_CHUNKS}")


def _next_line_start(f: Any, target: int, size: int) -> int:
    """The first line start at or after `target`: just after the first newline at or after
    `target - 1`, reading forward from there a block at a time."""
    pos = target - 1
    f.seek(pos)
    while pos < size:
        block = f.read(BLOCK)
        i = block.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(block)
    return size


def _line_start_before(f: Any, start: int, lines: int) -> int:
    """The offset `lines` lines before the line starting at `start` (0 at most)."""
    pos, needed = start, lines + 1  # the newline ending the previous line counts first
    while pos > 0:
        read = min(BLOCK, pos)
        pos -= read
        f.seek(pos)
        block = f.read(read)
        for i in range(len(block) - 1, -1, -1):
            if block[i] == 10:
                needed -= 1
                if needed == 0:
                    return pos + i + 1
    return 0


def count_lines(path: str | os.PathLike[str], end: int | None = None) -> int:
    """Newlines in the first `end` bytes (all if None), counted a block at a time."""
    n = 0
    with open(path, "rb") as f:
        remaining = end
        while remaining is None or remaining > 0:
            block = f.read(BLOCK if remaining is None else min(BLOCK, remaining))
            if not block:
                break
            n += block.count(b"\n")
            if remaining is not None:
                remaining -= len(block)
    return n


def plan_file(
    path: str | os.PathLike[str],
    chunks: int | None = None,
    chunk_bytes: int | None = None,
    overlap_lines: int = 0,
) -> dict[str, Any]:
    """`{"chunks", "bytes", "lines"}`: the chunk plan of `plan_chunks` with the file's size
    and line count (a last line without a newline counts)."""
    size = check_file(path)
    if (chunks is None) == (chunk_bytes is None):
        raise _fail(path, "give exactly one of chunks or chunk_bytes")
    if chunk_bytes is not None:
        if chunk_bytes < 1:
            raise _fail(path, f"chunk_bytes must be at least 1, got {chunk_bytes}")
        chunks = -(-size // chunk_bytes)
        _check_count(path, chunks, f"chunk_bytes={chunk_bytes}")
    assert chunks is not None
    _check_count(path, chunks, f"chunks={chunks}")
    if overlap_lines < 0:
        raise _fail(path, f"overlap_lines must be >= 0, got {overlap_lines}")
    with open(path, "rb") as f:
        bounds = [0]
        for i in range(1, chunks):
            b = _next_line_start(f, max(1, size * i // chunks), size)
            if b > bounds[-1] and b < size:
                bounds.append(b)
        bounds.append(size)
        # first_line of each chunk: one streaming pass counting newlines up to each bound
        f.seek(0)
        firsts, pos, newlines = [], 0, 0
        for b in bounds[:-1]:
            while pos < b:
                block = f.read(min(BLOCK, b - pos))
                newlines += block.count(b"\n")
                pos += len(block)
            firsts.append(newlines + 1)
        while block := f.read(BLOCK):
            newlines += block.count(b"\n")
        f.seek(size - 1)
        lines = newlines + int(f.read(1) != b"\n")
        plan = []
        for i, (start, end) in enumerate(pairwise(bounds)):
            chunk = {"path": str(path), "index": i, "start": start, "end": end}
            chunk["first_line"] = firsts[i]
            if overlap_lines:
                chunk["overlap_start"] = _line_start_before(f, start, overlap_lines)
            plan.append(chunk)
    return {"chunks": plan, "bytes": size, "lines": lines}


def plan_chunks(
    path: str | os.PathLike[str],
    chunks: int | None = None,
    chunk_bytes: int | None = None,
    overlap_lines: int = 0,
) -> list[dict[str, Any]]:
    """Line-aligned chunks `{"path", "index", "start", "end", "first_line"[,
    "overlap_start"]}` of about `size / chunks` (or `chunk_bytes`) bytes each. A small file
    may give fewer chunks than asked (never an empty one)."""
    return plan_file(path, chunks, chunk_bytes, overlap_lines)["chunks"]


def read_lines(
    path: str | os.PathLike[str], start: int = 0, end: int | None = None
) -> Iterator[str]:
    """The lines of bytes `[start, end)`, streamed, without their line ends (invalid UTF-8
    is replaced). `start` must be a line start; a line that crosses `end` is included.
    The file and range are checked at once (a LogicalError here, not at the first line)."""
    size = check_file(path)
    end = size if end is None else end
    if not 0 <= start <= end <= size:
        raise _fail(path, f"bad range [{start}, {end}) for a file of {size} bytes")
    if 0 < start < size:
        with open(path, "rb") as f:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                raise _fail(path, f"start {start} is not at the start of a line")
    return _stream(path, start, end)


def _stream(path: str | os.PathLike[str], start: int, end: int) -> Iterator[str]:
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        while pos < end:
            raw = f.readline()
            if not raw:
                break
            pos += len(raw)
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def split_lines(text: str) -> list[str]:
    """`text`'s lines with their "\\n" (only "\\n" ends a line, as in a file; unlike
    `str.splitlines`, which also splits on form feeds and the like)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def plan_text_chunks(text: str, chunks: int, overlap_lines: int = 0) -> list[dict[str, Any]]:
    """Chunks of inline text, split between lines: `{"index", "text", "first_line",
    "lines"[, "overlap_text"]}`; `overlap_text` holds the `overlap_lines` lines before."""
    if not isinstance(text, str) or not text.strip():
        raise LogicalError("text: nothing to chunk (empty text)")
    if not 1 <= chunks <= MAX_CHUNKS:
        raise LogicalError(f"text: chunks must be 1 to {MAX_CHUNKS}, got {chunks}")
    if overlap_lines < 0:
        raise LogicalError(f"text: overlap_lines must be >= 0, got {overlap_lines}")
    lines = split_lines(text)
    n = len(lines)
    bounds = sorted({n * i // chunks for i in range(chunks)} | {n})
    plan = []
    for i, (a, b) in enumerate(pairwise(bounds)):
        chunk: dict[str, Any] = {
            "index": i,
            "text": "".join(lines[a:b]),
            "first_line": a + 1,
            "lines": b - a,
        }
        if overlap_lines:
            chunk["overlap_text"] = "".join(lines[max(0, a - overlap_lines) : a])
        plan.append(chunk)
    return plan
