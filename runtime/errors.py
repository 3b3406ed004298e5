"""The rayvisor error tree. Every error rayvisor raises on purpose is a `RayvisorError`.

```
RayvisorError
├── TaskError            a task attempt failed; the class says whether and where to retry
│   ├── TransientError   retry with backoff, on the same or any agent
│   ├── FatalError       the agent is unfit: retry on another agent
│   └── LogicalError     bad input: fail the task at once, never retried
├── ConfigError          invalid configuration; the message names the field
├── ServiceError         an embedded service (PostgreSQL, nats-server) failed to start or stop
├── NotFound             no such record (task, project, agent, ...)
└── Conflict             the request contradicts the current state
    └── StaleAttempt     a result for an attempt that is no longer current (fencing)
```

Retries stop at a task's `max_attempts` whatever the category. `classify()` maps any
exception, rayvisor's or not, to one of the three categories. All errors pickle with their
attributes, so they cross Ray calls intact.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from runtime.redact import redact, redact_value

__all__ = [
    "ConfigError",
    "Conflict",
    "ErrorCategory",
    "FatalError",
    "LogicalError",
    "NotFound",
    "RayvisorError",
    "ServiceError",
    "StaleAttempt",
    "TaskError",
    "TransientError",
    "classify",
]

ErrorCategory = Literal["transient", "fatal", "logical"]


class RayvisorError(Exception):
    """The root of every error rayvisor raises on purpose."""


class TaskError(RayvisorError):
    """A task attempt failed. Subclasses carry the retry decision; raise those, not this."""

    retryable: ClassVar[bool] = True
    category: ClassVar[ErrorCategory] = "fatal"

    def __init__(self, reason: str, detail: dict[str, Any] | None = None) -> None:
        # kept in `tasks.error`, shown by the API and in events: no URL's password
        reason = redact(reason)
        super().__init__(reason)
        self.reason = reason
        self.detail: dict[str, Any] = redact_value(dict(detail or {}))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in `tasks.error` and sent in `TaskResult.error`."""
        return {
            "category": self.category,
            "type": type(self).__name__,
            "reason": self.reason,
            "detail": self.detail,
        }


class TransientError(TaskError):
    """A passing failure (timeout, lost connection): retry with backoff, on any agent."""

    retryable = True
    category = "transient"


class FatalError(TaskError):
    """The agent cannot do this work any more: retry on another agent."""

    retryable = True
    category = "fatal"


class LogicalError(TaskError):
    """The task itself is wrong (bad input): fail it at once with the reason; never retried."""

    retryable = False
    category = "logical"


class ConfigError(RayvisorError):
    """Invalid configuration. The message names the field (or file) and the reason."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


class ServiceError(RayvisorError):
    """An embedded service failed to start or stop."""


class NotFound(RayvisorError):
    """No such record."""


class Conflict(RayvisorError):
    """The request contradicts the current state (a duplicate, a finished task, ...)."""


class StaleAttempt(Conflict):
    """A result or progress report for an attempt that is no longer current; it is refused."""

    def __init__(
        self,
        message: str,
        *,
        task_id: object = None,
        attempt: int | None = None,
        current_attempt: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.task_id = task_id
        self.attempt = attempt
        self.current_attempt = current_attempt


def classify(exc: BaseException) -> ErrorCategory:
    """The failure category of any exception: "transient", "fatal" or "logical".

    `TaskError` subclasses say it themselves. Bad input (`ValueError`, which includes
    pydantic's `ValidationError`, `TypeError`, `KeyError`) is logical. Timeouts and
    `OSError` (connection errors among them) are transient. Anything else is fatal.
    """
    if isinstance(exc, TaskError):
        return exc.category
    if isinstance(exc, TimeoutError | OSError):
        return "transient"
    if isinstance(exc, ValueError | TypeError | KeyError):
        return "logical"
    return "fatal"
