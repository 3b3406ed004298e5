"""Shared memory (`ctx.memory(scope)`): JSON values in a NATS JetStream key-value bucket.

Every value has a revision (the bucket's sequence number). A write may name the revision
it read (`expected_revision`): if someone wrote since, it is refused with `StaleRevision`
(a `Conflict`, and transient, so a task that lets it escape is retried). `update` reads,
applies a function and writes, and on a conflict does what `on_conflict` says:

- `retry`: read again and apply the function to the new value (a counter stays exact);
- `merge`: three-way merge of objects: the keys this update changed take its values,
  every other key keeps the concurrent writer's (non-object values cannot be merged:
  `StaleRevision`);
- `lww`: last writer wins: write anyway, over the concurrent change.

Values live as long as the bucket; the scope is a namespace of keys (one per project,
per team of agents), not an access boundary.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from runtime.bus import decode
from runtime.errors import Conflict, TransientError

if TYPE_CHECKING:
    from runtime.bus import Bus

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "MemoryChange",
    "MemoryEntry",
    "OnConflict",
    "SharedMemory",
    "StaleRevision",
    "bucket_name",
]

DEFAULT_MAX_VALUE_BYTES = 65_536
SCOPE_PATTERN = r"[A-Za-z0-9_-]{1,64}"
KEY_PATTERN = r"[A-Za-z0-9_=/-]+(\.[A-Za-z0-9_=/-]+)*"
_UPDATE_ATTEMPTS = 20
_HISTORY = 5
_WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream's error codes for a stale expected sequence

OnConflict = Literal["retry", "merge", "lww"]


class StaleRevision(Conflict, TransientError):
    """A write named a revision that is no longer the key's latest."""


@dataclass(frozen=True)
class MemoryEntry:
    key: str
    value: Any
    revision: int


@dataclass(frozen=True)
class MemoryChange:
    """One change seen by `watch`: a new value, or `deleted` (value None)."""

    key: str
    value: Any
    revision: int
    deleted: bool = False


def bucket_name(stream: str) -> str:
    """The bucket of a system whose event stream is `stream`."""
    return f"{stream}-memory"


class SharedMemory:
    """The keys of one scope. `bus` is the process's connection, or an async function
    giving it (an agent whose NATS connection is still being made)."""

    def __init__(
        self,
        bus: Bus | Callable[[], Awaitable[Bus]],
        scope: str,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        if not isinstance(scope, str) or not re.fullmatch(SCOPE_PATTERN, scope):
            raise ValueError(f"memory scope must match {SCOPE_PATTERN}, got {scope!r}")
        self.scope = scope
        self.max_value_bytes = max_value_bytes
        self._bus = bus
        self._store: Any = None

    # ---- reading and writing -------------------------------------------------------------

    async def get(self, key: str) -> MemoryEntry | None:
        """The key's value and revision; None if it was never written or was deleted. A
        stored value that is not JSON (written past this API) reads as None at its
        revision, counted as a bad message, so `update` writes over it."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        kv = await self._kv()
        try:
            entry = await kv.get(self._subject(key))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        decoded = self._decode(key, entry.value)
        return MemoryEntry(key, decoded[0] if decoded else None, entry.revision)

    async def put(self, key: str, value: Any, expected_revision: int | None = None) -> int:
        """Write `value`; its new revision. `expected_revision`: the revision read (0: the
        key must not exist); a different latest revision refuses the write."""
        from nats.js.errors import KeyWrongLastSequenceError

        data = self._encode(key, value)
        kv = await self._kv()
        subject = self._subject(key)
        try:
            if expected_revision is None:
                return await kv.put(subject, data)
            if expected_revision == 0:
                return await kv.create(subject, data)
            return await kv.update(subject, data, last=expected_revision)
        except KeyWrongLastSequenceError:
            raise StaleRevision(
                f"memory {self.scope}/{key}: revision {expected_revision} is stale",
                {"scope": self.scope, "key": key, "expected_revision": expected_revision},
            ) from None

    async def delete(self, key: str, expected_revision: int | None = None) -> None:
        """Delete the key (a later `get` gives None); refused like `put` on a stale revision."""
        from nats.js.errors import APIError

        kv = await self._kv()
        try:
            await kv.delete(self._subject(key), last=expected_revision)
        except APIError as exc:  # nats-py raises the plain API error for a delete
            if exc.err_code not in _WRONG_LAST_SEQUENCE:
                raise
            raise StaleRevision(
                f"memory {self.scope}/{key}: revision {expected_revision} is stale",
                {"scope": self.scope, "key": key, "expected_revision": expected_revision},
            ) from None

    async def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        on_conflict: OnConflict = "retry",
        default: Any = None,
    ) -> MemoryEntry:
        """Apply `fn` (sync or async) to the current value (`default` when there is none) and
        write the result; a concurrent write is handled as `on_conflict` says. The entry
        written."""
        if on_conflict not in ("retry", "merge", "lww"):
            raise ValueError(f"on_conflict must be retry, merge or lww, got {on_conflict!r}")
        current = await self.get(key)
        base = current.value if current else default
        revision = current.revision if current else 0
        ours = await _apply(fn, base)
        for _ in range(_UPDATE_ATTEMPTS):
            try:
                written = await self.put(key, ours, expected_revision=revision)
                return MemoryEntry(key, ours, written)
            except StaleRevision:
                if on_conflict == "lww":
                    return MemoryEntry(key, ours, await self.put(key, ours))
                current = await self.get(key)
                theirs = current.value if current else default
                revision = current.revision if current else 0
                if on_conflict == "retry":
                    ours = await _apply(fn, theirs)
                else:
                    ours = merge(base, ours, theirs, f"{self.scope}/{key}")
                base = theirs
        raise StaleRevision(
            f"memory {self.scope}/{key}: still contended after {_UPDATE_ATTEMPTS} attempts",
            {"scope": self.scope, "key": key},
        )

    async def watch(self, prefix: str = "") -> AsyncIterator[MemoryChange]:
        """The current values of the scope's keys starting with `prefix`, then every change
        to them as it happens, until the caller stops iterating."""
        kv = await self._kv()
        watcher = await kv.watch(f"{self.scope}.>")
        head = f"{self.scope}."
        try:
            async for entry in watcher:
                if entry is None:  # the end of the current values
                    continue
                key = entry.key[len(head) :]
                if not key.startswith(prefix):
                    continue
                deleted = entry.operation in ("DEL", "PURGE")
                value = None
                if not deleted and entry.value:
                    decoded = self._decode(key, entry.value)
                    if decoded is None:
                        continue  # not JSON: dropped, counted
                    value = decoded[0]
                yield MemoryChange(key, value, entry.revision, deleted)
        finally:
            await watcher.stop()

    # ---- internals -----------------------------------------------------------------------

    def _subject(self, key: str) -> str:
        if not isinstance(key, str) or len(key) > 256 or not re.fullmatch(KEY_PATTERN, key):
            raise ValueError(
                f"memory key must be 1-256 characters of letters, digits, _ = / - and inner"
                f" dots, got {key!r}"
            )
        return f"{self.scope}.{key}"

    def _encode(self, key: str, value: Any) -> bytes:
        try:
            data = json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"memory {self.scope}/{key}: the value is not JSON: {exc}") from None
        if len(data) > self.max_value_bytes:
            raise ValueError(
                f"memory {self.scope}/{key}: the value is {len(data)} bytes as JSON, over the"
                f" limit of {self.max_value_bytes}"
            )
        return data

    def _decode(self, key: str, data: bytes | None) -> tuple[Any] | None:
        """A stored value as `(value,)`, or None (counted, logged) when it is not JSON or
        too large."""
        return decode(
            lambda raw: (json.loads(raw),),
            data or b"",
            kind="memory",
            subject=f"memory {self.scope}/{key}",
            max_bytes=self.max_value_bytes,
        )

    async def _kv(self) -> Any:
        if self._store is None:
            bus = self._bus if not callable(self._bus) else await self._bus()
            self._store = await open_bucket(bus, self.max_value_bytes)
        return self._store


async def open_bucket(bus: Bus, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> Any:
    """The system's memory bucket, created on first use (by whichever process comes first)."""
    from nats.js.errors import BadRequestError, BucketNotFoundError

    name = bucket_name(bus.stream)
    try:
        return await bus.js.key_value(name)
    except BucketNotFoundError:
        try:
            return await bus.js.create_key_value(
                bucket=name, history=_HISTORY, max_value_size=max_value_bytes + 1024
            )
        except BadRequestError:  # created meanwhile by another process
            return await bus.js.key_value(name)


async def _apply(fn: Callable[[Any], Any], value: Any) -> Any:
    result = fn(copy.deepcopy(value))
    return await result if inspect.isawaitable(result) else result


def merge(base: Any, ours: Any, theirs: Any, where: str) -> Any:
    """Three-way merge: `ours` and `theirs` both started from `base`. Objects merge key by
    key (recursively), what we changed winning; anything else merges only if one side left
    it as it was."""
    if ours == base:
        return theirs
    if theirs in (base, ours):
        return ours
    if not all(isinstance(v, dict) for v in (ours, theirs)) or not isinstance(base, dict | None):
        raise StaleRevision(
            f"memory {where}: both sides changed a value that is not an object; cannot merge",
            {"where": where},
        )
    base = base or {}
    merged = dict(theirs)
    for key in set(base) | set(ours):
        if key not in ours:
            merged.pop(key, None)  # we deleted it
        elif key not in base or ours[key] != base[key]:
            if key in theirs and key in base:
                merged[key] = merge(base[key], ours[key], theirs[key], f"{where}.{key}")
            else:
                merged[key] = ours[key]
    return merged
