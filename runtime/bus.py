"""The event bus: NATS for every event, JetStream for the ones worth replaying.

Guarantees:
- A durable event (one whose subject is in `DURABLE_SUBJECTS`) goes to the JetStream
  stream with its `event_id` as `Nats-Msg-Id`, so a publish repeated after a lost ack is
  stored once.
- Events that go with a state change are written to the `outbox` table in the same
  transaction as the change (`runtime.store.outbox.add`); `OutboxRelay` publishes them in
  order, a batch at a time (pipelined on one connection, every ack awaited), and marks
  them sent. Neither a NATS nor a PostgreSQL outage loses one: it is published at least
  once and deduplicated by id.
- A subscriber never dies of a bad payload: every subscriber reads through `decode`, so a
  message that is oversized (past `MAX_MESSAGE_BYTES`), not JSON or of the wrong shape is
  dropped, counted (`rayvisor_bad_messages` by the kind of subject) and logged without its
  payload, and the next message is handled as if it had never come.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from pydantic import ValidationError

from runtime import metrics, telemetry
from runtime.errors import ServiceError
from runtime.models.events import DURABLE_SUBJECTS, Event, event_class_for
from runtime.store.outbox import NOTIFY_CHANNEL
from runtime.tls import NATS_CA_PARAM, is_refusal, nats_servers_and_tls, server_of, tls_failure

if TYPE_CHECKING:  # nats loads on connect (`import_nats`): ~130 ms a restarted host skips
    import nats.aio.subscription
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

__all__ = ["MAX_MESSAGE_BYTES", "Bus", "OutboxRelay", "decode", "import_nats", "subject_matches"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_MESSAGE_BYTES = 1_048_576
"""The largest payload a subscriber reads (nats-server's default `max_payload`)."""


def import_nats(servers: str | None = None) -> ModuleType:
    """Import nats-py without aiohttp unless a server is `ws://`/`wss://` (`servers`, by
    default `RAYVISOR_NATS_URL`) or something loaded aiohttp already.

    nats-py imports aiohttp (and yarl, multidict, ...: ~60 modules, ~5 MiB) only for its
    WebSocket transport; an agent host that speaks `nats://` or `tls://` would carry them
    for nothing. Blocked, the optional import fails and nats-py leaves WebSockets off."""
    if servers is None:
        servers = os.environ.get("RAYVISOR_NATS_URL", "")
    wanted = any(u.strip().lower().startswith(("ws://", "wss://")) for u in servers.split(","))
    if wanted or "nats.aio.transport" in sys.modules or "aiohttp" in sys.modules:
        return importlib.import_module("nats")
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # "import aiohttp" fails
    try:
        return importlib.import_module("nats")
    finally:
        if sys.modules.get("aiohttp", 0) is None:
            del sys.modules["aiohttp"]


def decode(
    parse: Callable[[bytes], T],
    data: bytes,
    *,
    kind: str,
    subject: str,
    max_bytes: int | None = None,
) -> T | None:
    """`parse(data)`, or None for a bad message: one over `max_bytes` (not read; default
    `MAX_MESSAGE_BYTES`), not JSON, not UTF-8 or not of the expected shape. A bad one is
    counted in `rayvisor_bad_messages{kind}` and logged with the reason, never with its
    payload."""
    max_bytes = MAX_MESSAGE_BYTES if max_bytes is None else max_bytes
    if len(data) > max_bytes:
        reason = f"{len(data)} bytes, over the limit of {max_bytes}"
    else:
        try:
            return parse(data)
        except ValidationError as exc:
            reason = _shape_errors(exc)
        except json.JSONDecodeError as exc:
            reason = f"not JSON: {exc.msg} at character {exc.pos}"
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 at byte {exc.start}"
        except (ValueError, TypeError, AttributeError) as exc:
            reason = f"unreadable ({type(exc).__name__})"
    metrics.bad_message(kind)
    _log.warning("dropped a bad message on %s (%s): %s", subject, kind, reason)
    return None


def _shape_errors(exc: ValidationError) -> str:
    """Which fields were wrong and why, without the values (they are the payload)."""
    errors = exc.errors(include_input=False, include_url=False)
    shown = "; ".join(_field(e["loc"], e["type"]) + f": {e['msg']}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return f"{exc.title}: {shown}{more}"[:1000]


def _field(loc: tuple[int | str, ...], error_type: str) -> str:
    """Where the error is; an unknown key is not named (its name is the sender's data)."""
    if error_type == "extra_forbidden":
        loc = (*loc[:-1], "(an unknown key)")
    return ".".join(str(part) for part in loc) or "(whole message)"


Handler = Callable[[Event, "Msg"], Awaitable[None]]


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: `*` is one token, a final `>` is one or more."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


def is_durable(subject: str) -> bool:
    return any(subject_matches(pattern, subject) for pattern in DURABLE_SUBJECTS)


class Bus:
    """One NATS connection per process, reconnecting forever."""

    def __init__(self, nc: NATS, stream: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.stream = stream
        self.invalid_payloads = 0
        self.handler_errors = 0

    @classmethod
    async def connect(
        cls, url: str, *, name: str = "rayvisor", stream: str = "RAYVISOR", timeout_s: float = 5
    ) -> Bus:
        """Connect to `url` (credentials and `tls://` with its `tls_ca` as `runtime.tls` reads
        them), retrying while the server is unreachable; a certificate that does not verify
        or credentials the server refuses fail at once (a ServiceError): retrying cannot
        help them."""
        import_nats(url)
        from nats.aio.client import Client

        servers, tls = nats_servers_and_tls(url)
        connecting = True

        async def _error(exc: Exception) -> None:
            _log.debug("nats: %s", exc)
            if not connecting:
                return
            if (failure := tls_failure(exc)) is not None:
                raise ServiceError(
                    f"NATS at {server_of(url)}: TLS certificate not trusted "
                    f"({failure.verify_message}); check the CA file ({NATS_CA_PARAM} in the "
                    "URL, or nats_tls_ca)"
                ) from exc
            if is_refusal(exc):
                raise ServiceError(f"NATS at {server_of(url)} refused the credentials") from exc

        nc = Client()
        try:
            await nc.connect(
                servers,
                name=name,
                connect_timeout=timeout_s,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                error_cb=_error,
                tls=tls,
            )
        except BaseException:
            # bounded: after a failed TLS handshake nats-py waits for a close that never comes
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 1)
            raise
        connecting = False
        return cls(nc, stream)

    async def ensure_stream(
        self, max_age_s: float, duplicate_window_s: float = 300, max_consumers: int = 10_000
    ) -> None:
        """Create or update the stream of durable subjects; safe to call from every process.

        `max_consumers` is set explicitly: nats-server 2.15 gives a stream that sets none a
        limit of 1,000 consumers, and every SSE stream on a durable subject is one consumer
        (bench/sse.py met it at 1,000 clients)."""
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import BadRequestError, NotFoundError

        config = StreamConfig(
            name=self.stream,
            subjects=list(DURABLE_SUBJECTS),
            storage=StorageType.FILE,
            max_age=max_age_s,
            duplicate_window=min(duplicate_window_s, max_age_s),
            max_consumers=max_consumers,
        )
        try:
            await self.js.stream_info(self.stream)
        except NotFoundError:
            with contextlib.suppress(BadRequestError):
                await self.js.add_stream(config)
                return
        await self.js.update_stream(config)

    async def publish(self, event: Event, *, timeout_s: float = 5) -> None:
        """Publish now: to JetStream (acknowledged) when durable, else core NATS."""
        await self.publish_raw(
            event.subject(), event.to_json(), str(event.event_id), timeout_s=timeout_s
        )

    async def publish_raw(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 5,
    ) -> None:
        all_headers = {**telemetry.carrier(), **(headers or {}), "Nats-Msg-Id": msg_id}
        if is_durable(subject):
            await self.js.publish(
                subject, payload, timeout=timeout_s, stream=self.stream, headers=all_headers
            )
        else:
            await self.nc.publish(subject, payload, headers=all_headers)

    async def publish_many(
        self,
        messages: Sequence[tuple[str, bytes, str, Mapping[str, str] | None]],
        *,
        timeout_s: float = 5,
    ) -> list[Exception | None]:
        """Publish (subject, payload, msg_id, headers) messages in order, pipelined: all go
        out on the connection, then the JetStream acks are awaited together (for at most
        `timeout_s`). Returns each one's error, None when it was acknowledged (or sent, when
        not durable); the list stops after a message that could not be sent at all."""
        from nats.errors import Error as NatsError  # loaded already: the bus is connected

        acks: list[asyncio.Future[Any] | None] = []
        errors: list[Exception | None] = []
        for subject, payload, msg_id, headers in messages:
            all_headers = {**telemetry.carrier(), **(headers or {}), "Nats-Msg-Id": msg_id}
            try:
                if is_durable(subject):
                    acks.append(await self.js.publish_async(
                        subject, payload, stream=self.stream, headers=all_headers
                    ))  # fmt: skip
                else:
                    await self.nc.publish(subject, payload, headers=all_headers)
                    acks.append(None)
            except (NatsError, OSError) as exc:
                errors.append(exc)
                break
        pending = [ack for ack in acks if ack is not None]
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout_s)
            for ack in late:
                ack.cancel()  # frees its slot in the client's pending-acks window
        outcomes = [None if a is None else _ack_error(a) for a in acks]
        return outcomes + errors

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str = ""
    ) -> nats.aio.subscription.Subscription:
        """Deliver validated events to `handler`; bad payloads are logged, counted, skipped."""

        async def _deliver(msg: Msg) -> None:
            event = self.parse(msg)
            if event is None:
                return
            try:
                await handler(event, msg)
            except Exception:
                self.handler_errors += 1
                _log.exception("handler for %s failed", msg.subject)

        return await self.nc.subscribe(subject, queue=queue, cb=_deliver)

    def parse(self, msg: Msg) -> Event | None:
        """The event in `msg`, or None (counted, logged) if it is not a valid one."""
        try:
            event_class = event_class_for(msg.subject)
        except ValueError:
            event_class = None
        if event_class is None:
            self.invalid_payloads += 1
            metrics.bad_message(msg.subject.partition(".")[0])
            _log.warning("dropped a message on %s: no event is published there", msg.subject)
            return None
        kind = msg.subject.partition(".")[0]
        event = decode(event_class.from_json, msg.data, kind=kind, subject=msg.subject)
        if event is None:
            self.invalid_payloads += 1
        return event

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()


def _ack_error(ack: asyncio.Future[Any]) -> Exception | None:
    """What became of a publish: its error, None if acknowledged; cancelled = no ack in time."""
    if ack.cancelled():
        return TimeoutError("no JetStream ack in time")
    return ack.exception()  # type: ignore[return-value]  (acks fail with Exceptions only)


_RELAY_LOCK_KEY = 0x72656C61  # "rela": one relay publishes at a time, so order holds


class OutboxRelay:
    """Publishes `outbox` rows to JetStream in `seq` order and marks them sent.

    A batch is published in `seq` order on one connection, pipelined, and its acks are
    awaited together: a row is marked sent only after JetStream acknowledged it and every
    row before it, and the next batch starts only once this one is settled, so the stream
    keeps the outbox's order (a retried publish is deduplicated by its id). Several relays
    may run; an advisory lock lets one at a time.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: Bus,
        *,
        batch_size: int = 200,
        poll_s: float = 0.5,
        publish_timeout_s: float = 2.0,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.publish_timeout_s = publish_timeout_s
        self.published = 0
        self.failures = 0
        self._wake = asyncio.Event()

    async def publish_pending(self, conn: asyncpg.Connection | None = None) -> int:
        """One batch, on `conn` or a connection of the pool; returns how many rows it
        published (0 if another relay holds the lock)."""
        if conn is None:
            async with self.pool.acquire() as conn:
                return await self.publish_pending(conn)
        from nats.errors import Error as NatsError  # loaded already: the bus is connected

        sent: list[int] = []
        async with conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _RELAY_LOCK_KEY):
                return 0
            rows = await conn.fetch(
                "SELECT seq, id, subject, payload, headers FROM outbox"
                " WHERE sent_at IS NULL ORDER BY seq LIMIT $1",
                self.batch_size,
            )
            outcomes = await self.bus.publish_many(
                [
                    (r["subject"], json.dumps(r["payload"], separators=(",", ":")).encode(),
                     str(r["id"]), r["headers"])
                    for r in rows
                ],
                timeout_s=self.publish_timeout_s,
            )  # fmt: skip
            for row, error in zip(rows, outcomes, strict=False):
                if error is not None:
                    if not isinstance(error, NatsError | TimeoutError | OSError):
                        raise error
                    self.failures += 1
                    _log.warning("outbox relay: publish of %s failed: %r", row["id"], error)
                    break
                sent.append(row["seq"])
            if sent:
                await conn.execute("UPDATE outbox SET sent_at = now() WHERE seq = ANY($1)", sent)
        self.published += len(sent)
        metrics.events_published(r["subject"] for r in rows[: len(sent)])
        return len(sent)

    def wake(self, *_: Any) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; woken by NOTIFY, polling as a fallback. The
        connection that listens also does the work (no pool round trip per batch)."""
        listener: asyncpg.Connection | None = None
        while not stop.is_set():
            self._wake.clear()
            try:
                if listener is None or listener.is_closed():
                    listener = await self.pool.acquire()
                    await listener.add_listener(NOTIFY_CHANNEL, self.wake)
                while await self.publish_pending(listener) == self.batch_size and not stop.is_set():
                    pass
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                _log.warning("outbox relay: database unavailable: %r", exc)
                if listener is not None:
                    with contextlib.suppress(Exception):
                        await self.pool.release(listener)
                    listener = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.remove_listener(NOTIFY_CHANNEL, self.wake)
                await self.pool.release(listener)
