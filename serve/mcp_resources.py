"""MCP resources: discoveries, tasks and projects by URI, and their change notifications.

URIs (resource templates):

- `discovery://agents/{agent_id}/discoveries/{id}`: one discovery;
- `discovery://agents/{agent_id}/discoveries`: an agent's discoveries (its first 100);
- `task://{id}`, `project://{id}`: as `GET /api/v1/tasks/{id}` and `/projects/{id}` show them.

A subscription watches the JetStream subjects a URI's changes are published on
(`discoveries.{agent_id}.>`, `tasks.{id}.>`, `projects.{id}.>`) through the ordered
consumers the SSE routes use (`serve.streams.subject_stream`), and sends
`notifications/resources/updated` with the event's stream sequence in `_meta`
(`io.rayvisor/seq`). A subscription request whose `_meta` carries `io.rayvisor/after`
(the last sequence the client saw) replays what changed since, as `Last-Event-ID` does
for SSE: the stream is the record, so this works on any replica, after a restart too.
Two subscription flavours: `resources/subscribe` on a handshake-era session (the
notifications ride the session's GET stream) and `subscriptions/listen` (2026-07-28: the
listen request's response is the stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY

from runtime.bus import Bus
from runtime.models.records import Task
from runtime.store import discoveries as discovery_store
from serve.routes import projects
from serve.streams import StreamedMessage, subject_stream
from serve.system import System

__all__ = [
    "AFTER_META",
    "SEQ_META",
    "TEMPLATES",
    "listen",
    "read",
    "subscribe",
    "unsubscribe",
    "watch",
]

log = logging.getLogger(__name__)

SEQ_META = "io.rayvisor/seq"
"""`_meta` key of an update: the JetStream sequence of the event behind it."""
AFTER_META = "io.rayvisor/after"
"""`_meta` key of a subscription request: replay the updates after this sequence."""
MAX_SUBSCRIPTIONS = 100
"""URIs one session (or one listen stream) may watch at once."""

_AGENT = r"[A-Za-z0-9_-]{1,120}"
_UUID = r"[0-9a-fA-F-]{36}"
_DISCOVERY = re.compile(rf"^discovery://agents/(?P<agent>{_AGENT})/discoveries/(?P<id>{_UUID})$")
_COLLECTION = re.compile(rf"^discovery://agents/(?P<agent>{_AGENT})/discoveries$")
_TASK = re.compile(rf"^task://(?P<id>{_UUID})$")
_PROJECT = re.compile(rf"^project://(?P<id>{_UUID})$")

TEMPLATES = [
    types.ResourceTemplate(
        name="discovery",
        uri_template="discovery://agents/{agent_id}/discoveries/{id}",
        description="One discovery an agent shared.",
        mime_type="application/json",
    ),
    types.ResourceTemplate(
        name="discoveries",
        uri_template="discovery://agents/{agent_id}/discoveries",
        description="An agent's discoveries, oldest first (100); subscribe to hear of new ones.",
        mime_type="application/json",
    ),
    types.ResourceTemplate(
        name="task",
        uri_template="task://{id}",
        description="A task: status, attempts, result or error (as GET /api/v1/tasks/{id}).",
        mime_type="application/json",
    ),
    types.ResourceTemplate(
        name="project",
        uri_template="project://{id}",
        description="A project, its task graph and results (as GET /api/v1/projects/{id}).",
        mime_type="application/json",
    ),
]


@dataclass(frozen=True)
class _Target:
    kind: str
    agent: str | None
    id: UUID | None

    @property
    def pattern(self) -> str:
        """The subjects its changes are published on."""
        if self.kind in ("discovery", "discoveries"):
            return f"discoveries.{self.agent}.>"
        return f"{self.kind}s.{self.id}.>"

    def concerns(self, msg: StreamedMessage) -> bool:
        if self.kind != "discovery":
            return True
        with contextlib.suppress(ValueError, TypeError):
            return json.loads(msg.data).get("discovery_id") == str(self.id)
        return False


def parse(uri: str) -> _Target:
    """What `uri` names; an MCP error naming the URI and the templates if it is none."""
    for kind, pattern in (
        ("discovery", _DISCOVERY),
        ("discoveries", _COLLECTION),
        ("task", _TASK),
        ("project", _PROJECT),
    ):
        match = pattern.match(uri)
        if match is None:
            continue
        groups = match.groupdict()
        try:
            id = UUID(groups["id"]) if "id" in groups else None
        except ValueError:
            break
        return _Target(kind, groups.get("agent"), id)
    known = ", ".join(t.uri_template for t in TEMPLATES)
    raise MCPError(types.INVALID_PARAMS, f"unknown resource {uri!r}: rayvisor serves {known}")


async def read(system: System, uri: str) -> types.ReadResourceResult:
    """The resource's current JSON; an MCP error if there is no such resource."""
    target = parse(uri)
    body: Any
    if target.kind == "discovery":
        found = await discovery_store.get(system.pool, target.id)  # type: ignore[arg-type]
        if found is None or found.agent_id != target.agent:
            raise MCPError(types.INVALID_PARAMS, f"resource not found: {uri}")
        body = found.model_dump(mode="json")
    elif target.kind == "discoveries":
        found_all = await discovery_store.list_discoveries(system.pool, agent_id=target.agent)
        body = {"items": [d.model_dump(mode="json") for d in found_all]}
    elif target.kind == "task":
        body = Task.model_validate(await system.tasks.get(target.id)).model_dump(mode="json")  # type: ignore[arg-type]
    else:
        body = (await projects.view(system, target.id)).model_dump(mode="json")  # type: ignore[arg-type]
    text = json.dumps(body)
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=text)]
    )


async def watch(
    bus: Bus, uris: list[str], after_seq: int | None
) -> AsyncIterator[tuple[str, int | None]]:
    """`(uri, sequence)` each time one of `uris` changes, from now (or after `after_seq`);
    live-only events (task progress) have no sequence. Raises what a watcher raised."""
    queue: asyncio.Queue[tuple[str, int | None] | BaseException] = asyncio.Queue(1000)

    async def one(uri: str, target: _Target) -> None:
        try:
            async for msg in subject_stream(bus, target.pattern, after_seq):
                if target.concerns(msg):
                    await queue.put((uri, msg.seq))
        except Exception as exc:  # the consumer failed (NATS gone): the caller ends the stream
            await queue.put(exc)

    loop = asyncio.get_running_loop()
    watchers = [loop.create_task(one(uri, parse(uri))) for uri in uris]
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


async def _after(bus: Bus, params: Mapping[str, Any] | None) -> int:
    """Where a subscription starts: after the sequence its request names, else after the
    stream's last one now, so no change made once the request is answered is missed."""
    meta = (params or {}).get("_meta") or {}
    after = meta.get(AFTER_META) if isinstance(meta, Mapping) else None
    if after is None:
        return (await bus.js.stream_info(bus.stream)).state.last_seq
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise MCPError(
            types.INVALID_PARAMS,
            f"_meta.{AFTER_META} must be a stream sequence this server sent (an integer >= 0)",
        )
    return after


# --- resources/subscribe (handshake era: one session, updates on its GET stream) -----------


def _session_watches(ctx: ServerRequestContext[Any, Any]) -> dict[str, asyncio.Task[None]]:
    """The URIs this session watches, each by its task; the tasks end with the session.
    (The SDK hands lowlevel handlers the connection only through the session.)"""
    connection = ctx.session._connection
    watches = connection.state.get("rayvisor.watches")
    if watches is None:
        watches = connection.state["rayvisor.watches"] = {}

        def stop_all() -> None:
            for task in watches.values():
                task.cancel()

        connection.exit_stack.callback(stop_all)
    return watches


async def subscribe(
    system: Callable[[], System],
    ctx: ServerRequestContext[Any, Any],
    params: types.SubscribeRequestParams,
) -> types.EmptyResult:
    parse(params.uri)
    watches = _session_watches(ctx)
    if params.uri not in watches and len(watches) >= MAX_SUBSCRIPTIONS:
        raise MCPError(types.INVALID_PARAMS, f"at most {MAX_SUBSCRIPTIONS} subscriptions a session")
    session, bus = ctx.session, system().bus
    after = await _after(bus, ctx.params)

    async def notify() -> None:
        try:
            async for uri, seq in watch(bus, [params.uri], after):
                meta = {SEQ_META: seq} if seq is not None else None
                try:
                    await session.send_notification(
                        types.ResourceUpdatedNotification(
                            params=types.ResourceUpdatedNotificationParams(uri=uri, _meta=meta)
                        )
                    )
                except Exception:  # no GET stream open right now: this one is not heard
                    log.debug("resources/updated %s not delivered", uri, exc_info=True)
        except Exception:  # the consumer failed: the client resubscribes after its last seq
            log.warning("subscription to %s ended", params.uri, exc_info=True)

    previous = watches.pop(params.uri, None)
    if previous is not None:
        previous.cancel()
    watches[params.uri] = asyncio.get_running_loop().create_task(notify())
    return types.EmptyResult()


async def unsubscribe(
    ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
) -> types.EmptyResult:
    task = _session_watches(ctx).pop(params.uri, None)
    if task is not None:
        task.cancel()
    return types.EmptyResult()


# --- subscriptions/listen (2026-07-28: the request's response is the stream) ---------------


async def listen(
    system: Callable[[], System],
    ctx: ServerRequestContext[Any, Any],
    params: types.SubscriptionsListenRequestParams,
) -> types.SubscriptionsListenResult:
    """Acknowledge the resource subscriptions (list changes never happen here: rayvisor's
    tools and templates are fixed), then send their updates until the client goes."""
    if ctx.request_id is None:
        raise MCPError(types.INVALID_REQUEST, "subscriptions/listen requires a request id")
    uris = list(dict.fromkeys(params.notifications.resource_subscriptions or ()))
    if len(uris) > MAX_SUBSCRIPTIONS:
        raise MCPError(types.INVALID_PARAMS, f"at most {MAX_SUBSCRIPTIONS} URIs a stream")
    for uri in uris:
        parse(uri)
    bus = system().bus
    after = await _after(bus, ctx.params)
    meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: ctx.request_id}
    honored = types.SubscriptionFilter(resource_subscriptions=uris or None)
    await ctx.session.send_notification(
        types.SubscriptionsAcknowledgedNotification(
            params=types.SubscriptionsAcknowledgedNotificationParams(
                notifications=honored, _meta=meta
            )
        ),
        related_request_id=ctx.request_id,
    )
    if uris:
        async for uri, seq in watch(bus, uris, after):
            stamp = meta | ({SEQ_META: seq} if seq is not None else {})
            await ctx.session.send_notification(
                types.ResourceUpdatedNotification(
                    params=types.ResourceUpdatedNotificationParams(uri=uri, _meta=stamp)
                ),
                related_request_id=ctx.request_id,
            )
    else:
        await asyncio.Event().wait()  # nothing to send; the client ends it
    return types.SubscriptionsListenResult(_meta=meta)
