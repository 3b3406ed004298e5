"""Unknown API keys per client address: a key PostgreSQL does not know costs its sender.

`BadKeyLimiter` keeps a token bucket per client address (IPv6: per /64) that each lookup of
a key takes a token from. A token is taken before the lookup and given back when the key is
found, so an address with an empty bucket is refused (429) before any database work, while
a good key from another address is not touched. Each replica holds `1 / replicas` of the
limit (at least one token), so the replicas together allow what is configured. At most
`max_clients` addresses are tracked, the least recently refused forgotten first. (Each
key's own rate limit is `serve.key_shares`.)
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from runtime.policies import TokenBucket

__all__ = ["BadKeyLimiter", "client_of"]


def client_of(host: str | None) -> str:
    """The unit a client address is limited by: the address, or its /64 for IPv6 (one
    host usually holds a whole /64); `unknown` when the server was not told."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


class BadKeyLimiter:
    """How many unknown keys each client address may have looked up (`burst` at once,
    `rate_per_s` sustained, across the `replicas`)."""

    def __init__(
        self, rate_per_s: float, burst: int, replicas: int = 1, max_clients: int = 10_000
    ) -> None:
        self.rate_per_s, self.burst = rate_per_s / replicas, max(1.0, burst / replicas)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.refused = 0

    def reserve(self, client: str, now: float) -> float | None:
        """Take a token before looking a key up for `client`; None if taken, else the
        seconds until one is due (the lookup must not happen)."""
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate_per_s, self.burst)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        if bucket.try_acquire(now):
            return None
        self._buckets.move_to_end(client)
        self.refused += 1
        return bucket.retry_after(now)

    def give_back(self, client: str, now: float) -> None:
        """The key looked up was good: return the token `reserve` took."""
        bucket = self._buckets.get(client)
        if bucket is not None:
            bucket.give_back(now)

    def __len__(self) -> int:
        return len(self._buckets)
