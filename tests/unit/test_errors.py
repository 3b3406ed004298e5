"""Tests of runtime/errors.py: the tree, retryability by class, classify(), pickling."""

from __future__ import annotations

import json
import pickle

import pydantic
import pytest

from runtime import errors
from runtime.errors import (
    ConfigError,
    Conflict,
    FatalError,
    LogicalError,
    NotFound,
    RayvisorError,
    ServiceError,
    StaleAttempt,
    TaskError,
    TransientError,
    classify,
)


def test_tree() -> None:
    for cls in (TaskError, ConfigError, ServiceError, NotFound, Conflict):
        assert cls.__bases__ == (RayvisorError,)
    for cls in (TransientError, FatalError, LogicalError):
        assert cls.__bases__ == (TaskError,)
    assert StaleAttempt.__bases__ == (Conflict,)
    assert RayvisorError.__bases__ == (Exception,)
    assert not hasattr(errors, "InvalidTransition")


def test_every_export_is_in_the_docstring_tree() -> None:
    assert errors.__doc__ is not None
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert name in errors.__doc__, name


@pytest.mark.parametrize(
    ("cls", "retryable", "category"),
    [
        (TransientError, True, "transient"),
        (FatalError, True, "fatal"),
        (LogicalError, False, "logical"),
    ],
)
def test_retryability_is_carried_by_the_class(
    cls: type[TaskError], retryable: bool, category: str
) -> None:
    assert cls.retryable is retryable
    assert cls.category == category
    exc = cls("disk full", {"path": "/tmp"})
    assert exc.reason == "disk full"
    assert exc.detail == {"path": "/tmp"}
    assert str(exc) == "disk full"
    assert exc.to_dict() == {
        "category": category,
        "type": cls.__name__,
        "reason": "disk full",
        "detail": {"path": "/tmp"},
    }
    json.dumps(exc.to_dict())


def test_detail_defaults_to_a_fresh_dict() -> None:
    a, b = LogicalError("x"), LogicalError("y")
    assert a.detail == {}
    a.detail["k"] = 1
    assert b.detail == {}


@pytest.mark.parametrize(
    "exc",
    [
        TransientError("timeout", {"after_s": 5}),
        FatalError("gpu lost"),
        LogicalError("bad input", {"field": "x"}),
        ConfigError("must be positive", field="pool_size"),
        StaleAttempt("stale", task_id="t1", attempt=1, current_attempt=2),
        NotFound("task 1 not found"),
        ServiceError("nats-server did not start"),
    ],
)
def test_errors_pickle_with_their_attributes(exc: RayvisorError) -> None:
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert copy.__dict__ == exc.__dict__


def test_config_error_names_the_field() -> None:
    exc = ConfigError("must be > 0", field="heartbeat_interval_s")
    assert str(exc) == "heartbeat_interval_s: must be > 0"
    assert exc.field == "heartbeat_interval_s"
    assert str(ConfigError("rayvisor.yaml: not valid YAML")) == "rayvisor.yaml: not valid YAML"


def test_stale_attempt_is_a_conflict() -> None:
    exc = StaleAttempt("attempt 1 is stale", task_id="t", attempt=1, current_attempt=2)
    assert isinstance(exc, Conflict)
    assert (exc.attempt, exc.current_attempt) == (1, 2)


def _validation_error() -> pydantic.ValidationError:
    class M(pydantic.BaseModel):
        n: int

    try:
        M(n="x")  # type: ignore[arg-type]
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("no ValidationError")


@pytest.mark.parametrize(
    ("exc", "category"),
    [
        (TransientError("t"), "transient"),
        (FatalError("f"), "fatal"),
        (LogicalError("l"), "logical"),
        (_validation_error(), "logical"),
        (ValueError("v"), "logical"),
        (TypeError("t"), "logical"),
        (KeyError("k"), "logical"),
        (json.JSONDecodeError("bad", "{", 0), "logical"),
        (TimeoutError(), "transient"),
        (TimeoutError(), "transient"),
        (ConnectionError(), "transient"),
        (ConnectionRefusedError(), "transient"),
        (OSError("io"), "transient"),
        (RuntimeError("r"), "fatal"),
        (ZeroDivisionError(), "fatal"),
        (MemoryError(), "fatal"),
        (NotFound("n"), "fatal"),
        (KeyboardInterrupt(), "fatal"),
    ],
)
def test_classify(exc: BaseException, category: str) -> None:
    assert classify(exc) == category


def test_a_task_error_subclass_keeps_its_category() -> None:
    class RateLimited(TransientError):
        pass

    class BadPrompt(LogicalError, ValueError):
        pass

    assert classify(RateLimited("429")) == "transient"
    assert classify(BadPrompt("empty")) == "logical"
