"""The API keys repository: a key is found by its plaintext only, and only while live."""

from __future__ import annotations

import re

import asyncpg
import pytest
from pydantic import ValidationError

from runtime.models.enums import Scope
from runtime.store import api_keys

pytestmark = pytest.mark.integration


async def test_create_returns_a_well_formed_key_once(pool: asyncpg.Pool) -> None:
    key, plaintext = await api_keys.create(pool, "ci", ["read", "write"], rate_per_s=2.5, burst=5)
    match = re.fullmatch(r"rv_([A-Za-z0-9]{8})_([A-Za-z0-9_-]{43})", plaintext)
    assert match is not None
    assert match[1] == key.prefix
    assert (key.name, key.scopes, key.rate_per_s, key.burst) == (
        "ci",
        [Scope.READ, Scope.WRITE],
        2.5,
        5,
    )
    assert "key_hash" not in key.model_dump()
    row = await pool.fetchrow("SELECT * FROM api_keys WHERE id = $1", key.id)
    for value in row.values():
        assert plaintext not in str(value)
        assert match[2] not in str(value)


async def test_find_accepts_the_right_key_only(pool: asyncpg.Pool) -> None:
    key, plaintext = await api_keys.create(pool, "finder", ["read"])
    assert await api_keys.find(pool, plaintext) == key
    wrong_secret = plaintext[:-4] + ("AAAA" if not plaintext.endswith("AAAA") else "BBBB")
    assert await api_keys.find(pool, wrong_secret) is None
    assert await api_keys.find(pool, plaintext + "x") is None
    for malformed in ["", "rv_", "Bearer " + plaintext, plaintext.replace("rv_", "xx_", 1)]:
        assert await api_keys.find(pool, malformed) is None


async def test_revoked_key_is_never_found(pool: asyncpg.Pool) -> None:
    by_prefix, plain_a = await api_keys.create(pool, "a", ["admin"])
    by_id, plain_b = await api_keys.create(pool, "b", ["read"])
    assert await api_keys.revoke(pool, by_prefix.prefix)
    assert await api_keys.revoke(pool, str(by_id.id))
    assert not await api_keys.revoke(pool, by_id.id)  # already revoked
    assert not await api_keys.revoke(pool, "nosuchpx")
    assert await api_keys.find(pool, plain_a) is None
    assert await api_keys.find(pool, plain_b) is None
    live = {k.id for k in await api_keys.list_keys(pool, include_revoked=False)}
    every = {k.id: k for k in await api_keys.list_keys(pool)}
    assert by_prefix.id not in live
    assert every[by_prefix.id].revoked and every[by_id.id].revoked


async def test_touch_sets_last_used(pool: asyncpg.Pool) -> None:
    key, plaintext = await api_keys.create(pool, "used", ["read"])
    assert key.last_used_at is None
    await api_keys.touch(pool, key.id)
    assert (await api_keys.find(pool, plaintext)).last_used_at is not None


async def test_invalid_key_settings_are_refused_before_writing(pool: asyncpg.Pool) -> None:
    before = await pool.fetchval("SELECT count(*) FROM api_keys")
    for scopes, rate in [([], 1.0), (["root"], 1.0), (["read"], 0.0)]:
        with pytest.raises(ValidationError):
            await api_keys.create(pool, "bad", scopes, rate_per_s=rate)
    assert await pool.fetchval("SELECT count(*) FROM api_keys") == before
