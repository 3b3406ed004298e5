"""API keys on every route but health: who is calling, may they, and how fast.

- A key is sent as `Authorization: Bearer rv_...`; only its SHA-256 is stored, compared in
  constant time (`runtime.store.api_keys.find`). No key or an unknown/revoked one is 401.
- Scopes rank `read` < `write` < `admin`; a key's best scope must reach the route's, else 403.
- Each key has a token bucket (`rate_per_s`, `burst`) per replica; an empty bucket is 429
  with `Retry-After`.
- A checked key is trusted for `key_cache_s` (2 s by default), so a revocation takes
  effect within that time and the database sees one lookup per key per period, not one per
  request.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from runtime.models.enums import Scope
from runtime.models.records import ApiKey
from runtime.policies import TokenBucket
from runtime.store import api_keys

__all__ = ["Authenticator", "allows", "require"]

_RANK = {Scope.READ: 1, Scope.WRITE: 2, Scope.ADMIN: 3}


def allows(scopes: list[Scope], needed: Scope) -> bool:
    """Whether a key with `scopes` may do what needs `needed` (admin > write > read)."""
    return max((_RANK[Scope(s)] for s in scopes), default=0) >= _RANK[needed]


class Authenticator:
    """Key lookups with a short cache, and one token bucket per key."""

    def __init__(self, pool: asyncpg.Pool, cache_s: float = 2.0) -> None:
        self.pool = pool
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._buckets: dict[Any, TokenBucket] = {}
        self._background: set[asyncio.Task[Any]] = set()

    async def key_for(self, token: str) -> ApiKey | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        key = await api_keys.find(self.pool, token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self.cache_s, key)
        if key is not None:
            task = asyncio.get_running_loop().create_task(api_keys.touch(self.pool, key.id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return key

    def retry_after(self, key: ApiKey) -> float | None:
        """Take a token for one request; None if admitted, else seconds until one is due."""
        bucket = self._buckets.get(key.id)
        if bucket is None or (bucket.rate_per_s, bucket.burst) != (key.rate_per_s, key.burst):
            bucket = self._buckets[key.id] = TokenBucket(key.rate_per_s, key.burst)
        now = time.monotonic()
        if bucket.try_acquire(now):
            return None
        return bucket.retry_after(now)


_bearer = HTTPBearer(auto_error=False, description="An API key: `rv_<prefix>_<secret>`.")


def require(needed: Scope) -> Any:
    """A dependency admitting a caller whose key has `needed` (or a higher scope); the
    OpenAPI document lists `needed` as the operation's security scope."""

    async def caller(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise HTTPException(
                401, "an API key is required (Authorization: Bearer ...)", headers=challenge
            )
        auth: Authenticator = request.app.state.system.auth
        key = await auth.key_for(credentials.credentials)
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
                f"rate limit of key {key.prefix}: {key.rate_per_s}/s, burst {key.burst}",
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
        return key

    return Security(caller, scopes=[needed.value])
