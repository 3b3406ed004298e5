"""The MCP server at `/mcp` (streamable HTTP): rayvisor's tasks, discoveries, agents, tree
and projects as MCP tools, and its registered tools (`ctx.tool`) too.

Every request carries an API key (`Authorization: Bearer ...`), checked as the REST API
checks it (`serve.auth.authenticate`: unknown key 401, rate limit 429), and a handshake-era
session belongs to the key that opened it. Each tool needs a scope (`read` < `write` <
`admin`): a key sees only the tools its scope allows, and calling another is refused with
an MCP error naming the scope. Tools do what the REST routes do, through the same
functions; their input schemas are the REST API's pydantic models. A registered tool runs
in this replica through the same guarded runner an agent's `ctx.tool` uses (validation,
token bucket, breaker, timeout, a `tool_executions` row), as agent `mcp-<key prefix>`.
Bad input (an unknown tool or resource, invalid arguments, a missing scope) is an MCP
error naming the problem; nothing a client sends ends in an unhandled exception.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from mcp.server import Server
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from runtime.errors import Conflict, LogicalError, NotFound
from runtime.models.enums import Scope as KeyScope
from runtime.models.records import ApiKey
from runtime.tools import Tool, ToolRunner
from serve import mcp_resources, problems
from serve.auth import allows, authenticate
from serve.mcp_tools import TOOLS, McpTool
from serve.system import System

__all__ = ["PATH", "McpEndpoint", "install"]

log = logging.getLogger(__name__)

PATH = "/mcp"
_KEY = "rayvisor.api_key"


class McpEndpoint:
    """The ASGI app at `/mcp`: authenticates, then hands the request to the SDK's
    session manager (handshake-era sessions and 2026-07-28 single requests alike)."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._builtin = {tool.name: tool for tool in TOOLS}
        self._runners: dict[str, ToolRunner] = {}
        self.server: Server[Any] = Server(
            "rayvisor",
            version="1.0",
            instructions="Tasks, discoveries, agents, the supervision tree and projects of a"
            " rayvisor system; resources discovery://, task://, project:// (subscribable).",
            get_tool_input_schema=self._input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_templates,
            on_read_resource=self._read_resource,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_subscriptions_listen=self._listen,
        )
        self.sessions = StreamableHTTPSessionManager(self.server)

    @property
    def system(self) -> System:
        return self._app.state.system

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        try:
            key = await authenticate(
                self.system.auth,
                token,
                request.client.host if request.client else None,
                KeyScope.READ,
            )
        except HTTPException as refused:
            response = problems.problem(
                refused.status_code, refused.detail, headers=refused.headers
            )
            await response(scope, receive, send)
            return
        scope[_KEY] = key
        # the SDK ties a session to the principal that opened it: here, the key
        user = AccessToken(token="", client_id=str(key.id), scopes=[str(s) for s in key.scopes])
        scope["user"] = AuthenticatedUser(user)
        await self.sessions.handle_request(scope, receive, send)

    # --- tools --------------------------------------------------------------------------

    def _tools(self) -> dict[str, McpTool | Tool]:
        found: dict[str, McpTool | Tool] = dict(self._builtin)
        for tool in self.system.tools():
            found.setdefault(tool.name, tool)
        return found

    def _input_schema(self, name: str) -> dict[str, Any] | None:
        tool = self._tools().get(name)
        if tool is None:
            return None
        return (
            tool.arguments if isinstance(tool, McpTool) else tool.parameters
        ).model_json_schema()

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], _: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        key = _caller(ctx)
        listed = []
        for tool in self._tools().values():
            if not allows(key.scopes, _scope_of(tool)):
                continue
            if isinstance(tool, McpTool):
                listed.append(tool.listing())
            else:
                described = tool.describe()
                listed.append(
                    types.Tool(
                        name=tool.name,
                        description=f"{described['description']} (a registered rayvisor tool,"
                        f" limits {json.dumps(described['limits'])}; scope: write)",
                        input_schema=described["parameters"],
                    )
                )
        return types.ListToolsResult(tools=listed)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        key = _caller(ctx)
        tool = self._tools().get(params.name)
        if tool is None:
            raise MCPError(
                types.INVALID_PARAMS,
                f"unknown tool {params.name!r}; this server has {sorted(self._tools())}",
            )
        needed = _scope_of(tool)
        if not allows(key.scopes, needed):
            raise MCPError(
                types.INVALID_REQUEST,
                f"tool {params.name} needs scope {needed.value}; this key has"
                f" {[str(s) for s in key.scopes]}",
            )
        arguments = params.arguments or {}
        try:
            if isinstance(tool, Tool):
                return await self._run_registered(tool, arguments, key)
            try:
                parsed = tool.arguments.model_validate(arguments)
            except ValidationError as invalid:
                raise MCPError(
                    types.INVALID_PARAMS, f"tool {tool.name}: {_describe(invalid.errors())}"
                ) from None
            return _result(await tool.run(self.system, parsed, key))
        except MCPError:
            raise
        except Exception as exc:
            raise _as_mcp_error(params.name, exc) from None

    async def _run_registered(
        self, tool: Tool, arguments: dict[str, Any], key: ApiKey
    ) -> types.CallToolResult:
        """Through the caller's own runner (its bucket and breaker per tool, as an agent's)."""
        agent_id = f"mcp-{key.prefix}"
        runner = self._runners.get(agent_id)
        if runner is None:
            runner = self._runners[agent_id] = ToolRunner(
                self.system.tools(), self.system.pool, agent_id
            )
        try:
            output = await runner.call(tool.name, arguments, None)
        except LogicalError:
            raise  # refused, invalid arguments: the caller's mistake, an MCP error
        except Exception as exc:  # the tool failed (timeout, breaker, its own error)
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=f"{type(exc).__name__}: {exc}")],
                is_error=True,
            )
        return _result({"output": output})

    # --- resources ----------------------------------------------------------------------

    async def _list_resources(
        self, ctx: ServerRequestContext[Any, Any], _: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[])  # all are templates

    async def _list_templates(
        self, ctx: ServerRequestContext[Any, Any], _: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=mcp_resources.TEMPLATES)

    async def _read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        try:
            return await mcp_resources.read(self.system, params.uri)
        except MCPError:
            raise
        except Exception as exc:
            raise _as_mcp_error(params.uri, exc) from None

    async def _subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        return await mcp_resources.subscribe(lambda: self.system, ctx, params)

    async def _unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        return await mcp_resources.unsubscribe(ctx, params)

    async def _listen(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        return await mcp_resources.listen(lambda: self.system, ctx, params)


def _caller(ctx: ServerRequestContext[Any, Any]) -> ApiKey:
    request = ctx.request
    key = request.scope.get(_KEY) if isinstance(request, Request) else None
    if key is None:  # every HTTP request passes McpEndpoint first: not reached
        raise MCPError(types.INVALID_REQUEST, "no API key came with this request")
    return key


def _scope_of(tool: McpTool | Tool) -> KeyScope:
    return tool.scope if isinstance(tool, McpTool) else KeyScope.WRITE


def _result(value: Any) -> types.CallToolResult:
    body = to_jsonable_python(value)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body))],
        structured_content=body if isinstance(body, dict) else {"result": body},
    )


def _describe(errors: Any) -> str:
    """`field: reason; ...` of pydantic / FastAPI errors (the `body.` of a REST body dropped)."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ())]
        if loc and loc[0] in ("body", "query"):
            loc = loc[1:]
        parts.append(f"{'.'.join(loc) or '(arguments)'}: {error.get('msg')}")
    return "invalid arguments: " + "; ".join(parts)


def _as_mcp_error(what: str, exc: Exception) -> MCPError:
    """The MCP error for what a route would have answered with a 4xx or 503."""
    cause = problems.unwrap(exc)
    if isinstance(cause, RequestValidationError):
        return MCPError(types.INVALID_PARAMS, f"{what}: {_describe(cause.errors())}")
    if isinstance(cause, NotFound | LogicalError):
        return MCPError(types.INVALID_PARAMS, f"{what}: {cause}")
    if isinstance(cause, Conflict):
        return MCPError(types.INVALID_REQUEST, f"{what}: {cause}")
    if isinstance(cause, HTTPException):
        code = types.INVALID_PARAMS if cause.status_code < 500 else types.INTERNAL_ERROR
        return MCPError(code, f"{what}: {cause.detail}")
    if isinstance(cause, problems.UNAVAILABLE):
        return MCPError(
            types.INTERNAL_ERROR, f"{what}: a service it needs is unavailable: {cause!r}"[:500]
        )
    log.exception("MCP %s failed", what)
    return MCPError(types.INTERNAL_ERROR, f"{what}: {type(cause).__name__}: {cause}"[:500])


def install(app: FastAPI) -> McpEndpoint:
    """Serve MCP at `/mcp` and run its session manager in the app's lifespan, around the
    lifespan the app already has."""
    endpoint = McpEndpoint(app)
    app.router.add_route(PATH, endpoint, include_in_schema=False)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with endpoint.sessions.run(), inner(app_) as state:
            yield state

    app.router.lifespan_context = lifespan
    return endpoint
