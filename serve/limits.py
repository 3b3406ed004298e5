"""Limits on what a request may carry, enforced before a route (or a parser) sees it:
a body over the size cap is 413; a NUL character in the path or query (which PostgreSQL
text cannot hold) is 422."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["InputLimits"]


class InputLimits:
    """Pure ASGI middleware: 422 for a NUL in the path or query; 413 when `Content-Length`
    or the body as it arrives exceeds `limit`. A body without a length is read (at most
    `limit` bytes) before the app runs, so a refusal never reaches a parser half way."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for part, raw in (
            ("query", scope.get("query_string") or b""),
            ("path", scope.get("raw_path") or scope["path"].encode()),
        ):
            if b"%00" in raw or b"\x00" in raw:
                await _problem(
                    send,
                    422,
                    "Unprocessable Entity",
                    f"{part}: text must not contain NUL (U+0000) characters",
                    [{"field": part, "reason": "contains a NUL character"}],
                )
                return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _refuse(self, send: Any) -> None:
        await _problem(
            send, 413, "Content Too Large", f"the body is larger than {self.limit} bytes"
        )


async def _problem(
    send: Any, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
            "errors": errors or [],
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict[str, Any]], receive: Any) -> Any:
    async def replayed() -> dict[str, Any]:
        return messages.pop(0) if messages else await receive()

    return replayed
