"""Unit tests for `runtime.policies`: time is a plain float passed as `now`, no Ray."""

from __future__ import annotations

import itertools
import pickle
import random

import pytest

from runtime import policies, state_machines
from runtime.errors import Conflict, RayvisorError
from runtime.policies import (
    Backoff,
    CircuitBreaker,
    CircuitState,
    RestartIntensity,
    TokenBucket,
    retry_delay,
)
from runtime.state_machines import (
    AGENT_TRANSITIONS,
    TASK_TRANSITIONS,
    TERMINAL_TASK_STATUSES,
    AgentState,
    InvalidTransition,
    TaskStatus,
    Transitions,
    check_agent_transition,
    check_task_transition,
    fold_agent_events,
)


def test_every_exported_name_exists() -> None:
    for module in (policies, state_machines):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


# --- backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(1.0, 10.0, jitter=0.0)
    delays = [backoff.next_delay(float(t)) for t in range(7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff.attempts == 7


def test_backoff_fractional_minimum() -> None:
    backoff = Backoff(0.5, 3.0, jitter=0.0)
    assert [backoff.next_delay(0.0) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_min_equal_to_max_is_constant() -> None:
    backoff = Backoff(2.0, 2.0, jitter=0.0)
    assert [backoff.next_delay(0.0) for _ in range(3)] == [2.0, 2.0, 2.0]


def test_backoff_zero_minimum_never_waits() -> None:
    backoff = Backoff(0.0, 5.0, jitter=0.5)
    assert [backoff.next_delay(0.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.0]
    assert backoff.attempts == 4


def test_backoff_does_not_overflow_after_many_attempts() -> None:
    backoff = Backoff(0.001, 60.0, jitter=0.0)
    for _ in range(5000):
        delay = backoff.next_delay(0.0)
    assert delay == 60.0
    assert backoff.attempts == 5000


def test_backoff_jitter_uses_the_given_rng() -> None:
    expected_rng = random.Random(7)
    backoff = Backoff(1.0, 8.0, jitter=0.2, rng=random.Random(7))
    for base in (1.0, 2.0, 4.0, 8.0, 8.0):
        assert backoff.next_delay(0.0) == pytest.approx(base * expected_rng.uniform(0.8, 1.2))


def test_backoff_jitter_stays_within_bounds() -> None:
    backoff = Backoff(1.0, 8.0, jitter=0.25, rng=random.Random(1234))
    first = [backoff.next_delay(0.0) for _ in range(4)]
    for delay, base in zip(first, (1.0, 2.0, 4.0, 8.0), strict=True):
        assert base * 0.75 <= delay <= base * 1.25
    capped = [backoff.next_delay(0.0) for _ in range(2000)]
    assert min(capped) >= 8.0 * 0.75
    assert max(capped) <= 8.0 * 1.25
    # The jitter spreads the delays: not all equal, and both sides of the base are used.
    assert min(capped) < 7.0 < 9.0 < max(capped)


def test_backoff_same_seed_same_sequence() -> None:
    a = Backoff(0.1, 30.0, rng=random.Random(99))
    b = Backoff(0.1, 30.0, rng=random.Random(99))
    assert [a.next_delay(0.0) for _ in range(10)] == [b.next_delay(0.0) for _ in range(10)]


def test_backoff_resets_after_a_healthy_period() -> None:
    backoff = Backoff(1.0, 60.0, jitter=0.0, reset_after_s=30.0)
    backoff.started(0.0)
    assert backoff.next_delay(5.0) == 1.0
    backoff.started(6.0)
    assert backoff.next_delay(7.0) == 2.0
    backoff.started(9.0)
    assert backoff.next_delay(10.0) == 4.0
    backoff.started(14.0)
    assert backoff.attempts == 3
    # Up for exactly reset_after_s: the sequence starts over.
    assert backoff.next_delay(44.0) == 1.0
    assert backoff.attempts == 1


def test_backoff_short_uptime_does_not_reset() -> None:
    backoff = Backoff(1.0, 60.0, jitter=0.0, reset_after_s=30.0)
    assert backoff.next_delay(0.0) == 1.0
    assert backoff.next_delay(1.0) == 2.0
    backoff.started(3.0)
    assert backoff.next_delay(32.9) == 4.0


def test_backoff_uptime_counts_once() -> None:
    backoff = Backoff(1.0, 60.0, jitter=0.0, reset_after_s=30.0)
    for _ in range(3):
        backoff.next_delay(0.0)
    backoff.started(0.0)
    assert backoff.next_delay(100.0) == 1.0
    # The restart failed before `started` was called again: no second reset.
    assert backoff.next_delay(200.0) == 2.0


def test_backoff_reset() -> None:
    backoff = Backoff(1.0, 60.0, jitter=0.0)
    backoff.next_delay(0.0)
    backoff.next_delay(0.0)
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay(0.0) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"min_s": -0.1, "max_s": 1.0}, "min_s"),
        ({"min_s": 2.0, "max_s": 1.0}, "max_s"),
        ({"min_s": 1.0, "max_s": 2.0, "jitter": 1.0}, "jitter"),
        ({"min_s": 1.0, "max_s": 2.0, "jitter": -0.1}, "jitter"),
        ({"min_s": 1.0, "max_s": 2.0, "reset_after_s": -1.0}, "reset_after_s"),
    ],
)
def test_backoff_rejects_invalid_arguments(kwargs: dict[str, float], argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        Backoff(**kwargs)


def test_retry_delay_is_deterministic_and_capped() -> None:
    assert [retry_delay(n, 0.5, 10.0) for n in range(1, 8)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
        10.0,
    ]
    assert retry_delay(10_000, 0.5, 10.0) == 10.0
    assert retry_delay(3, 0.0, 10.0) == 0.0


@pytest.mark.parametrize(
    ("args", "argument"),
    [((0, 1.0, 2.0), "attempt"), ((1, -1.0, 2.0), "base_s"), ((1, 3.0, 2.0), "max_s")],
)
def test_retry_delay_rejects_invalid_arguments(
    args: tuple[int, float, float], argument: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        retry_delay(*args)


# --- restart intensity -----------------------------------------------------------------------


def test_intensity_allows_max_restarts_then_exceeds() -> None:
    intensity = RestartIntensity(3, 5.0)
    assert intensity.add_restart(0.0) is True
    assert intensity.add_restart(1.0) is True
    assert intensity.add_restart(2.0) is True
    assert intensity.add_restart(3.0) is False
    assert intensity.restarts_in_window(3.0) == 4


def test_intensity_old_restarts_leave_the_window() -> None:
    intensity = RestartIntensity(3, 5.0)
    for t in (0.0, 1.0, 2.0):
        assert intensity.add_restart(t) is True
    # At 6.5 the window starts at 1.5: the restarts at 0 and 1 are gone.
    assert intensity.add_restart(6.5) is True
    assert intensity.restarts_in_window(6.5) == 2
    assert intensity.add_restart(6.6) is True
    assert intensity.add_restart(6.7) is False


def test_intensity_window_includes_its_start() -> None:
    intensity = RestartIntensity(1, 5.0)
    assert intensity.add_restart(0.0) is True
    assert intensity.add_restart(5.0) is False

    later = RestartIntensity(1, 5.0)
    assert later.add_restart(0.0) is True
    assert later.add_restart(5.001) is True


def test_intensity_zero_means_any_restart_exceeds() -> None:
    intensity = RestartIntensity(0, 5.0)
    assert intensity.add_restart(0.0) is False
    assert intensity.add_restart(100.0) is False


def test_intensity_count_does_not_change_the_record() -> None:
    intensity = RestartIntensity(2, 10.0)
    intensity.add_restart(0.0)
    intensity.add_restart(1.0)
    assert intensity.restarts_in_window(10.5) == 1
    assert intensity.restarts_in_window(1.0) == 2
    assert intensity.restarts_in_window(100.0) == 0


def test_intensity_reset() -> None:
    intensity = RestartIntensity(1, 10.0)
    intensity.add_restart(0.0)
    intensity.reset()
    assert intensity.restarts_in_window(0.0) == 0
    assert intensity.add_restart(1.0) is True


@pytest.mark.parametrize(
    ("args", "argument"), [((-1, 5.0), "max_restarts"), ((3, 0.0), "period_s")]
)
def test_intensity_rejects_invalid_arguments(args: tuple[int, float], argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        RestartIntensity(*args)


# --- circuit breaker -------------------------------------------------------------------------


def open_breaker() -> CircuitBreaker:
    """A breaker (threshold 3, timeout 10 s, max 40 s) opened by failures at 0, 1 and 2."""
    breaker = CircuitBreaker(3, 10.0, 40.0)
    for t in (0.0, 1.0, 2.0):
        breaker.record_failure(t)
    return breaker


def test_circuit_state_values() -> None:
    assert [s.value for s in CircuitState] == ["closed", "open", "half_open"]
    assert CircuitState("half_open") is CircuitState.HALF_OPEN


def test_breaker_starts_closed() -> None:
    breaker = CircuitBreaker(3, 10.0, 40.0)
    assert breaker.state_at(0.0) is CircuitState.CLOSED
    assert breaker.allows_work(0.0) is True
    assert breaker.try_acquire(0.0) is True
    assert breaker.try_acquire_probe(0.0) is False
    assert breaker.retry_at is None
    assert breaker.consecutive_failures == 0
    assert breaker.open_timeout_s == 10.0
    assert breaker.poll(0.0) is None


def test_breaker_opens_at_the_threshold() -> None:
    breaker = CircuitBreaker(3, 10.0, 40.0)
    assert breaker.record_failure(0.0) is CircuitState.CLOSED
    assert breaker.record_failure(1.0) is CircuitState.CLOSED
    assert breaker.consecutive_failures == 2
    assert breaker.record_failure(2.0) is CircuitState.OPEN
    assert breaker.consecutive_failures == 3
    assert breaker.retry_at == 12.0
    assert breaker.open_timeout_s == 10.0
    assert breaker.allows_work(5.0) is False
    assert breaker.try_acquire(5.0) is False
    assert breaker.try_acquire_probe(5.0) is False


def test_breaker_success_resets_consecutive_failures() -> None:
    breaker = CircuitBreaker(3, 10.0, 40.0)
    breaker.record_failure(0.0)
    breaker.record_failure(1.0)
    assert breaker.record_success(2.0) is CircuitState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.record_failure(3.0) is CircuitState.CLOSED
    assert breaker.record_failure(4.0) is CircuitState.CLOSED
    assert breaker.record_failure(5.0) is CircuitState.OPEN


def test_breaker_half_opens_after_the_timeout_and_poll_reports_it_once() -> None:
    breaker = open_breaker()
    assert breaker.state_at(11.99) is CircuitState.OPEN
    assert breaker.poll(11.99) is None
    assert breaker.state_at(12.0) is CircuitState.HALF_OPEN
    # state_at changed nothing: poll still sees the transition.
    assert breaker.poll(12.0) is CircuitState.HALF_OPEN
    assert breaker.poll(12.5) is None
    assert breaker.poll(20.0) is None
    assert breaker.state_at(20.0) is CircuitState.HALF_OPEN
    assert breaker.retry_at is None


def test_breaker_poll_reports_half_open_even_after_another_call_moved_it() -> None:
    breaker = open_breaker()
    assert breaker.try_acquire_probe(15.0) is True
    assert breaker.poll(15.0) is CircuitState.HALF_OPEN
    assert breaker.poll(15.0) is None


def test_breaker_half_open_lets_exactly_one_probe_through() -> None:
    breaker = open_breaker()
    assert breaker.allows_work(12.0) is True
    assert breaker.try_acquire_probe(12.0) is True
    assert breaker.allows_work(12.0) is False
    assert breaker.try_acquire_probe(12.5) is False
    assert breaker.try_acquire(12.5) is False
    assert breaker.state_at(12.5) is CircuitState.HALF_OPEN


def test_breaker_try_acquire_takes_the_probe_when_half_open() -> None:
    breaker = open_breaker()
    assert breaker.try_acquire(12.0) is True
    assert breaker.try_acquire(12.0) is False


def test_breaker_probe_success_closes() -> None:
    breaker = open_breaker()
    assert breaker.try_acquire_probe(12.0) is True
    assert breaker.record_success(13.0) is CircuitState.CLOSED
    assert breaker.state_at(13.0) is CircuitState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.open_timeout_s == 10.0
    assert breaker.retry_at is None
    assert breaker.allows_work(13.0) is True
    assert breaker.try_acquire(13.0) is True
    assert breaker.try_acquire(13.0) is True
    assert breaker.poll(13.0) is None


def test_breaker_probe_failure_reopens_with_a_longer_timeout_up_to_the_max() -> None:
    breaker = open_breaker()
    # Half-open at 12 (no poll needed): a failed probe reopens for 20 s.
    assert breaker.record_failure(13.0) is CircuitState.OPEN
    assert breaker.open_timeout_s == 20.0
    assert breaker.retry_at == 33.0
    assert breaker.state_at(32.9) is CircuitState.OPEN
    assert breaker.poll(33.0) is CircuitState.HALF_OPEN
    assert breaker.try_acquire_probe(33.0) is True
    assert breaker.record_failure(34.0) is CircuitState.OPEN
    assert breaker.open_timeout_s == 40.0
    assert breaker.retry_at == 74.0
    # Each half-opening has its own single probe and its own poll report.
    assert breaker.poll(74.0) is CircuitState.HALF_OPEN
    assert breaker.try_acquire_probe(74.0) is True
    assert breaker.record_failure(75.0) is CircuitState.OPEN
    assert breaker.open_timeout_s == 40.0  # capped at max_reset_timeout_s
    assert breaker.retry_at == 115.0
    # A successful probe closes and restores the initial timeout.
    assert breaker.record_success(115.0) is CircuitState.CLOSED
    assert breaker.open_timeout_s == 10.0
    for t in (120.0, 121.0):
        assert breaker.record_failure(t) is CircuitState.CLOSED
    assert breaker.record_failure(122.0) is CircuitState.OPEN
    assert breaker.retry_at == 132.0


def test_breaker_custom_multiplier() -> None:
    breaker = CircuitBreaker(1, 1.0, 100.0, multiplier=3.0)
    now = 0.0
    timeouts = []
    for _ in range(6):
        assert breaker.record_failure(now) is CircuitState.OPEN
        timeouts.append(breaker.open_timeout_s)
        now = breaker.retry_at or 0.0
    assert timeouts == [1.0, 3.0, 9.0, 27.0, 81.0, 100.0]


def test_breaker_ignores_outcomes_while_open() -> None:
    breaker = open_breaker()
    assert breaker.record_success(5.0) is CircuitState.OPEN
    assert breaker.consecutive_failures == 3
    assert breaker.record_failure(6.0) is CircuitState.OPEN
    assert breaker.consecutive_failures == 4
    assert breaker.retry_at == 12.0
    assert breaker.open_timeout_s == 10.0


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ((0, 1.0, 2.0), "failure_threshold"),
        ((1, -1.0, 2.0), "reset_timeout_s"),
        ((1, 3.0, 2.0), "max_reset_timeout_s"),
        ((1, 1.0, 2.0, 0.5), "multiplier"),
    ],
)
def test_breaker_rejects_invalid_arguments(args: tuple[float, ...], argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        CircuitBreaker(*args)  # type: ignore[arg-type]


# --- token bucket ----------------------------------------------------------------------------


def test_bucket_burst_then_refill() -> None:
    bucket = TokenBucket(2.0, 3)
    assert [bucket.try_acquire(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after(0.0) == 0.5
    assert bucket.available(0.25) == 0.5
    assert bucket.retry_after(0.25) == 0.25
    assert bucket.try_acquire(0.25) is False
    assert bucket.try_acquire(0.5) is True
    assert bucket.try_acquire(0.5) is False


def test_bucket_refill_caps_at_burst() -> None:
    bucket = TokenBucket(2.0, 3)
    for _ in range(3):
        bucket.try_acquire(0.0)
    assert bucket.available(100.0) == 3.0
    assert [bucket.try_acquire(100.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_starts_full_whenever_first_used() -> None:
    bucket = TokenBucket(1.0, 2)
    assert bucket.available(1000.0) == 2.0
    assert bucket.retry_after(1000.0) == 0.0
    assert [bucket.try_acquire(1000.0) for _ in range(3)] == [True, True, False]
    assert bucket.retry_after(1000.0) == 1.0


def test_bucket_several_tokens() -> None:
    bucket = TokenBucket(1.0, 5)
    assert bucket.try_acquire(0.0, tokens=5) is True
    assert bucket.retry_after(0.0, tokens=2.5) == 2.5
    assert bucket.try_acquire(2.0, tokens=2.5) is False
    assert bucket.try_acquire(2.5, tokens=2.5) is True
    assert bucket.available(2.5) == 0.0


def test_bucket_waiting_retry_after_is_always_enough() -> None:
    bucket = TokenBucket(7.0, 1)
    now = 0.0
    for _ in range(200):
        now += bucket.retry_after(now)
        assert bucket.try_acquire(now) is True
    assert now == pytest.approx(199 / 7.0)


def test_bucket_clock_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(1.0, 1)
    assert bucket.try_acquire(10.0) is True
    assert bucket.try_acquire(5.0) is False
    assert bucket.available(5.0) == 0.0
    assert bucket.try_acquire(11.0) is True


@pytest.mark.parametrize("tokens", [0.0, -1.0, 4.0])
def test_bucket_rejects_impossible_requests(tokens: float) -> None:
    bucket = TokenBucket(1.0, 3)
    with pytest.raises(ValueError, match=r"^tokens:"):
        bucket.try_acquire(0.0, tokens)
    with pytest.raises(ValueError, match=r"^tokens:"):
        bucket.retry_after(0.0, tokens)


@pytest.mark.parametrize(
    ("args", "argument"), [((0.0, 1), "rate_per_s"), ((-1.0, 1), "rate_per_s"), ((1.0, 0), "burst")]
)
def test_bucket_rejects_invalid_arguments(args: tuple[float, int], argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        TokenBucket(*args)


# --- state machines --------------------------------------------------------------------------

AGENT_EDGES = {
    ("created", "starting"),
    ("starting", "running"),
    ("starting", "error"),
    ("starting", "failed"),
    ("starting", "stopping"),
    ("running", "idle"),
    ("running", "busy"),
    ("running", "stopping"),
    ("running", "error"),
    ("running", "failed"),
    ("idle", "busy"),
    ("idle", "stopping"),
    ("idle", "error"),
    ("idle", "failed"),
    ("busy", "idle"),
    ("busy", "stopping"),
    ("busy", "error"),
    ("busy", "failed"),
    ("error", "starting"),
    ("error", "running"),
    ("error", "idle"),
    ("error", "stopping"),
    ("error", "failed"),
    ("error", "stopped"),
    ("stopping", "stopped"),
    ("stopping", "failed"),
    ("stopped", "starting"),
    ("failed", "starting"),
}

TASK_EDGES = {
    ("pending", "queued"),
    ("pending", "failed"),
    ("pending", "cancelled"),
    ("queued", "assigned"),
    ("queued", "cancelled"),
    ("queued", "failed"),
    ("queued", "timed_out"),
    ("assigned", "running"),
    ("assigned", "queued"),
    ("assigned", "cancelled"),
    ("assigned", "failed"),
    ("assigned", "completed"),
    ("assigned", "timed_out"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "queued"),
    ("running", "cancelled"),
    ("running", "timed_out"),
}

AGENT_PAIRS = list(itertools.product(AgentState, repeat=2))
TASK_PAIRS = list(itertools.product(TaskStatus, repeat=2))


def test_state_values() -> None:
    assert [s.value for s in AgentState] == [
        "created",
        "starting",
        "running",
        "busy",
        "idle",
        "stopping",
        "stopped",
        "error",
        "failed",
    ]
    assert [s.value for s in TaskStatus] == [
        "pending",
        "queued",
        "assigned",
        "running",
        "completed",
        "failed",
        "cancelled",
        "timed_out",
    ]


@pytest.mark.parametrize(("src", "dst"), sorted(AGENT_EDGES))
def test_every_allowed_agent_transition(src: str, dst: str) -> None:
    assert check_agent_transition(AgentState(src), AgentState(dst)) is AgentState(dst)
    assert AGENT_TRANSITIONS.can(AgentState(src), AgentState(dst)) is True


@pytest.mark.parametrize(
    ("src", "dst"), [(a, b) for a, b in AGENT_PAIRS if (a.value, b.value) not in AGENT_EDGES]
)
def test_every_other_agent_transition_is_refused(src: AgentState, dst: AgentState) -> None:
    with pytest.raises(InvalidTransition) as caught:
        check_agent_transition(src, dst)
    assert (caught.value.machine, caught.value.from_state, caught.value.to_state) == (
        "agent",
        src,
        dst,
    )
    assert AGENT_TRANSITIONS.can(src, dst) is False


@pytest.mark.parametrize(("src", "dst"), sorted(TASK_EDGES))
def test_every_allowed_task_transition(src: str, dst: str) -> None:
    assert check_task_transition(TaskStatus(src), TaskStatus(dst)) is TaskStatus(dst)


@pytest.mark.parametrize(
    ("src", "dst"), [(a, b) for a, b in TASK_PAIRS if (a.value, b.value) not in TASK_EDGES]
)
def test_every_other_task_transition_is_refused(src: TaskStatus, dst: TaskStatus) -> None:
    with pytest.raises(InvalidTransition) as caught:
        check_task_transition(src, dst)
    assert (caught.value.machine, caught.value.from_state, caught.value.to_state) == (
        "task",
        src,
        dst,
    )


def test_allowed_lists_exactly_the_targets() -> None:
    assert AGENT_TRANSITIONS.allowed(AgentState.BUSY) == {
        AgentState.IDLE,
        AgentState.STOPPING,
        AgentState.ERROR,
        AgentState.FAILED,
    }
    assert AGENT_TRANSITIONS.allowed(AgentState.CREATED) == {AgentState.STARTING}
    assert TASK_TRANSITIONS.allowed(TaskStatus.PENDING) == {
        TaskStatus.QUEUED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
    }


def test_invalid_transition_message_and_type() -> None:
    with pytest.raises(InvalidTransition, match=r"^agent cannot go from 'stopped' to 'busy'$"):
        check_agent_transition(AgentState.STOPPED, AgentState.BUSY)
    with pytest.raises(
        InvalidTransition, match=r"^task cannot go from 'completed' to 'running'$"
    ) as caught:
        check_task_transition(TaskStatus.COMPLETED, TaskStatus.RUNNING)
    assert isinstance(caught.value, Conflict)
    assert isinstance(caught.value, RayvisorError)


def test_invalid_transition_pickles_with_its_attributes() -> None:
    error = InvalidTransition("task", TaskStatus.QUEUED, TaskStatus.COMPLETED)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is InvalidTransition
    assert (copy.machine, copy.from_state, copy.to_state) == ("task", "queued", "completed")
    assert str(copy) == "task cannot go from 'queued' to 'completed'"


def test_check_accepts_plain_strings_and_returns_the_enum() -> None:
    assert check_agent_transition("idle", "busy") is AgentState.BUSY  # type: ignore[arg-type]
    assert check_task_transition("queued", "assigned") is TaskStatus.ASSIGNED  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        check_agent_transition("idle", "sleeping")  # type: ignore[arg-type]


def test_terminal_task_statuses() -> None:
    terminal = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT}
    assert terminal == TERMINAL_TASK_STATUSES
    for status in TaskStatus:
        assert status.is_terminal is (status in terminal)
        if status.is_terminal:
            assert TASK_TRANSITIONS.allowed(status) == frozenset()
        else:
            assert TASK_TRANSITIONS.allowed(status)


def test_task_retry_path_folds_to_completed() -> None:
    path = [
        TaskStatus.QUEUED,
        TaskStatus.ASSIGNED,
        TaskStatus.RUNNING,
        TaskStatus.QUEUED,
        TaskStatus.ASSIGNED,
        TaskStatus.QUEUED,
        TaskStatus.ASSIGNED,
        TaskStatus.RUNNING,
        TaskStatus.COMPLETED,
    ]
    assert TASK_TRANSITIONS.fold(TaskStatus.PENDING, path) is TaskStatus.COMPLETED


def test_fold_agent_events() -> None:
    assert fold_agent_events([]) is AgentState.CREATED
    lifecycle = ["starting", "running", "busy", "idle", "busy", "idle", "stopping", "stopped"]
    assert fold_agent_events(lifecycle) is AgentState.STOPPED  # type: ignore[arg-type]
    assert fold_agent_events(["created", *lifecycle]) is AgentState.STOPPED  # type: ignore[list-item]
    restarted = [
        AgentState.STARTING,
        AgentState.RUNNING,
        AgentState.FAILED,
        AgentState.STARTING,
        AgentState.RUNNING,
        AgentState.ERROR,
        AgentState.IDLE,
    ]
    assert fold_agent_events(restarted) is AgentState.IDLE
    assert fold_agent_events(iter(restarted)) is AgentState.IDLE


def test_fold_agent_events_refuses_an_invalid_step() -> None:
    with pytest.raises(InvalidTransition) as caught:
        fold_agent_events([AgentState.STARTING, AgentState.RUNNING, AgentState.STOPPED])
    assert (caught.value.from_state, caught.value.to_state) == ("running", "stopped")
    with pytest.raises(InvalidTransition) as caught:
        fold_agent_events([AgentState.RUNNING])
    assert caught.value.from_state == AgentState.CREATED
    # Only a leading `created` is skipped.
    with pytest.raises(InvalidTransition):
        fold_agent_events([AgentState.STARTING, AgentState.CREATED])


def test_transitions_table_must_be_closed_and_without_loops() -> None:
    with pytest.raises(ValueError, match=r"^table:.*unknown"):
        Transitions("x", {AgentState.CREATED: {AgentState.STARTING}})
    with pytest.raises(ValueError, match=r"^table:.*itself"):
        Transitions("x", {AgentState.CREATED: {AgentState.CREATED}})
    with pytest.raises(ValueError, match=r"^table:.*no row"):
        Transitions.from_names("x", CircuitState, {"closed": "open", "open": "closed"})
    machine = Transitions.from_names(
        "circuit",
        CircuitState,
        {"closed": "open", "open": "half_open", "half_open": "closed open"},
    )
    assert machine.allowed(CircuitState.HALF_OPEN) == {CircuitState.CLOSED, CircuitState.OPEN}
    assert machine.fold(CircuitState.CLOSED, [CircuitState.OPEN]) is CircuitState.OPEN
