"""Each API key's rate limit across the ingress replicas, shared out by demand.

A key's limit (`rate_per_s`, `burst`) is the cluster's. Each replica keeps one token bucket
per key holding its share of the limit, and every `interval_s` (0.25 s) publishes on core
NATS how many requests of each key it has been receiving (`ingress.<stream>.demand`, a
moving average over about `horizon_s`, 2 s). A replica's share of a key is `EVEN_PART`
(40%) of the limit split evenly, plus the rest in proportion to its demand over everyone's
(a demand being that average plus a little, `_IDLE_WEIGHT`), so:

- requests spread over the replicas split the limit as they spread; a key whose requests
  all reach one replica (Serve's router prefers the least loaded replica, so under a flood
  they may) gets most of its limit there (80% with two replicas) from the next interval
  on, and a replica they move to holds 20% (with two) while its share grows;
- with consistent reports the shares add up to exactly the limit; reports in flight move
  it by what changed within an interval, and a bucket that grows gains no tokens;
- a peer not heard from for 3 intervals (NATS down, just started) weighs as much as this
  replica: with no NATS each replica holds `1 / replicas` of every limit, never more.

On the hot path: a counter and the bucket. Pure but for `run`: `now` comes from the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter
from typing import Any
from uuid import UUID, uuid4

from runtime.models.records import ApiKey
from runtime.policies import TokenBucket

__all__ = ["EVEN_PART", "KeyRateLimits"]

_log = logging.getLogger(__name__)
_IDLE_WEIGHT = 0.05
"""A replica's weight for a key it has no requests of: new keys start split evenly."""
EVEN_PART = 0.4
"""The part of every limit split evenly whatever the demand: a replica the router suddenly
sends a key's requests to holds `EVEN_PART / replicas` of it (20% with two) while its
share grows; the rest follows demand, so one replica may hold up to 80% of it (with two)."""
_STALE_INTERVALS = 3


class KeyRateLimits:
    """This replica's share of each key's token bucket."""

    def __init__(
        self,
        replicas: int = 1,
        replica: str | None = None,
        interval_s: float = 0.25,
        horizon_s: float = 2.0,
    ) -> None:
        self.replicas = replicas
        self.replica = replica or uuid4().hex
        self.interval_s = interval_s
        self._decay = math.exp(-interval_s / horizon_s)
        self._buckets: dict[UUID, TokenBucket] = {}
        self._limits: dict[UUID, tuple[float, float]] = {}
        self._counting: Counter[UUID] = Counter()
        self._demand: dict[UUID, float] = {}
        """This replica's requests per interval, a moving average."""
        self._peers: dict[str, tuple[float, dict[UUID, float]]] = {}
        """Each other replica's last report: (when heard, its demand)."""

    def retry_after(self, key: ApiKey, now: float) -> float | None:
        """Take a token for one request of `key`; None if admitted, else seconds until one
        is due."""
        if self.replicas > 1:
            self._counting[key.id] += 1
        bucket = self._buckets.get(key.id)
        limit = (key.rate_per_s, float(key.burst))
        if bucket is None or self._limits[key.id] != limit:  # new, or its limit changed
            self._limits[key.id] = limit
            bucket = self._buckets[key.id] = TokenBucket(*self._sized(key.id, now))
        if bucket.try_acquire(now):
            return None
        return bucket.retry_after(now)

    def describe_share(self, key: ApiKey) -> str:
        """What part of `key`'s limit this replica holds, for a refusal's detail."""
        bucket = self._buckets.get(key.id)
        if self.replicas <= 1 or bucket is None:
            return ""
        share = bucket.rate_per_s / key.rate_per_s
        return f" (this replica holds {share:.0%} of it, as {self.replicas} share it by demand)"

    def share(self, key_id: UUID, now: float) -> float:
        """This replica's fraction of `key_id`'s limit."""
        if self.replicas <= 1:
            return 1.0
        mine = self._demand.get(key_id, 0.0) + _IDLE_WEIGHT
        fresh = [
            demand
            for heard_at, demand in self._peers.values()
            if now - heard_at <= _STALE_INTERVALS * self.interval_s
        ]
        others = sum(demand.get(key_id, 0.0) + _IDLE_WEIGHT for demand in fresh)
        unheard = max(0, self.replicas - 1 - len(fresh))
        by_demand = mine / (mine * (1 + unheard) + others)
        return EVEN_PART / self.replicas + (1 - EVEN_PART) * by_demand

    def tick(self, now: float) -> dict[str, float]:
        """End an interval: resize every bucket to its share, as the demand last reported
        (this replica's, and the others' since) has it; forget idle full buckets; fold
        this interval's requests into the demand and return it, to publish."""
        self._peers = {
            replica: report
            for replica, report in self._peers.items()
            if now - report[0] <= _STALE_INTERVALS * self.interval_s
        }
        counted, self._counting = self._counting, Counter()
        for key_id, bucket in list(self._buckets.items()):
            idle = key_id not in self._demand and key_id not in counted
            if idle and bucket.available(now) >= bucket.burst:
                del self._buckets[key_id], self._limits[key_id]
                continue
            bucket.resize(now, *self._sized(key_id, now))
        demand = {key_id: value * self._decay for key_id, value in self._demand.items()}
        for key_id, n in counted.items():
            demand[key_id] = demand.get(key_id, 0.0) + n
        self._demand = {key_id: value for key_id, value in demand.items() if value >= 0.01}
        return {str(key_id): round(value, 3) for key_id, value in self._demand.items()}

    def heard(self, replica: str, demand: dict[str, float], now: float) -> None:
        """Another replica's report (this replica's own is ignored)."""
        if replica != self.replica:
            self._peers[replica] = (now, {UUID(k): float(v) for k, v in demand.items()})

    def _sized(self, key_id: UUID, now: float) -> tuple[float, float]:
        rate, burst = self._limits[key_id]
        share = self.share(key_id, now)
        return rate * share, max(1.0, burst * share)

    async def run(self, bus: Any, subject: str) -> None:
        """Exchange demand with the other replicas on `subject` every interval, until
        cancelled; NATS being away leaves each replica its `1 / replicas`."""

        async def receive(msg: Any) -> None:
            try:
                report = json.loads(msg.data)
                self.heard(report["replica"], report["demand"], time.monotonic())
            except (ValueError, KeyError, TypeError, AttributeError):
                _log.debug("ignored a malformed demand report on %s", subject)

        subscription = await bus.nc.subscribe(subject, cb=receive)
        try:
            while True:
                await asyncio.sleep(self.interval_s)  # the period, not a wait for anything
                report = {"replica": self.replica, "demand": self.tick(time.monotonic())}
                try:
                    await bus.nc.publish(subject, json.dumps(report).encode())
                except Exception as exc:  # NATS away: the others count this one unheard
                    _log.debug("demand report not sent: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
