"""`ChunkingAgent` (capability `chunking`): split a file or a text into line-aligned chunks.

Parameters: exactly one of `path` (`loghub:NAME` names a bundled sample) or `text`; one
of `chunks` (how many) or `chunk_bytes` (about how big; files only); `overlap_lines`
(context lines before each chunk, never counted by an analysis); `source` (a label,
default the file name); `format` (default `auto`: detected from the first lines). Result:

    {"source", "bytes", "lines", "format", "chunks": [...]}

A file chunk is `{"path", "index", "start", "end", "first_line"[, "overlap_start"],
"format", "source"}`, a text chunk `{"index", "text", "first_line", "lines"[,
"overlap_text"], "format", "source"}`: each can be passed as is as the parameters of a
`log_analysis` task. `format` is the log format detected from the input's first lines, so
every chunk is parsed the same way (the result's `format` is null and the chunks' "auto"
when none is detected: each chunk then detects its own, or fails).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from actors.agent import Agent, AgentContext
from actors.builtin.log_analysis import parse_params, resolve_path
from actors.builtin.logs.chunks import (
    MAX_CHUNKS,
    plan_file,
    plan_text_chunks,
    read_lines,
    split_lines,
)
from actors.builtin.logs.formats import FORMATS, detect_format
from runtime.errors import LogicalError

__all__ = ["ChunkingAgent", "chunk_input"]

_DETECT_HEAD = 200  # lines read for format detection


class ChunkingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, min_length=1)
    text: str | None = None
    chunks: int | None = Field(None, ge=1, le=MAX_CHUNKS)
    chunk_bytes: int | None = Field(None, ge=1)
    overlap_lines: int = Field(0, ge=0, le=10_000)
    source: str | None = Field(None, min_length=1, max_length=500)
    format: str = "auto"

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value != "auto" and value not in FORMATS:
            raise ValueError(f"must be 'auto' or one of {sorted(FORMATS)}, got {value!r}")
        return value

    def check(self) -> ChunkingParams:
        if (self.path is None) == (self.text is None):
            raise LogicalError("parameter 'path'/'text': give exactly one of them")
        if (self.chunks is None) == (self.chunk_bytes is None):
            raise LogicalError("parameter 'chunks'/'chunk_bytes': give exactly one of them")
        if self.text is not None and self.chunk_bytes is not None:
            raise LogicalError("parameter 'chunk_bytes': only for a 'path' (use 'chunks')")
        return self


def _detect(lines: Any) -> str | None:
    head = []
    for line in lines:
        head.append(line)
        if len(head) >= _DETECT_HEAD:
            break
    try:
        return detect_format(head)
    except LogicalError:
        return None


def chunk_input(p: ChunkingParams) -> dict[str, Any]:
    """The blocking part: plan the chunks (streaming the file, never loading it)."""
    if p.path is not None:
        path = resolve_path(p.path)
        plan = plan_file(path, p.chunks, p.chunk_bytes, p.overlap_lines)
        fmt = p.format if p.format != "auto" else _detect(read_lines(path))
        chunks, size, lines = plan["chunks"], plan["bytes"], plan["lines"]
        source = p.source or Path(path).name
    else:
        text = p.text or ""
        chunks = plan_text_chunks(text, p.chunks or 1, p.overlap_lines)
        fmt = p.format if p.format != "auto" else _detect(split_lines(text))
        size, lines = len(text.encode()), sum(c["lines"] for c in chunks)
        source = p.source or "text"
    for chunk in chunks:
        chunk["format"] = fmt or "auto"
        chunk["source"] = source
    return {"source": source, "bytes": size, "lines": lines, "format": fmt, "chunks": chunks}


class ChunkingAgent(Agent):
    """Plans line-aligned chunks of a file or text for a fan-out of `log_analysis` tasks."""

    capabilities = frozenset({"chunking"})

    async def handle(self, task: dict[str, Any], ctx: AgentContext) -> dict[str, Any]:
        p = parse_params(ChunkingParams, task).check()
        return await ctx.run_blocking(chunk_input, p)
