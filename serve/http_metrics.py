"""HTTP requests by route template, method and status, and their duration, as Ray metrics
(`runtime.metrics`: `rayvisor_http_requests`, `rayvisor_http_request_duration_seconds`).

The route is the template the router matched (`/api/v1/tasks/{task_id}`), never the raw
path, so a label has as many values as the app has routes; a request no route matched
(404, or refused before routing) is `unmatched`.
"""

from __future__ import annotations

import time
from typing import Any

from runtime import metrics

__all__ = ["UNMATCHED", "HttpMetrics", "route_template"]

UNMATCHED = "unmatched"


def route_template(scope: dict[str, Any]) -> str:
    """The template of the route Starlette's router put in `scope`, if it matched one."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED


class HttpMetrics:
    """Pure ASGI middleware: times each HTTP request to the end of its response and counts
    it with the status sent (500 when the app raised before sending one). The router sets
    `scope["route"]` on the scope this middleware passed down, so it is read afterwards."""

    def __init__(self, app: Any, namespace: str) -> None:
        self.app = app
        metrics.set_namespace(namespace)  # one system per Serve replica

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.http_request(
                route_template(scope), scope["method"], status, time.perf_counter() - started
            )
