"""API keys on every route but health: who is calling, may they, and how fast.

- A key is sent as `Authorization: Bearer rv_...`; only its SHA-256 is stored, compared in
  constant time (`runtime.store.api_keys.find`). No key or an unknown/revoked one is 401.
- Scopes rank `read` < `write` < `admin`; a key's best scope must reach the route's, else 403.
- Each key has a token bucket (`rate_per_s`, `burst`) for the cluster, each replica holding
  a share by demand (`serve.key_shares`); an empty bucket is 429 with `Retry-After`.
- A good key is trusted for `key_cache_s` (2 s by default), so a revocation takes effect
  within that time and the database sees one lookup per key per period, not one per request.
  Unknown keys are remembered as long, apart (at most `max_unknown`, oldest forgotten
  first), so a flood of distinct bad keys never pushes a good key out. A malformed key is
  refused without a lookup.
- At most `max_lookups` (4) lookups run at once per replica, so a flood of unknown keys
  from many addresses holds a few of the pool's connections, not all.
- A lookup that may find nothing costs a token of the client address's bad-key bucket
  (`serve.key_limits.BadKeyLimiter`), given back when the key is found: an address that
  sent too many unknown keys gets 429 with `Retry-After` before any database work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections import OrderedDict
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from runtime.bus import Bus
from runtime.config import Settings
from runtime.models.enums import Scope
from runtime.models.records import ApiKey
from runtime.store import api_keys
from serve.key_limits import BadKeyLimiter, client_of
from serve.key_shares import KeyRateLimits

__all__ = ["Authenticator", "TooManyBadKeys", "allows", "authenticate", "require"]

_RANK = {Scope.READ: 1, Scope.WRITE: 2, Scope.ADMIN: 3}


def allows(scopes: list[Scope], needed: Scope) -> bool:
    """Whether a key with `scopes` may do what needs `needed` (admin > write > read)."""
    return max((_RANK[Scope(s)] for s in scopes), default=0) >= _RANK[needed]


class TooManyBadKeys(Exception):
    """The client address sent too many unknown keys: nothing was looked up."""

    def __init__(self, client: str, retry_after_s: float) -> None:
        super().__init__(f"too many unknown API keys from {client}")
        self.client = client
        self.retry_after_s = retry_after_s


class Authenticator:
    """Key lookups behind a cache of good keys, a bounded cache of unknown ones and a
    bad-key limit per client address; and each key's rate limit."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        cache_s: float = 2.0,
        *,
        replicas: int = 1,
        bad_key_rate_per_s: float = 1.0,
        bad_key_burst: int = 20,
        max_unknown: int = 10_000,
        max_known: int = 100_000,
        max_lookups: int = 4,
    ) -> None:
        self.pool = pool
        self.cache_s = cache_s
        self.max_unknown = max_unknown
        self.max_known = max_known
        self.bad_keys = BadKeyLimiter(bad_key_rate_per_s, bad_key_burst, replicas)
        self.limits = KeyRateLimits(replicas)
        self.lookups = 0
        """Lookups in PostgreSQL so far (each a query)."""
        self.peak_lookups = 0
        """The most lookups in flight at once (at most `max_lookups`)."""
        self._lookup_slots = asyncio.Semaphore(max_lookups)
        self._in_flight = 0
        self._known: dict[str, tuple[float, ApiKey]] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._background: set[asyncio.Task[Any]] = set()
        self._flights: dict[str, asyncio.Future[ApiKey | None]] = {}
        self._sharing: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, pool: asyncpg.Pool, settings: Settings, bus: Bus | None = None
    ) -> Authenticator:
        """As configured: the cache period, the bad-key limit, the replicas sharing limits
        (exchanging their demand over `bus`, when there are several)."""
        http = settings.http
        auth = cls(
            pool,
            http.key_cache_s,
            replicas=http.replicas,
            bad_key_rate_per_s=http.bad_key_rate_per_s,
            bad_key_burst=http.bad_key_burst,
        )
        if bus is not None and http.replicas > 1:
            subject = f"ingress.{settings.stream_name}.demand"
            auth._sharing = asyncio.get_running_loop().create_task(auth.limits.run(bus, subject))
        return auth

    async def close(self) -> None:
        """Stop exchanging demand with the other replicas."""
        if self._sharing is not None:
            self._sharing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sharing

    async def key_for(self, token: str, host: str | None = None) -> ApiKey | None:
        """The live key `token` is, or None; `host` is the client's address. Raises
        `TooManyBadKeys` instead of looking up for an address past its bad-key limit."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        known = self._known.get(digest)
        if known is not None and known[0] > now:
            return known[1]
        unknown = self._unknown.get(digest)
        if (unknown is not None and unknown > now) or not api_keys.is_well_formed(token):
            return None
        client = client_of(host)
        flight = self._flights.get(digest)
        if flight is None:  # one lookup per key at a time: a good key's burst of requests
            # (say, as its cache entry expires) costs one query and one bad-key token
            flight = asyncio.ensure_future(self._look_up(token, digest, client, now))
            self._flights[digest] = flight
            flight.add_done_callback(lambda _: self._flights.pop(digest, None))
        return await asyncio.shield(flight)

    async def _look_up(self, token: str, digest: str, client: str, now: float) -> ApiKey | None:
        wait_s = self.bad_keys.reserve(client, now)
        if wait_s is not None:
            raise TooManyBadKeys(client, wait_s)
        try:
            key = await self._find(token)
        except BaseException:  # PostgreSQL down (a 503): no sign of a bad key
            self.bad_keys.give_back(client, time.monotonic())
            raise
        now = time.monotonic()
        if key is None:
            self._known.pop(digest, None)
            self._remember_unknown(digest, now)
            return None
        self.bad_keys.give_back(client, now)
        self._unknown.pop(digest, None)
        self._remember_known(digest, key, now)
        task = asyncio.get_running_loop().create_task(api_keys.touch(self.pool, key.id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return key

    async def _find(self, token: str) -> ApiKey | None:
        """One lookup, at most `max_lookups` at once: keys from many addresses (each within
        its limit) take a few of the pool's connections, never all of them."""
        async with self._lookup_slots:
            self.lookups += 1
            self._in_flight += 1
            self.peak_lookups = max(self.peak_lookups, self._in_flight)
            try:
                return await api_keys.find(self.pool, token)
            finally:
                self._in_flight -= 1

    def retry_after(self, key: ApiKey) -> float | None:
        """Take a token for one request; None if admitted, else seconds until one is due."""
        return self.limits.retry_after(key, time.monotonic())

    def statistics(self) -> dict[str, int]:
        """Lookups made (and most at once), keys cached (good, unknown), addresses tracked
        and refused."""
        return {
            "lookups": self.lookups,
            "peak_lookups": self.peak_lookups,
            "known": len(self._known),
            "unknown": len(self._unknown),
            "clients": len(self.bad_keys),
            "refused": self.bad_keys.refused,
        }

    def _remember_unknown(self, digest: str, now: float) -> None:
        if self.cache_s <= 0:
            return
        self._unknown[digest] = now + self.cache_s
        self._unknown.move_to_end(digest)
        while len(self._unknown) > self.max_unknown:
            self._unknown.popitem(last=False)

    def _remember_known(self, digest: str, key: ApiKey, now: float) -> None:
        if self.cache_s <= 0:
            return
        if len(self._known) >= self.max_known:  # only keys PostgreSQL holds get here
            self._known = {d: entry for d, entry in self._known.items() if entry[0] > now}
            while len(self._known) >= self.max_known:
                del self._known[next(iter(self._known))]
        self._known[digest] = (now + self.cache_s, key)


_bearer = HTTPBearer(auto_error=False, description="An API key: `rv_<prefix>_<secret>`.")


async def authenticate(
    auth: Authenticator, token: str | None, host: str | None, needed: Scope
) -> ApiKey:
    """The key `token` is, if it is live, has `needed` (or a higher scope) and is within its
    rate limit; else the HTTPException (401, 403, 429) saying why. Shared by the routes
    (`require`) and the MCP endpoint."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if token is None:
        raise HTTPException(
            401, "an API key is required (Authorization: Bearer ...)", headers=challenge
        )
    try:
        key = await auth.key_for(token, host)
    except TooManyBadKeys as refused:
        raise HTTPException(
            429,
            f"{refused}: wait before trying another key",
            headers={"Retry-After": str(max(1, math.ceil(refused.retry_after_s)))},
        ) from None
    if key is None:
        raise HTTPException(401, "the API key is unknown or revoked", headers=challenge)
    if not allows(key.scopes, needed):
        raise HTTPException(
            403,
            f"this key's scopes {[str(s) for s in key.scopes]} do not include {needed.value}",
        )
    wait_s = auth.retry_after(key)
    if wait_s is not None:
        raise HTTPException(
            429,
            f"rate limit of key {key.prefix}: {key.rate_per_s}/s, burst {key.burst}"
            + auth.limits.describe_share(key),
            headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
        )
    return key


def require(needed: Scope) -> Any:
    """A dependency admitting a caller whose key has `needed` (or a higher scope); the
    OpenAPI document lists `needed` as the operation's security scope."""

    async def caller(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        return await authenticate(
            request.app.state.system.auth,
            credentials.credentials if credentials is not None else None,
            request.client.host if request.client else None,
            needed,
        )

    return Security(caller, scopes=[needed.value])
