"""Structured logs: every record of a rayvisor process as one line that names its process,
Ray actor, trace and task.

`setup()` installs one handler, once per process, writing to stderr (in a Ray worker that is
the worker's `worker-*.err` file under the session's `logs/`):

- `json` (one object per line: `ts`, `level`, `logger`, `message`, `pid`, and when known
  `actor` (the Ray actor's name), `trace_id` / `span_id` (hex, of the current OpenTelemetry
  span), the ids `bound()` set (`task_id`, `agent_id`, ...), `exc` (the traceback), and any
  `extra=` fields);
- `text`, the same in one human-readable line.

The format is `RAYVISOR_LOG_FORMAT` (`json` | `text`; default: `text` when stderr is a
terminal, `json` otherwise) and the level of rayvisor's own loggers (`actors`, `runtime`,
`serve`, `supervisors`, `rayvisor.*`) `RAYVISOR_LOG_LEVEL`. Ray's loggers (`ray.*`) keep their
own handlers and never propagate, so they are neither reformatted nor made noisier; other
libraries keep the root logger's level (WARNING).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

from runtime.redact import redact

__all__ = [
    "LOG_FORMAT_ENV",
    "LOG_LEVEL_ENV",
    "OWN_LOGGERS",
    "JsonFormatter",
    "TextFormatter",
    "bound",
    "bound_ids",
    "setup",
]

LOG_FORMAT_ENV = "RAYVISOR_LOG_FORMAT"
LOG_LEVEL_ENV = "RAYVISOR_LOG_LEVEL"
OWN_LOGGERS = ("actors", "runtime", "serve", "supervisors", "rayvisor")

LogFormat = Literal["json", "text"]

_EMPTY: Mapping[str, str] = MappingProxyType({})
_ids: ContextVar[Mapping[str, str]] = ContextVar("rayvisor_log_ids", default=_EMPTY)
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
_handler: logging.Handler | None = None
_actor: str | None = None  # this worker's actor name, once it hosts an actor ("" if unnamed)


# ---- ids for the records of a block ---------------------------------------------------------


@contextlib.contextmanager
def bound(**ids: object) -> Iterator[None]:
    """Name these ids (`task_id=...`, `agent_id=...`) in every record logged inside the block.

    They live in a context variable: asyncio tasks created inside the block copy it, so the
    records of the work they do carry the ids too; other tasks' records do not. None values
    are left out; nested blocks add to (and may override) the outer block's ids.
    """
    added = {key: str(value) for key, value in ids.items() if value is not None}
    token = _ids.set(MappingProxyType({**_ids.get(), **added}))
    try:
        yield
    finally:
        _ids.reset(token)


def bound_ids() -> dict[str, str]:
    """The ids `bound()` set for this context (to hand to a thread, say)."""
    return dict(_ids.get())


# ---- what a record says ---------------------------------------------------------------------


def _actor_name() -> str | None:
    """The Ray actor this worker hosts, if any; read from Ray only when Ray is loaded (a
    driver never asks, and a worker asks until it becomes an actor, then remembers)."""
    global _actor
    if _actor is not None:
        return _actor or None
    ray_worker = sys.modules.get("ray._private.worker")
    if ray_worker is None:
        return None
    worker = ray_worker.global_worker
    try:
        if worker.mode != ray_worker.WORKER_MODE or worker.actor_id.is_nil():
            return None
        _actor = worker.actor_name or ""
    except Exception:  # Ray not connected yet, or shutting down
        return None
    return _actor or None


def _trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current OpenTelemetry span, in hex, when one is valid."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # nobody traces in this process
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def record_fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The fields of one record, in the order they are written."""
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
        "pid": record.process,
    }
    actor = _actor_name()
    if actor:
        fields["actor"] = actor
    trace = _trace_ids()
    if trace is not None:
        fields["trace_id"], fields["span_id"] = trace
    for key, value in _ids.get().items():
        fields.setdefault(key, value)
    for key, value in record.__dict__.items():  # extra=... fields
        if key not in _STANDARD and not key.startswith("_"):
            fields.setdefault(key, value)
    if record.exc_info:
        fields["exc"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        fields["exc"] = record.exc_text
    if record.stack_info:
        fields["stack"] = formatter.formatStack(record.stack_info)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values that JSON lacks are written as their `str`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record, self)
        fields["ts"] = fields["ts"].replace("+00:00", "Z")
        return redact(json.dumps(fields, default=str, ensure_ascii=False))  # no URL password


class TextFormatter(logging.Formatter):
    """`2026-12-02 15:40:01.123 INFO  actors.host: message  [actor task_id=... trace_id=...]`,
    local time, the traceback (if any) on the lines below."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record, self)
        seconds = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        line = (
            f"{seconds}.{int(record.msecs):03d} {fields.pop('level'):<7} "
            f"{fields.pop('logger')}: {fields.pop('message')}"
        )
        for key in ("ts", "pid"):
            fields.pop(key)
        below = [fields.pop(key) for key in ("exc", "stack") if key in fields]
        context = [str(fields.pop("actor"))] if "actor" in fields else []
        context += [f"{key}={value}" for key, value in fields.items()]
        if context:
            line += f"  [{' '.join(context)}]"
        return redact("\n".join([line, *below]))  # a URL's password never reaches a log


# ---- installing it --------------------------------------------------------------------------


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record comes (Ray and pytest replace it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr


def _resolve_format(log_format: str | None) -> LogFormat:
    chosen = (log_format or os.environ.get(LOG_FORMAT_ENV) or "").strip().lower()
    if not chosen:
        return "text" if sys.stderr.isatty() else "json"
    if chosen not in ("json", "text"):
        raise ValueError(f"{LOG_FORMAT_ENV} must be json or text, got {chosen!r}")
    return chosen  # type: ignore[return-value]


def setup(
    log_format: str | None = None,
    level: str | int | None = None,
    *,
    everything: bool = False,
) -> logging.Handler:
    """Install the handler, once per process (a later call returns the first handler).

    `everything` (Ray workers): the handler goes on the root logger, so every logger that
    propagates writes through it; rayvisor's loggers log from `level` (default INFO), other
    libraries keep the root's level (WARNING). A root that already has handlers (the user's
    own logging set-up) is left alone, and rayvisor's loggers get the handler instead.
    Otherwise (the CLI): only rayvisor's loggers get the handler; unless `level` (or
    `RAYVISOR_LOG_LEVEL`) is given, it writes warnings and up only and no logger's level
    changes, so a command's console stays quiet.
    """
    global _handler
    if _handler is not None:
        return _handler
    handler = _Stderr()
    fmt = _resolve_format(log_format)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    level = level or os.environ.get(LOG_LEVEL_ENV) or (logging.INFO if everything else None)
    own = [logging.getLogger(name) for name in OWN_LOGGERS]
    root = logging.getLogger()
    if everything and not root.handlers:
        root.addHandler(handler)
    else:
        for logger in own:
            logger.addHandler(handler)
            logger.propagate = not everything  # a configured root would print it twice
    if level is not None:
        resolved = logging.getLevelName(level.upper()) if isinstance(level, str) else level
        if not isinstance(resolved, int):
            raise ValueError(f"{LOG_LEVEL_ENV} must be a logging level, got {level!r}")
        for logger in own:
            logger.setLevel(resolved)
    else:  # a child logger set lower (`rayvisor.ray` keeps DEBUG for its file) stays off
        handler.setLevel(logging.WARNING)
    _handler = handler
    return handler
