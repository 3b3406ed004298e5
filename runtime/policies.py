"""Pure policies: backoff, restart intensity, circuit breaker, rate limiter.

Nothing here does I/O, sleeps, reads a clock or knows Ray, asyncpg, NATS or pydantic. Every
method whose answer depends on time takes `now` (seconds on a monotonic clock) from the
caller, as OTP's `add_restart/3` does, so supervisors, hosts and tests drive time themselves
(tests pass plain floats). Guarantees:

- `Backoff.next_delay` is `min_s * 2**n` capped at `max_s`, times a factor drawn from
  `[1 - jitter, 1 + jitter]`, so it never exceeds `max_s * (1 + jitter)`; `n` restarts from
  0 once the child has stayed up `reset_after_s` since its last `started`.
- `RestartIntensity.add_restart` keeps the restarts at or after `now - period_s` and answers
  False as soon as they number more than `max_restarts` (OTP's intensity).
- `CircuitBreaker` opens after `failure_threshold` consecutive failures, half-opens after its
  timeout, lets exactly one probe through while half-open, closes on a success and reopens
  on a failure with the timeout multiplied (capped). `poll` reports each half-opening once.
- `TokenBucket` starts full, holds at most `burst` tokens and refills at `rate_per_s`.
- Invalid constructor arguments raise `ValueError` naming the argument.
"""

from __future__ import annotations

import math
import random
from collections import deque
from enum import StrEnum

__all__ = [
    "Backoff",
    "CircuitBreaker",
    "CircuitState",
    "RestartIntensity",
    "TokenBucket",
    "require",
    "retry_delay",
]


def require(ok: bool, argument: str, reason: str) -> None:
    """Raise the one `ValueError` shape every constructor uses: the argument, then why."""
    if not ok:
        raise ValueError(f"{argument}: {reason}")


def _capped_exponential(base_s: float, n: int, cap_s: float) -> float:
    """`base_s * 2**n` capped at `cap_s`, without overflowing for a large `n`."""
    if base_s <= 0:
        return 0.0
    if base_s >= cap_s:
        return cap_s
    doublings_to_cap = math.ceil(math.log2(cap_s / base_s))
    return min(base_s * 2.0 ** min(n, doublings_to_cap), cap_s)


# --- backoff ---------------------------------------------------------------------------------


class Backoff:
    """Delay before each restart of one child (Akka's BackoffSupervisor).

    Call `started(now)` whenever the child starts and `next_delay(now)` when it has exited and
    is to be restarted. The uptime since the last `started` is used once: a child that stayed
    up `reset_after_s` or longer starts the sequence over, so a crash after a long healthy
    run waits `min_s` again. `min_s == 0` means restarts never wait.
    """

    def __init__(
        self,
        min_s: float,
        max_s: float,
        jitter: float = 0.2,
        reset_after_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        require(min_s >= 0, "min_s", f"must be >= 0, got {min_s}")
        require(max_s >= min_s, "max_s", f"must be >= min_s ({min_s}), got {max_s}")
        require(0 <= jitter < 1, "jitter", f"must be in [0, 1), got {jitter}")
        require(reset_after_s >= 0, "reset_after_s", f"must be >= 0, got {reset_after_s}")
        self.min_s = min_s
        self.max_s = max_s
        self.jitter = jitter
        self.reset_after_s = reset_after_s
        self._rng = rng if rng is not None else random.Random()
        self._attempts = 0
        self._started_at: float | None = None

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset: the `n` of the next `min_s * 2**n`."""
        return self._attempts

    def started(self, now: float) -> None:
        """Record that the child (re)started at `now`; its uptime may reset the sequence."""
        self._started_at = now

    def next_delay(self, now: float) -> float:
        """Seconds to wait before the next restart; counts one attempt."""
        if self._started_at is not None and now - self._started_at >= self.reset_after_s:
            self._attempts = 0
        self._started_at = None
        base = _capped_exponential(self.min_s, self._attempts, self.max_s)
        self._attempts += 1
        if self.jitter == 0 or base == 0:
            return base
        factor = self._rng.uniform(1 - self.jitter, 1 + self.jitter)
        return min(base * factor, self.max_s * (1 + self.jitter))

    def reset(self) -> None:
        """Start the sequence over, as after a healthy period."""
        self._attempts = 0
        self._started_at = None


def retry_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Deterministic wait before retrying a task after a `TransientError`.

    `attempt` is the attempt that failed (1 for the first): `base_s * 2**(attempt - 1)`,
    capped at `max_s`. No jitter, so the TaskManager can store and show the retry time.
    """
    require(attempt >= 1, "attempt", f"must be >= 1, got {attempt}")
    require(base_s >= 0, "base_s", f"must be >= 0, got {base_s}")
    require(max_s >= base_s, "max_s", f"must be >= base_s ({base_s}), got {max_s}")
    return _capped_exponential(base_s, attempt - 1, max_s)


# --- restart intensity -----------------------------------------------------------------------


class RestartIntensity:
    """At most `max_restarts` restarts in any `period_s` (OTP's intensity and period).

    When `add_restart` answers False the supervisor has exhausted its intensity and escalates
    or circuit-breaks, as its spec says.
    """

    def __init__(self, max_restarts: int, period_s: float) -> None:
        require(max_restarts >= 0, "max_restarts", f"must be >= 0, got {max_restarts}")
        require(period_s > 0, "period_s", f"must be > 0, got {period_s}")
        self.max_restarts = max_restarts
        self.period_s = period_s
        self._restarts: deque[float] = deque()

    def add_restart(self, now: float) -> bool:
        """Record a restart at `now`; True while still within intensity, False once exceeded."""
        self._drop_before(now - self.period_s)
        self._restarts.append(now)
        return len(self._restarts) <= self.max_restarts

    def restarts_in_window(self, now: float) -> int:
        """Restarts at or after `now - period_s`; does not change the record."""
        threshold = now - self.period_s
        return sum(1 for t in self._restarts if t >= threshold)

    def reset(self) -> None:
        """Forget every restart, as a freshly started supervisor does."""
        self._restarts.clear()

    def _drop_before(self, threshold: float) -> None:
        while self._restarts and self._restarts[0] < threshold:
            self._restarts.popleft()


# --- circuit breaker -------------------------------------------------------------------------


class CircuitState(StrEnum):
    """Where a `CircuitBreaker` stands; the values appear in `circuit_*` supervisor events."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops restarting (or calling) what keeps failing, then probes it once in a while.

    closed --threshold consecutive failures--> open --timeout--> half_open
    half_open --success--> closed (timeout back to reset_timeout_s)
    half_open --failure--> open (timeout * multiplier, at most max_reset_timeout_s)

    While open nothing is allowed; while half-open exactly one probe is (`try_acquire_probe`),
    and its caller must report the outcome with `record_success` or `record_failure`.
    Successes reported while open (late results of earlier work) are ignored.
    """

    def __init__(
        self,
        failure_threshold: int,
        reset_timeout_s: float,
        max_reset_timeout_s: float,
        multiplier: float = 2.0,
    ) -> None:
        require(
            failure_threshold >= 1, "failure_threshold", f"must be >= 1, got {failure_threshold}"
        )
        require(reset_timeout_s >= 0, "reset_timeout_s", f"must be >= 0, got {reset_timeout_s}")
        require(
            max_reset_timeout_s >= reset_timeout_s,
            "max_reset_timeout_s",
            f"must be >= reset_timeout_s ({reset_timeout_s}), got {max_reset_timeout_s}",
        )
        require(multiplier >= 1, "multiplier", f"must be >= 1, got {multiplier}")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.max_reset_timeout_s = max_reset_timeout_s
        self.multiplier = multiplier
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._timeout = reset_timeout_s
        self._probe_taken = False
        self._half_open_reported = False

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def open_timeout_s(self) -> float:
        """How long the current (or next) opening lasts before half-opening."""
        return self._timeout

    @property
    def retry_at(self) -> float | None:
        """When an open circuit half-opens; None unless it was open at the last call."""
        if self._state is CircuitState.OPEN:
            return self._opened_at + self._timeout
        return None

    def state_at(self, now: float) -> CircuitState:
        """The state at `now`, counting an expired open timeout as half-open; changes nothing."""
        if self._state is CircuitState.OPEN and now >= self._opened_at + self._timeout:
            return CircuitState.HALF_OPEN
        return self._state

    def poll(self, now: float) -> CircuitState | None:
        """HALF_OPEN the first time the circuit is seen half-open since it opened, else None."""
        self._advance(now)
        if self._state is CircuitState.HALF_OPEN and not self._half_open_reported:
            self._half_open_reported = True
            return CircuitState.HALF_OPEN
        return None

    def record_failure(self, now: float) -> CircuitState:
        """Count a failure; opens at the threshold, and a failed probe reopens for longer."""
        self._advance(now)
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN:
            self._open(now, min(self._timeout * self.multiplier, self.max_reset_timeout_s))
        elif self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold:
            self._open(now, self.reset_timeout_s)
        return self._state

    def record_success(self, now: float) -> CircuitState:
        """A success closes a half-open circuit and clears the failure count when closed."""
        self._advance(now)
        if self._state is CircuitState.HALF_OPEN:
            self._state = CircuitState.CLOSED
            self._timeout = self.reset_timeout_s
            self._failures = 0
        elif self._state is CircuitState.CLOSED:
            self._failures = 0
        return self._state

    def allows_work(self, now: float) -> bool:
        """True when closed, or half-open with the probe not yet taken; changes nothing."""
        state = self.state_at(now)
        if state is CircuitState.HALF_OPEN:
            return not self._probe_taken
        return state is CircuitState.CLOSED

    def try_acquire_probe(self, now: float) -> bool:
        """Take the single half-open probe: True once per half-opening, else False."""
        self._advance(now)
        if self._state is CircuitState.HALF_OPEN and not self._probe_taken:
            self._probe_taken = True
            return True
        return False

    def try_acquire(self, now: float) -> bool:
        """May one unit of work go ahead now: always when closed, the probe when half-open."""
        if self.state_at(now) is CircuitState.CLOSED:
            return True
        return self.try_acquire_probe(now)

    def _advance(self, now: float) -> None:
        self._state = self.state_at(now)

    def _open(self, now: float, timeout_s: float) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = now
        self._timeout = timeout_s
        self._probe_taken = False
        self._half_open_reported = False


# --- rate limiter ----------------------------------------------------------------------------

_EPSILON = 1e-9
"""Slack for float refill, so waiting exactly `retry_after` is always enough."""


class TokenBucket:
    """At most `burst` at once, `rate_per_s` sustained. Starts full. A fractional `burst`
    (a share of a limit) holds that many tokens; a request takes one."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        require(rate_per_s > 0, "rate_per_s", f"must be > 0, got {rate_per_s}")
        require(burst >= 1, "burst", f"must be >= 1, got {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._updated_at: float | None = None

    def available(self, now: float) -> float:
        """Tokens available at `now`; changes nothing."""
        if self._updated_at is None:
            return self._tokens
        elapsed = max(0.0, now - self._updated_at)
        return min(float(self.burst), self._tokens + elapsed * self.rate_per_s)

    def try_acquire(self, now: float, tokens: float = 1.0) -> bool:
        """Take `tokens` if they are there; never waits."""
        self._check_tokens(tokens)
        self._refill(now)
        if self._tokens + _EPSILON < tokens:
            return False
        self._tokens = max(0.0, self._tokens - tokens)
        return True

    def resize(self, now: float, rate_per_s: float, burst: float) -> None:
        """Change the limit, keeping the tokens held (at most the new `burst`)."""
        require(rate_per_s > 0, "rate_per_s", f"must be > 0, got {rate_per_s}")
        require(burst >= 1, "burst", f"must be >= 1, got {burst}")
        self._refill(now)
        self.rate_per_s, self.burst = rate_per_s, burst
        self._tokens = min(float(burst), self._tokens)

    def give_back(self, now: float, tokens: float = 1.0) -> None:
        """Return `tokens` taken for something that did not happen (never above `burst`)."""
        self._check_tokens(tokens)
        self._refill(now)
        self._tokens = min(float(self.burst), self._tokens + tokens)

    def retry_after(self, now: float, tokens: float = 1.0) -> float:
        """Seconds from `now` until `tokens` are available (0.0 when they already are)."""
        self._check_tokens(tokens)
        deficit = tokens - self.available(now)
        return 0.0 if deficit <= _EPSILON else deficit / self.rate_per_s

    def _refill(self, now: float) -> None:
        self._tokens = self.available(now)
        if self._updated_at is None or now > self._updated_at:
            self._updated_at = now

    def _check_tokens(self, tokens: float) -> None:
        require(0 < tokens <= self.burst, "tokens", f"must be in (0, {self.burst}], got {tokens}")
