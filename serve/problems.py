"""Errors as `application/problem+json` (RFC 9457), each naming what was wrong.

Every refusal has the same shape: `type`, `title`, `status`, `detail`, and for a 422
`errors`, one `{field, reason}` per invalid field (`body.title`, `query.limit`, ...).
The runtime's own errors map to statuses here, so a route raises what the runtime raised.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from starlette.exceptions import HTTPException

from actors.tasks import ActorUnreachable
from runtime.errors import Conflict, LogicalError, NotFound

__all__ = ["UNAVAILABLE", "FieldError", "Problem", "document", "install", "problem", "unwrap"]

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    """The body of every error response."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    errors: list[FieldError] = []


def problem(
    status: int,
    detail: str = "",
    *,
    title: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        title=title or HTTPStatus(status).phrase, status=status, detail=detail, errors=errors or []
    )
    return JSONResponse(
        body.model_dump(), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def field_errors(errors: list[dict[str, Any]]) -> list[FieldError]:
    return [
        FieldError(field=".".join(str(part) for part in err["loc"]), reason=err["msg"])
        for err in errors
    ]


def unwrap(exc: BaseException) -> BaseException:
    """The error an actor raised, out of Ray's wrapper."""
    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


# A part the request needs is down (PostgreSQL, a task manager not back within the
# restart bound): 503, retry. A PostgreSQL shutting down ends its sessions' statements
# with AdminShutdownError (an OperatorInterventionError, as CannotConnectNowError is).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    ActorUnreachable,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    RayActorError,
    ActorUnavailableError,
)


def _unavailable(exc: BaseException) -> JSONResponse:
    return problem(
        503,
        f"a service this request needs is unavailable: {exc!r}"[:500],
        headers={"Retry-After": "1"},
    )


_STATUS_OF: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, 404),
    (LogicalError, 422),
    (Conflict, 409),
)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(list(exc.errors()))
        detail = "; ".join(f"{e.field}: {e.reason}" for e in errors)
        return problem(422, detail, errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=exc.headers)

    async def _runtime(_: Request, exc: Exception) -> JSONResponse:
        cause = unwrap(exc)
        for kind, status in _STATUS_OF:
            if isinstance(cause, kind):
                return problem(status, str(cause))
        if isinstance(cause, UNAVAILABLE):
            return _unavailable(cause)
        raise exc

    for kind in (RayTaskError, NotFound, LogicalError, Conflict):
        app.add_exception_handler(kind, _runtime)

    async def _outage(_: Request, exc: Exception) -> JSONResponse:
        return _unavailable(exc)

    for kind in UNAVAILABLE:
        app.add_exception_handler(kind, _outage)

    @app.exception_handler(asyncpg.ForeignKeyViolationError)
    async def _unknown_reference(_: Request, exc: asyncpg.ForeignKeyViolationError) -> JSONResponse:
        # constraints are named <table>_<column>_fkey: the column is the body's field
        table = exc.table_name or ""
        column = (exc.constraint_name or "").removeprefix(f"{table}_").removesuffix("_fkey")
        reason = f"refers to nothing that exists ({exc.detail or exc})"
        return problem(
            422,
            f"body.{column}: {reason}",
            errors=[FieldError(field=f"body.{column}", reason=reason)],
        )


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_WHY = {
    "401": "No API key, or an unknown or revoked one",
    "403": "The key's scopes do not include the route's",
    "404": "No such resource",
    "409": "The resource is not in a state that allows this",
    "413": "The body is larger than `http.max_body_bytes`",
    "422": "Invalid input: `errors` names each field and the reason",
    "429": "The key's rate limit, or too many unknown keys from this address; see `Retry-After`",
    "503": "A part of the system the route needs is not running",
}


def document(app: FastAPI) -> None:
    """Make the OpenAPI document list every refusal a route can give, as problem+json."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)  # fmt: skip
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
            Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        schema["components"]["schemas"]["FieldError"] = FieldError.model_json_schema()
        schema["components"]["schemas"]["Problem"].pop("$defs", None)
        for operations in schema["paths"].values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                codes = {
                    code for code in responses if code[0] in "45" and _is_problem(responses[code])
                }
                if operation.get("security"):
                    codes |= {"401", "403", "429"}
                if operation.get("parameters") or "requestBody" in operation:
                    codes.add("422")
                if "requestBody" in operation:
                    codes.add("413")
                if any(p["in"] == "path" for p in operation.get("parameters", [])):
                    codes.add("404")
                for code in codes:
                    responses[code] = {
                        "description": _WHY.get(code, "Refused"),
                        "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _is_problem(response: dict[str, Any]) -> bool:
    """Whether a documented response is an error of ours (or FastAPI's default 422)."""
    content = response.get("content") or {}
    schema = (content.get("application/json") or {}).get("schema") or {}
    return not content or schema.get("$ref", "").endswith(("/Problem", "/HTTPValidationError"))
