"""What an agent's work came to, as the task manager is told it: `completed` with a
plain-JSON result, `failed` with the `TaskError.to_dict()` shape, or `cancelled`.

A result that is not plain JSON (or over `max_result_bytes` as JSON, which every reader
of the task would pay for) is a logical failure of that task, never of the agent.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from runtime.errors import LogicalError, TaskError, classify
from runtime.models.common import nul_at
from runtime.redact import redact

__all__ = ["error_dict", "failed", "handler_outcome", "not_json"]


def error_dict(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, TaskError):
        return exc.to_dict()
    return {
        "category": classify(exc),
        "type": type(exc).__name__,
        "reason": redact(str(exc)) or type(exc).__name__,
        "detail": {},
    }


def failed(exc: BaseException) -> dict[str, Any]:
    return {"status": "failed", "error": error_dict(exc)}


def not_json(value: Any, max_bytes: int | None = None) -> str | None:
    """Why `value` is not plain JSON PostgreSQL can store (or is over `max_bytes` as
    JSON, which every reader of the task would pay for), or None if it is."""
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"not JSON-serialisable: {exc}"
    if max_bytes is not None and (size := len(encoded.encode())) > max_bytes:
        return f"{size} bytes as JSON, over the limit of {max_bytes} (max_result_bytes)"
    where = nul_at(value)
    return None if where is None else f"{where} holds a NUL (U+0000) character"


def handler_outcome(
    handler: asyncio.Task[Any], max_result_bytes: int | None = None
) -> tuple[dict[str, Any], BaseException | None]:
    """What `run` returns for a finished handler, and the error it failed with."""
    if handler.cancelled():
        return {"status": "cancelled"}, None
    error = handler.exception()
    if error is None:
        result = handler.result()
        problem = not_json(result, max_result_bytes)
        if problem is None:
            return {"status": "completed", "result": result}, None
        error = LogicalError(
            f"the result of handle is {problem}",
            {"result_type": type(result).__name__},
        )
    return failed(error), error
