"""API keys: shown once at creation, stored only as a hash.

A key reads `rv_<prefix>_<secret>`: `prefix` is 8 letters and digits, stored in clear to find
the row; `secret` is 32 random bytes, url-safe base64. Only the SHA-256 of the whole key is
stored (keys are high-entropy, so a fast hash is enough), and `find` compares it in
constant time. A revoked key is never found.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Iterable
from uuid import UUID

import asyncpg

from runtime.models.enums import Scope
from runtime.models.records import ApiKey

__all__ = ["KEY_PREFIX", "create", "find", "is_well_formed", "list_keys", "revoke", "touch"]

KEY_PREFIX = "rv_"
_PREFIX_LEN = 8
_ALPHABET = string.ascii_letters + string.digits
_COLUMNS = (
    "id",
    "name",
    "prefix",
    "key_hash",
    "scopes",
    "rate_per_s",
    "burst",
    "created_at",
    "last_used_at",
    "revoked_at",
)
# real -> text -> float8: the shortest decimal that is this float32, i.e. the value written.
_SELECT = ", ".join(
    "rate_per_s::text::float8 AS rate_per_s" if column == "rate_per_s" else column
    for column in _COLUMNS
)

Conn = asyncpg.Connection | asyncpg.Pool


def _hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _prefix_of(plaintext: str) -> str | None:
    """The prefix of a well-formed key, else None (the secret may itself hold `_`)."""
    end = len(KEY_PREFIX) + _PREFIX_LEN
    if not plaintext.startswith(KEY_PREFIX) or plaintext[end : end + 1] != "_":
        return None
    prefix = plaintext[len(KEY_PREFIX) : end]
    return prefix if all(c in _ALPHABET for c in prefix) and len(plaintext) > end + 1 else None


def is_well_formed(plaintext: str) -> bool:
    """Whether `plaintext` could be a key at all: `find` answers None for any other without
    asking PostgreSQL."""
    return _prefix_of(plaintext) is not None


async def create(
    conn: Conn,
    name: str,
    scopes: Iterable[Scope | str],
    rate_per_s: float = 50.0,
    burst: int = 100,
) -> tuple[ApiKey, str]:
    """A new key: (its record, the plaintext key). The plaintext is not kept anywhere."""
    for _ in range(5):
        prefix = "".join(secrets.choice(_ALPHABET) for _ in range(_PREFIX_LEN))
        plaintext = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        key = ApiKey(
            name=name,
            prefix=prefix,
            key_hash=_hash(plaintext),
            scopes=list(scopes),
            rate_per_s=rate_per_s,
            burst=burst,
        )
        row = await conn.fetchrow(
            f"INSERT INTO api_keys ({', '.join(_COLUMNS)})"
            f" VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))})"
            f" ON CONFLICT (prefix) DO NOTHING RETURNING {_SELECT}",
            *(getattr(key, column) for column in _COLUMNS),
        )
        if row is not None:
            return ApiKey.from_row(row), plaintext
    raise RuntimeError("could not draw an unused key prefix")  # 62**8 prefixes: never


async def find(conn: Conn, plaintext: str) -> ApiKey | None:
    """The live key `plaintext` is, or None (malformed, unknown, wrong secret or revoked)."""
    prefix = _prefix_of(plaintext)
    if prefix is None:
        return None
    row = await conn.fetchrow(f"SELECT {_SELECT} FROM api_keys WHERE prefix = $1", prefix)
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(row["key_hash"], _hash(plaintext)):
        return None
    return ApiKey.from_row(row)


async def list_keys(conn: Conn, include_revoked: bool = True) -> list[ApiKey]:
    """Every key, oldest first."""
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    rows = await conn.fetch(f"SELECT {_SELECT} FROM api_keys{where} ORDER BY created_at, id")
    return [ApiKey.from_row(row) for row in rows]


async def revoke(conn: Conn, id_or_prefix: UUID | str) -> bool:
    """Revoke a key by id or prefix; True if a live key was revoked by this call."""
    column, value = "prefix", id_or_prefix
    try:
        value = id_or_prefix if isinstance(id_or_prefix, UUID) else UUID(id_or_prefix)
        column = "id"
    except ValueError:
        pass
    status = await conn.execute(
        f"UPDATE api_keys SET revoked_at = now() WHERE {column} = $1 AND revoked_at IS NULL",
        value,
    )
    return status == "UPDATE 1"


async def touch(conn: Conn, id: UUID) -> None:
    """Note that a key was just used (`last_used_at`)."""
    await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", id)
