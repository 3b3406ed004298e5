"""Rate-limit shares across replicas (`serve.key_shares`), driven by hand as the replicas'
NATS exchange would, and the bad-key limit per client address (`serve.key_limits`)."""

from __future__ import annotations

import pytest

from runtime.models.enums import Scope
from runtime.models.records import ApiKey
from runtime.policies import TokenBucket
from serve.key_limits import BadKeyLimiter, client_of
from serve.key_shares import EVEN_PART, KeyRateLimits


def _key(rate_per_s: float, burst: int) -> ApiKey:
    return ApiKey(
        name="k", prefix="AAAAAAAA", key_hash="0" * 64, scopes=[Scope.READ],
        rate_per_s=rate_per_s, burst=burst,
    )  # fmt: skip


def _exchange(replicas: list[KeyRateLimits], now: float) -> None:
    """One interval: every replica reports its demand to the others."""
    reports = [(r.replica, r.tick(now)) for r in replicas]
    for r in replicas:
        for replica, demand in reports:
            r.heard(replica, demand, now)


def _admitted(limits: KeyRateLimits, key: ApiKey, now: float, n: int) -> int:
    return sum(limits.retry_after(key, now) is None for _ in range(n))


@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_replicas_together_admit_no_more_than_the_key_limit(replicas: int) -> None:
    key = _key(rate_per_s=2.0, burst=10)
    shares = [KeyRateLimits(replicas, interval_s=0.25) for _ in range(replicas)]
    admitted = 0
    for step in range(40):  # 10 s, every replica asked 12 times a second
        now = step * 0.25
        admitted += sum(_admitted(s, key, now, 3) for s in shares)
        _exchange(shares, now + 0.125)
    assert 10 + 2 * 9.75 - replicas <= admitted <= 10 + 2 * 9.75 + 1e-6


def test_a_key_whose_requests_reach_one_replica_gets_its_whole_limit_there() -> None:
    key = _key(rate_per_s=4.0, burst=4)
    busy, idle = KeyRateLimits(2), KeyRateLimits(2)
    assert _admitted(busy, key, 0.0, 10) == 2  # unknown demand: an even split at first
    _exchange([busy, idle], 0.25)
    most = 1 - EVEN_PART / 2  # 80%: the even part of the idle replica stays there
    assert busy.share(key.id, 0.25) == pytest.approx(most, abs=0.01)
    assert idle.share(key.id, 0.25) == pytest.approx(1 - most, abs=0.01)
    _exchange([busy, idle], 0.5)  # buckets are resized at the end of an interval
    assert _admitted(busy, key, 2.0, 10) == 3  # refilled at 3.2/s, to 3.2
    admitted = 0
    for step in range(9, 49):  # 10 s more at twice the rate, all on one replica
        admitted += _admitted(busy, key, step * 0.25, 2)
        _exchange([busy, idle], step * 0.25 + 0.1)
    assert 4 * 10 * most - 1 <= admitted <= 4 * 10 * most + 1


def test_unheard_replicas_leave_each_its_even_share() -> None:
    key = _key(rate_per_s=9.0, burst=9)
    alone = KeyRateLimits(3)  # NATS away: nothing heard from the other two
    for step in range(8):
        _admitted(alone, key, step * 0.25, 5)
        alone.tick(step * 0.25)
    assert alone.share(key.id, 2.0) == pytest.approx(1 / 3)
    assert _admitted(alone, key, 100.0, 10) == 3


def test_a_burst_below_the_replicas_still_admits_one_each() -> None:
    key = _key(rate_per_s=1.0, burst=1)
    assert [KeyRateLimits(3).retry_after(key, 0.0) for _ in range(3)] == [None] * 3


def test_a_changed_limit_takes_effect() -> None:
    limits, key = KeyRateLimits(2), _key(1.0, 2)
    assert limits.retry_after(key, 0.0) is None
    assert limits.retry_after(key, 0.0) == pytest.approx(2.0)  # a share of 0.5/s
    raised = key.model_copy(update={"rate_per_s": 100.0, "burst": 200})
    assert limits.retry_after(raised, 0.1) is None


def test_idle_full_buckets_are_forgotten() -> None:
    limits = KeyRateLimits(2)
    limits.retry_after(_key(1.0, 2), 0.0)
    for step in range(1, 40):
        limits.tick(step * 0.25)
    assert limits.tick(10.0) == {} and not limits._buckets


def test_bad_key_tokens_are_given_back_and_addresses_forgotten_oldest_first() -> None:
    limiter = BadKeyLimiter(rate_per_s=1.0, burst=2, max_clients=3)
    assert limiter.reserve("a", 0.0) is None
    limiter.give_back("a", 0.0)
    assert [limiter.reserve("a", 0.0) for _ in range(3)] == [None, None, 1.0]
    for client in ("b", "c", "d"):
        limiter.reserve(client, 0.0)
    assert len(limiter) == 3 and limiter.refused == 1
    assert limiter.reserve("a", 0.0) is None  # forgotten: a new bucket


def test_token_bucket_resize_keeps_the_tokens_held() -> None:
    bucket = TokenBucket(1.0, 4)
    assert bucket.try_acquire(0.0, tokens=3)
    bucket.resize(0.0, 2.0, 8)
    assert bucket.available(0.0) == 1.0 and bucket.available(1.0) == 3.0
    bucket.resize(1.0, 1.0, 2)
    assert bucket.available(1.0) == 2.0


def test_token_bucket_give_back_never_exceeds_burst() -> None:
    bucket = TokenBucket(1.0, 2)
    bucket.give_back(0.0)
    assert bucket.available(0.0) == 2.0
    assert bucket.try_acquire(0.0) and bucket.try_acquire(0.0)
    bucket.give_back(0.0)
    assert bucket.available(0.0) == 1.0


@pytest.mark.parametrize(
    ("host", "unit"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:1::1", "2001:db8:1:1::/64"),
        ("2001:db8:1:1:ffff::3", "2001:db8:1:1::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
        ("", "unknown"),
        ("testclient", "testclient"),
    ],
)
def test_clients_are_limited_by_address_or_ipv6_64(host: str | None, unit: str) -> None:
    assert client_of(host) == unit
