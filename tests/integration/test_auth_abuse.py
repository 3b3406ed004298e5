"""The authenticator under abuse, against real PostgreSQL: a client address sending unknown
keys is stopped before the database, and a flood of distinct bad keys evicts no good key.
`Authenticator.lookups` counts the queries it made."""

from __future__ import annotations

import asyncio
import secrets
import time

import asyncpg
import pytest

from runtime.models.enums import Scope
from runtime.store import api_keys
from serve.auth import Authenticator, TooManyBadKeys

pytestmark = pytest.mark.integration


def _unknown_key() -> str:
    """Well formed (so only PostgreSQL can say it is unknown), and in no table."""
    return f"rv_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


async def test_an_address_past_its_bad_key_limit_is_refused_before_any_lookup(
    pool: asyncpg.Pool,
) -> None:
    _, good = await api_keys.create(pool, "abuse-good", [Scope.READ])
    auth = Authenticator(pool, 60, bad_key_burst=5, bad_key_rate_per_s=0.01)
    for _ in range(5):
        assert await auth.key_for(_unknown_key(), "203.0.113.7") is None
    assert auth.lookups == 5
    for _ in range(20):
        with pytest.raises(TooManyBadKeys) as refused:
            await auth.key_for(_unknown_key(), "203.0.113.7")
        assert refused.value.retry_after_s > 1
    assert auth.lookups == 5  # nothing reached PostgreSQL
    # a good key from another address is looked up and served as ever
    found = await auth.key_for(good, "198.51.100.1")
    assert found is not None and found.name == "abuse-good"
    # ... and, once cached, even from the refused address (the cache comes first)
    assert await auth.key_for(good, "203.0.113.7") == found
    # the same bad key again costs nothing: it is remembered as unknown
    bad = _unknown_key()
    assert await auth.key_for(bad, "198.51.100.2") is None
    lookups = auth.lookups
    assert await auth.key_for(bad, "198.51.100.2") is None
    assert await auth.key_for("rv_not-even-a-key", "198.51.100.2") is None  # malformed
    assert auth.lookups == lookups


async def test_one_ipv6_host_is_limited_by_its_64_and_found_keys_cost_no_token(
    pool: asyncpg.Pool,
) -> None:
    auth = Authenticator(pool, 60, bad_key_burst=3, bad_key_rate_per_s=0.01)
    for host in ("2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:1:ffff::3"):
        assert await auth.key_for(_unknown_key(), host) is None
    with pytest.raises(TooManyBadKeys):
        await auth.key_for(_unknown_key(), "2001:db8:1:1::4")
    # another /64 has its own bucket; a good key found there gives its token back
    for _ in range(4):
        _, good = await api_keys.create(pool, "abuse-v6", [Scope.READ])
        assert await auth.key_for(good, "2001:db8:1:2::1") is not None
    for _ in range(3):
        assert await auth.key_for(_unknown_key(), "2001:db8:1:2::1") is None
    with pytest.raises(TooManyBadKeys):
        await auth.key_for(_unknown_key(), "2001:db8:1:2::1")


async def test_a_flood_of_distinct_bad_keys_does_not_evict_a_good_key(
    pool: asyncpg.Pool,
) -> None:
    _, good = await api_keys.create(pool, "abuse-cached", [Scope.READ])
    auth = Authenticator(pool, 600, bad_key_burst=1_000_000, bad_key_rate_per_s=1e6)
    warmed = await auth.key_for(good, "192.0.2.1")
    assert warmed is not None and auth.lookups == 1
    flood = auth.max_unknown + 50  # more than any cache of unknown keys holds
    started = time.monotonic()
    for _ in range(0, flood, 50):  # from many addresses, as a botnet would
        found = await asyncio.gather(
            *(auth.key_for(_unknown_key(), f"10.{n // 250}.{n % 250}.1") for n in range(50))
        )
        assert found == [None] * 50
        assert time.monotonic() - started < 120, "the flood is too slow to finish"
    assert auth.lookups == 1 + flood
    statistics = auth.statistics()
    assert statistics["unknown"] <= auth.max_unknown
    assert statistics["peak_lookups"] == 4  # 50 at once asked, 4 of the pool's connections
    assert await auth.key_for(good, "192.0.2.1") == warmed
    assert auth.lookups == 1 + flood  # served from the cache: no lookup
