"""The two built-in tools: `read_file` inside configured directories, `http_request` to
configured hosts. Each refuses (`ToolRefused`) what configuration does not allow, and says
which setting would allow it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from runtime.config import HttpRequestSettings, ReadFileSettings, ToolsSettings
from runtime.errors import TransientError
from runtime.tools import Tool, ToolRefused

__all__ = ["builtin_tools"]


class ReadFileParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096, description="Relative to the first dir.")
    max_bytes: int | None = Field(None, ge=1, description="At most the configured max_bytes.")


class HttpRequestParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=8192)
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(None, description="Sent as JSON; or give `body` as text.")
    body: str | None = None
    timeout_s: float | None = Field(None, gt=0, description="At most the configured timeout.")


def resolve_inside(path: str, dirs: list[Path]) -> Path:
    """The real path of `path` if it lies inside one of `dirs` once symlinks are followed;
    relative paths are taken from the first dir. `ToolRefused` naming the reason otherwise."""
    if not dirs:
        raise ToolRefused("read_file: no directory is allowed (set tools.read_file.dirs)")
    if "\x00" in path:
        raise ToolRefused("read_file: the path holds a NUL byte")
    candidate = Path(path)
    if ".." in candidate.parts:
        raise ToolRefused(f"read_file: '..' is not allowed in a path ({path!r})")
    roots = [Path(os.path.realpath(d.expanduser())) for d in dirs]
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    real = Path(os.path.realpath(candidate))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        shown = ", ".join(str(root) for root in roots)
        reason = "leads outside" if real != candidate else "is outside"
        raise ToolRefused(f"read_file: {path!r} {reason} the allowed directories ({shown})")
    return real


def _read(real: Path, limit: int) -> dict[str, Any]:
    if not real.is_file():
        raise ToolRefused(f"read_file: {real} is not a file")
    with real.open("rb") as f:
        data = f.read(limit + 1)
    return {
        "path": str(real),
        "bytes": min(len(data), limit),
        "truncated": len(data) > limit,
        "content": data[:limit].decode("utf-8", errors="replace"),
    }


def read_file_tool(settings: ReadFileSettings) -> Tool:
    async def read_file(path: str, max_bytes: int | None = None) -> dict[str, Any]:
        real = resolve_inside(path, settings.dirs)
        limit = min(max_bytes or settings.max_bytes, settings.max_bytes)
        return await asyncio.to_thread(_read, real, limit)

    return Tool(
        "read_file",
        ReadFileParameters,
        read_file,
        settings,
        "Read a text file inside the configured directories (tools.read_file.dirs).",
    )


def check_host(url: str, hosts: list[str]) -> str:
    """The URL if its scheme is http(s) and its host is listed; `ToolRefused` otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ToolRefused(f"http_request: only http and https URLs, got {parts.scheme or 'none'!r}")
    host = (parts.hostname or "").lower()
    if not host:
        raise ToolRefused(f"http_request: {url!r} names no host")
    if host not in {h.lower() for h in hosts}:
        raise ToolRefused(
            f"http_request: host {host!r} is not allowed (set tools.http_request.hosts)"
        )
    return url


async def _read_capped(response: Any, max_bytes: int) -> bytes:
    data = bytearray()
    async for piece in response.aiter_bytes():
        data += piece
        if len(data) > max_bytes:
            raise ToolRefused(
                f"http_request: the response is over {max_bytes} bytes"
                " (tools.http_request.max_bytes)"
            )
    return bytes(data)


def http_request_tool(settings: HttpRequestSettings) -> Tool:
    async def http_request(
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        body: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        import httpx  # here: loading it costs an agent's (re)start ~0.1 s

        check_host(url, settings.hosts)
        timeout = min(timeout_s or settings.timeout_s, settings.timeout_s)
        try:
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
                request = client.build_request(
                    method, url, headers=headers, json=json_body, content=body
                )
                response = await client.send(request, stream=True)
                try:
                    data = await _read_capped(response, settings.max_bytes)
                finally:
                    await response.aclose()
        except httpx.TransportError as exc:  # unreachable, reset, timed out: try again later
            raise TransientError(f"http_request: {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"http_request: {url} answered {response.status_code}")
        return {
            "status": response.status_code,
            "headers": dict(response.headers),
            "body": data.decode(response.encoding or "utf-8", errors="replace"),
        }

    return Tool(
        "http_request",
        HttpRequestParameters,
        http_request,
        settings,
        "Call an HTTP endpoint on a configured host (tools.http_request.hosts).",
    )


def builtin_tools(settings: ToolsSettings) -> list[Tool]:
    return [read_file_tool(settings.read_file), http_request_tool(settings.http_request)]
