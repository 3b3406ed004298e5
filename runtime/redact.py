"""Masking secrets in what rayvisor prints, logs or serves.

Two things carry secrets: URLs with credentials (`postgresql://user:PASSWORD@host/db`,
`nats://user:PASSWORD@host`, `nats://TOKEN@host`) and values under secret-sounding keys
(`api_key`, `password`, `token`, ...). `mask_url` masks one URL, `redact` every URL in a
text, `redact_value` a JSON-like value (a ChildSpec's args, an event's payload). Masking is
for display only: nothing here can be undone, so never mask a value that is then used.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "is_secret_key", "mask_url", "redact", "redact_value"]

MASK = "***"

# scheme://userinfo@ : userinfo up to the last `@` before the path (a password may hold
# `@` or `:` when it was not percent-encoded).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/'\"]*)@")
# schemes where a user without a password is itself the secret (a NATS token).
_TOKEN_SCHEMES = ("nats://", "tls://", "ws://", "wss://")
_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key|auth)$", re.I
)


def _masked(scheme: str, userinfo: str) -> str:
    """`scheme` + `userinfo` + `@` with the secret part of `userinfo` masked."""
    user, sep, _ = userinfo.partition(":")
    if sep:
        return f"{scheme}{user}:{MASK}@"
    if scheme.lower() in _TOKEN_SCHEMES and userinfo:
        return f"{scheme}{MASK}@"
    return f"{scheme}{userinfo}@"


def _mask_userinfo(match: re.Match[str]) -> str:
    return _masked(match["scheme"], match["userinfo"])


def mask_url(url: str) -> str:
    """`url` with its password (or NATS token) replaced by `***`: `user:***@host`.
    Works on malformed URLs too (a configuration error shows what was given): whatever
    lies between `scheme://` and the last `@` is credentials."""
    start = url.find("://")
    start = 0 if start < 0 else start + 3
    end = url.rfind("@")
    if end < start:
        return url
    return _masked(url[:start], url[start:end]) + url[end + 1 :]


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it masked (an exception message, a
    log line)."""
    return _USERINFO.sub(_mask_userinfo, text) if "@" in text else text


def is_secret_key(key: str) -> bool:
    """Whether a field or parameter of this name holds a secret (`api_key`, `password`,
    `db_password`, `token`, ...); `api_key_env`, which names a variable, does not."""
    return bool(_SECRET_KEY.search(key))


def redact_value(value: Any) -> Any:
    """A copy of a JSON-like value fit to show: values under secret keys become `***`,
    URLs in strings lose their credentials."""
    if isinstance(value, dict):
        return {
            k: MASK if isinstance(k, str) and is_secret_key(k) and v is not None
            else redact_value(v)
            for k, v in value.items()
        }  # fmt: skip
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value
