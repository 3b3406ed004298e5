"""A Python client for the HTTP API, sync (`Client`) and async (`AsyncClient`).

Both share every endpoint (`_Endpoints` builds the request, the class sends it), so the
two never drift apart. A refusal raises `ApiError` carrying the problem document: its
status, detail and the invalid fields.

```python
with Client("http://127.0.0.1:8000", api_key) as rv:
    task = rv.submit_task({"title": "scan", "required_capabilities": ["log_analysis"]})
    done = rv.wait_task(task["id"])
    batch = rv.submit_batch([{"title": f"scan {n}", "idempotency_key": f"scan-{n}"}
                             for n in range(500)])  # one request, an answer per item
```
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

__all__ = ["ApiError", "AsyncClient", "Client", "ServerSentEvent"]

TERMINAL = frozenset({"completed", "failed", "cancelled", "timed_out"})


class ApiError(Exception):
    """The API refused a request; `problem` is its problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        fields = "; ".join(f"{e['field']}: {e['reason']}" for e in problem.get("errors", []))
        detail = problem.get("detail") or problem.get("title") or ""
        super().__init__(f"{status}: {fields or detail}")


@dataclass
class _Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _answer(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text[:500]}
        raise ApiError(response.status_code, problem if isinstance(problem, dict) else {})
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def _stream_params(
    subject: str | None, types: list[str] | None, min_confidence: float | None
) -> dict[str, Any]:
    return _clean(
        {
            "subject": subject,
            "types": ",".join(types) if types else None,
            "min_confidence": min_confidence,
        }
    )


def _keep_alive(event: ServerSentEvent) -> bool:
    """The server's keep-alive comment, which httpx-sse hands over as an empty message."""
    return event.event == "message" and not event.data


class _Endpoints:
    """Every call of the API; `_send` (sync or async) is the subclass's."""

    def _send(self, call: _Call) -> Any:
        raise NotImplementedError

    def submit_task(self, task: dict[str, Any], *, idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._send(_Call("POST", "/api/v1/tasks", body=task, headers=headers))

    def submit_batch(self, tasks: list[dict[str, Any]]) -> Any:
        """Submit up to the server's `http.max_batch_tasks` tasks in one request; each item
        is answered on its own (`results[i]["status"]`: 201 stored, 200 the task its
        `idempotency_key` made already, 422 refused with `errors`), so this raises
        `ApiError` only when the batch as a whole is refused (too many items, say)."""
        return self._send(_Call("POST", "/api/v1/tasks/batch", body={"tasks": tasks}))

    def get_task(self, task_id: str) -> Any:
        return self._send(_Call("GET", f"/api/v1/tasks/{task_id}"))

    def list_tasks(
        self,
        status: str | None = None,
        capability: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Any:
        params = _clean(
            {
                "status": status,
                "capability": capability,
                "limit": limit,
                "cursor": cursor,
                "newest_first": newest_first or None,
            }
        )
        return self._send(_Call("GET", "/api/v1/tasks", params=params))

    def tool_executions(self, task_id: str) -> Any:
        return self._send(_Call("GET", f"/api/v1/tasks/{task_id}/tool-executions"))

    def list_tools(self) -> Any:
        return self._send(_Call("GET", "/api/v1/tools"))

    def cancel_task(self, task_id: str) -> Any:
        return self._send(_Call("POST", f"/api/v1/tasks/{task_id}/cancel"))

    def create_project(
        self,
        name: str,
        requirements: list[Any],
        *,
        description: str = "",
        inputs: dict[str, Any] | None = None,
    ) -> Any:
        body = {"name": name, "description": description, "requirements": requirements,
                "inputs": inputs or {}}  # fmt: skip
        return self._send(_Call("POST", "/api/v1/projects", body=body))

    def get_project(self, project_id: str) -> Any:
        return self._send(_Call("GET", f"/api/v1/projects/{project_id}"))

    def list_projects(
        self, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Any:
        params = _clean({"status": status, "limit": limit, "cursor": cursor})
        return self._send(_Call("GET", "/api/v1/projects", params=params))

    def cancel_project(self, project_id: str) -> Any:
        return self._send(_Call("POST", f"/api/v1/projects/{project_id}/cancel"))

    def list_agents(self, state: str | None = None, capability: str | None = None) -> Any:
        params = _clean({"state": state, "capability": capability})
        return self._send(_Call("GET", "/api/v1/agents", params=params))

    def get_agent(self, agent_id: str) -> Any:
        return self._send(_Call("GET", f"/api/v1/agents/{agent_id}"))

    def spawn_agent(self, template: str) -> Any:
        return self._send(_Call("POST", "/api/v1/agents", body={"template": template}))

    def add_specialization(self, agent_id: str, capability: str, proficiency: float = 1.0) -> Any:
        body = {"capability": capability, "proficiency": proficiency}
        path = f"/api/v1/agents/{agent_id}/specializations"
        return self._send(_Call("POST", path, body=body))

    def create_template(self, template: dict[str, Any]) -> Any:
        return self._send(_Call("POST", "/api/v1/templates", body=template))

    def list_templates(self) -> Any:
        return self._send(_Call("GET", "/api/v1/templates"))

    def stop_agent(self, agent_id: str) -> Any:
        return self._send(_Call("DELETE", f"/api/v1/agents/{agent_id}"))

    def agent_events(self, agent_id: str, limit: int = 100) -> Any:
        return self._send(_Call("GET", f"/api/v1/agents/{agent_id}/events", {"limit": limit}))

    def tree(self) -> Any:
        return self._send(_Call("GET", "/api/v1/supervisors/tree"))

    def supervisor_events(self, supervisor_id: str, limit: int = 100) -> Any:
        path = f"/api/v1/supervisors/{supervisor_id}/events"
        return self._send(_Call("GET", path, {"limit": limit}))

    def share_discovery(self, discovery: dict[str, Any]) -> Any:
        return self._send(_Call("POST", "/api/v1/discoveries", body=discovery))

    def list_discoveries(
        self,
        types: list[str] | None = None,
        min_confidence: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Any:
        params = {
            **_stream_params(None, types, min_confidence),
            **_clean({"limit": limit, "cursor": cursor}),
        }
        return self._send(_Call("GET", "/api/v1/discoveries", params=params))

    def create_key(
        self, name: str, scopes: list[str], rate_per_s: float = 50.0, burst: int = 100
    ) -> Any:
        body = {"name": name, "scopes": scopes, "rate_per_s": rate_per_s, "burst": burst}
        return self._send(_Call("POST", "/api/v1/keys", body=body))

    def list_keys(self) -> Any:
        return self._send(_Call("GET", "/api/v1/keys"))

    def revoke_key(self, id_or_prefix: str) -> Any:
        return self._send(_Call("DELETE", f"/api/v1/keys/{id_or_prefix}"))

    def system_metrics(self) -> Any:
        return self._send(_Call("GET", "/api/v1/metrics/system"))

    def health(self) -> Any:
        return self._send(_Call("GET", "/healthz"))


class Client(_Endpoints):
    """The blocking client (the CLI's)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 30) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)
        self._args = (base_url, api_key, timeout_s)

    def fork(self) -> Client:
        """A new client of the same API with the same key: one for another thread."""
        return Client(*self._args)

    def _send(self, call: _Call) -> Any:
        response = self.http.request(
            call.method, call.path, params=call.params, json=call.body, headers=call.headers
        )
        return _answer(response)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        response = self.http.get("/readyz")
        return response.status_code == 200, response.json()

    def wait_task(self, task_id: str, timeout_s: float = 300, poll_s: float = 0.2) -> Any:
        """The task once it has ended; TimeoutError if it has not within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            task = self.get_task(task_id)
            if task["status"] in TERMINAL:
                return task
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} is still {task['status']}")
            time.sleep(poll_s)

    def watch_task(
        self, task_id: str, timeout_s: float = 300, poll_s: float = 0.2
    ) -> Iterator[dict[str, Any]]:
        """The task as it is every `poll_s`, up to and including the read that finds it
        ended; TimeoutError if it has not ended within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            task = self.get_task(task_id)
            yield task
            if task["status"] in TERMINAL:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} is still {task['status']}")
            time.sleep(poll_s)

    def task_progress(self, task_id: str) -> Iterator[dict[str, Any]]:
        """The progress reports of a task's attempts (`attempt`, `agent_id`, `progress`
        0.0-1.0, `message`) from now on, as they come; progress is live only, so one sent
        before the stream is open is not seen. Runs until the caller stops."""
        for event in self.stream(subject=f"tasks.{task_id}.progress"):
            try:
                report = json.loads(event.data)
            except ValueError:
                continue
            if isinstance(report, dict):
                yield report

    def stream(
        self,
        path: str = "/api/v1/events/stream",
        *,
        subject: str | None = None,
        types: list[str] | None = None,
        min_confidence: float | None = None,
        last_event_id: str | None = None,
    ) -> Iterator[ServerSentEvent]:
        """Server-sent events of `path` (events or discoveries), until the caller stops."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        params = _stream_params(subject, types, min_confidence)
        with connect_sse(
            self.http,
            "GET",
            path,
            params=params,
            headers=headers,
            timeout=httpx.Timeout(None, connect=10),
        ) as source:
            if source.response.status_code >= 400:
                source.response.read()
                _answer(source.response)
            yield from (e for e in source.iter_sse() if not _keep_alive(e))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient(_Endpoints):
    """The asyncio client."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 30) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s)

    async def _send(self, call: _Call) -> Any:
        response = await self.http.request(
            call.method, call.path, params=call.params, json=call.body, headers=call.headers
        )
        return _answer(response)

    async def wait_task(self, task_id: str, timeout_s: float = 300, poll_s: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            task = await self.get_task(task_id)
            if task["status"] in TERMINAL:
                return task
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} is still {task['status']}")
            await asyncio.sleep(poll_s)

    async def stream(
        self,
        path: str = "/api/v1/events/stream",
        *,
        subject: str | None = None,
        types: list[str] | None = None,
        min_confidence: float | None = None,
        last_event_id: str | None = None,
    ) -> AsyncIterator[ServerSentEvent]:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        params = _stream_params(subject, types, min_confidence)
        async with aconnect_sse(
            self.http,
            "GET",
            path,
            params=params,
            headers=headers,
            timeout=httpx.Timeout(None, connect=10),
        ) as source:
            if source.response.status_code >= 400:
                await source.response.aread()
                _answer(source.response)
            async for event in source.aiter_sse():
                if not _keep_alive(event):
                    yield event

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
