"""Errors as `application/problem+json` (RFC 9457), each naming what was wrong.

Every refusal has the same shape: `type`, `title`, `status`, `detail`, and for a 422
`errors`, one `{field, reason}` per invalid field (`body.title`, `query.limit`, ...).
The runtime's own errors map to statuses here, so a route raises what the runtime raised.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from ray.exceptions import RayTaskError
from starlette.exceptions import HTTPException

from runtime.errors import Conflict, LogicalError, NotFound

__all__ = ["FieldError", "Problem", "install", "problem", "unwrap"]

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
    from http import HTTPStatus

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
        raise exc

    for kind in (RayTaskError, NotFound, LogicalError, Conflict):
        app.add_exception_handler(kind, _runtime)
