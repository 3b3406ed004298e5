"""Agent-to-agent messages: `ctx.ask` (request/response) and `ctx.tell` (one-way).

The sender resolves the target (an agent id, else a capability: a live agent offering it,
idle ones first), writes the message row with its event, and sends the envelope on core
NATS to the target's inbox, again every `RESEND_S` until it is answered (ask) or received
(tell), or the timeout passes. The target acknowledges receipt at once and handles each
message id once per incarnation: a re-sent envelope it is still handling is ignored, one
it has answered gets the same answer again. A target killed mid-ask loses what it was
doing; its next incarnation receives the next re-send and handles the message afresh.
So an ask is answered at least once while its timeout lasts, or fails with `AskTimeout`.

Messages run beside tasks (an agent may be asked while it works), each in its own asyncio
task, with a context whose `task` is None.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from runtime import telemetry
from runtime.bus import decode
from runtime.errors import LogicalError, TaskError, TransientError, classify
from runtime.models.enums import MessageKind, MessageStatus
from runtime.models.events import MessageExchanged
from runtime.models.records import Message
from runtime.store import messages as message_store

if TYPE_CHECKING:
    import asyncpg

    from runtime.bus import Bus

__all__ = ["AskTimeout", "Envelope", "Mailbox", "Messenger", "inbox_subject"]

_log = logging.getLogger(__name__)

RESEND_S = 0.5
"""How often an unanswered envelope is sent again (a restarted target gets it this soon)."""
_REMEMBERED = 1000  # answers kept per incarnation, to answer a re-sent envelope the same
_LIVE = ("running", "idle", "busy")


class AskTimeout(TransientError):
    """No answer (ask) or receipt (tell) within the timeout; names the target and the wait."""


class Envelope(BaseModel):
    """What travels to the target's inbox."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: UUID
    kind: Literal["ask", "tell"]
    sender: str = Field(min_length=1, max_length=120)
    recipient: str = Field(min_length=1, max_length=120)
    payload: dict[str, Any]
    deadline_s: float = Field(gt=0, description="Seconds the sender still waits, when sent.")


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: UUID
    status: Literal["received", "answered", "failed"]
    payload: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


def inbox_subject(stream: str, agent_id: str) -> str:
    """The target's inbox: per system (its stream), so systems may share a NATS server."""
    return f"inbox.{stream}.{agent_id}"


# ---- the sender ---------------------------------------------------------------------------


class Messenger:
    """Sends an agent's asks and tells, and keeps their rows."""

    def __init__(
        self,
        agent_id: str,
        pool: asyncpg.Pool,
        bus: Callable[[], Awaitable[Bus]],
    ) -> None:
        self.agent_id = agent_id
        self._pool = pool
        self._bus = bus

    async def ask(self, to: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The target's answer to `payload`; see the module docstring."""
        reply = await self._exchange("ask", to, payload, timeout_s)
        return reply.payload or {}

    async def tell(self, to: str, payload: dict[str, Any], timeout_s: float) -> None:
        """Returns once the target has the message; its handling is not awaited."""
        await self._exchange("tell", to, payload, timeout_s)

    async def _exchange(
        self, kind: Literal["ask", "tell"], to: str, payload: Any, timeout_s: float
    ) -> Reply:
        attributes = {"agent.id": self.agent_id, "message.to": to}
        with telemetry.span(kind, attributes=attributes, kind=telemetry.SpanKind.CLIENT):
            return await self._exchange_traced(kind, to, payload, timeout_s)

    async def _exchange_traced(
        self, kind: Literal["ask", "tell"], to: str, payload: Any, timeout_s: float
    ) -> Reply:
        _check_payload(payload)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
            raise LogicalError(f"{kind}: timeout_s must be a number, got {timeout_s!r}")
        if not 0 < timeout_s <= 3600:
            raise LogicalError(f"{kind}: timeout_s must be in (0, 3600], got {timeout_s}")
        started = time.monotonic()
        deadline = started + timeout_s
        target = await self._resolve(kind, to, deadline)
        record_kind = MessageKind.REQUEST if kind == "ask" else MessageKind.NOTIFICATION
        message = Message(sender=self.agent_id, recipient=target, kind=record_kind, payload=payload)
        await message_store.add(self._pool, message, [_event(message)])
        bus = await self._bus()
        reply = await _send_until_done(bus, message, kind, deadline)
        if reply is None:
            waited = time.monotonic() - started
            what = "no answer" if kind == "ask" else "not received"
            error = f"{kind} to {target}: {what} within {waited:.1f}s"
            await self._finish(message, MessageStatus.TIMED_OUT, error)
            raise AskTimeout(error, {"target": target, "waited_s": round(waited, 3)})
        if kind == "tell":
            await self._finish(message, MessageStatus.DELIVERED)
            return reply
        if reply.status == "failed":
            error = reply.error or {}
            reason = f"ask to {target}: its handler failed: {error.get('reason', 'unknown')}"
            await self._finish(message, MessageStatus.FAILED, reason)
            raise _remote_error(reason, error, target)
        response = Message(
            correlation_id=message.id,
            sender=target,
            recipient=self.agent_id,
            kind=MessageKind.RESPONSE,
            payload=reply.payload or {},
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await message_store.finish(
                conn, message.id, MessageStatus.ANSWERED, events=[_event(message, "answered")]
            )
            await message_store.add(conn, response, [_event(response)])
        return reply

    async def _finish(self, message: Message, status: MessageStatus, error: str = "") -> None:
        event = _event(message, status, error or None)
        await message_store.finish(self._pool, message.id, status, error or None, [event])

    async def _resolve(self, kind: str, to: str, deadline: float) -> str:
        """The agent `to` names: itself if it is an agent's id, else a live agent offering
        the capability `to` (waited for while one restarts, until the deadline)."""
        if not isinstance(to, str) or not to.strip():
            raise LogicalError(f"{kind}: the target must be an agent id or a capability")
        if to == self.agent_id:
            raise LogicalError(f"{kind}: agent {to} cannot {kind} itself")
        row = await self._pool.fetchrow("SELECT state FROM agents WHERE id = $1", to)
        if row is not None:
            if row["state"] == "stopped":
                raise LogicalError(f"{kind}: agent {to} is stopped")
            return to
        while True:
            rows = await self._pool.fetch(
                """
                SELECT a.id, a.state FROM agents a
                 WHERE a.id <> $2 AND a.state NOT IN ('stopped', 'failed')
                   AND ($1 = ANY(a.capabilities) OR EXISTS (
                        SELECT 1 FROM agent_specializations s
                         WHERE s.agent_id = a.id AND s.capability = $1))
                 ORDER BY (a.state = 'idle') DESC, (a.state = ANY($3::text[])) DESC, random()
                """,
                to,
                self.agent_id,
                list(_LIVE),
            )
            if not rows:
                raise LogicalError(f"{kind}: no agent has the id or offers the capability {to!r}")
            if rows[0]["state"] in _LIVE:
                return rows[0]["id"]
            if time.monotonic() + RESEND_S > deadline:  # all restarting: time is up
                return rows[0]["id"]
            await asyncio.sleep(RESEND_S)


async def _send_until_done(bus: Bus, message: Message, kind: str, deadline: float) -> Reply | None:
    """Send, and send again every RESEND_S, until the reply that ends the exchange (the
    answer of an ask, the receipt of a tell) or the deadline; None at the deadline."""
    replies: asyncio.Queue[bytes] = asyncio.Queue()
    inbox = bus.nc.new_inbox()

    async def collect(msg: Any) -> None:
        replies.put_nowait(msg.data)

    subscription = await bus.nc.subscribe(inbox, cb=collect)
    subject = inbox_subject(bus.stream, message.recipient)
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            envelope = Envelope(
                id=message.id,
                kind=kind,  # type: ignore[arg-type]
                sender=message.sender,
                recipient=message.recipient,
                payload=message.payload,
                deadline_s=remaining,
            )
            with contextlib.suppress(Exception):  # NATS reconnecting: the next send tries
                await bus.nc.publish(
                    subject,
                    envelope.model_dump_json().encode(),
                    reply=inbox,
                    headers=telemetry.carrier() or None,
                )
            resend_at = time.monotonic() + min(RESEND_S, remaining)
            while (wait := resend_at - time.monotonic()) > 0:
                try:
                    data = await asyncio.wait_for(replies.get(), wait)
                except TimeoutError:
                    break
                reply = _parse_reply(data, message.id)
                if reply is not None and (kind == "tell" or reply.status != "received"):
                    return reply
        return None
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


def _parse_reply(data: bytes, message_id: UUID) -> Reply | None:
    reply = decode(Reply.model_validate_json, data, kind="reply", subject=f"reply {message_id}")
    return reply if reply is not None and reply.id == message_id else None


def _remote_error(reason: str, error: dict[str, Any], target: str) -> TaskError:
    """The target's failure as the asker sees it: a logical one stays logical (asking again
    would fail again); anything else is transient for the asker (its own agent is fine)."""
    detail = {"target": target, "error": error}
    if error.get("category") == "logical":
        return LogicalError(reason, detail)
    return TransientError(reason, detail)


def _check_payload(payload: Any) -> None:
    if not isinstance(payload, dict):
        raise LogicalError(f"the payload must be a JSON object, got {type(payload).__name__}")
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise LogicalError(f"the payload is not JSON-serialisable: {exc}") from None


def _event(
    message: Message, status: MessageStatus | str | None = None, error: str | None = None
) -> MessageExchanged:
    return MessageExchanged(
        message_id=message.id,
        correlation_id=message.correlation_id,
        sender=message.sender,
        recipient=message.recipient,
        kind=message.kind,
        status=MessageStatus(status or message.status),
        payload=message.payload if status is None else {},
        error=error,
    )


# ---- the receiver -------------------------------------------------------------------------

Handler = Callable[[Message], Awaitable[Any]]


class Mailbox:
    """An agent's inbox: acknowledges, runs the handler once per message id, answers."""

    def __init__(self, agent_id: str, handler: Handler) -> None:
        self.agent_id = agent_id
        self._handler = handler
        self._answers: OrderedDict[UUID, bytes | None] = OrderedDict()  # None: in progress
        self._running: set[asyncio.Task[None]] = set()
        self._subscription: Any = None
        self._bus: Bus | None = None
        self.invalid = 0

    async def open(self, bus: Bus) -> None:
        self._bus = bus
        subject = inbox_subject(bus.stream, self.agent_id)
        self._subscription = await bus.nc.subscribe(subject, cb=self._receive)

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        for running in list(self._running):
            running.cancel()

    async def _receive(self, msg: Any) -> None:
        envelope = decode(Envelope.model_validate_json, msg.data, kind="inbox", subject=msg.subject)
        if envelope is None:
            self.invalid += 1
            return
        if envelope.id in self._answers:
            answer = self._answers[envelope.id]
            await self._respond(msg.reply, answer or _receipt(envelope.id))
            return
        self._answers[envelope.id] = None
        while len(self._answers) > _REMEMBERED:
            self._answers.popitem(last=False)
        await self._respond(msg.reply, _receipt(envelope.id))
        task = asyncio.get_running_loop().create_task(
            self._handle(envelope, msg.reply, msg.headers)
        )
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _handle(
        self, envelope: Envelope, reply_to: str | None, headers: dict[str, str] | None = None
    ) -> None:
        """Run the handler in a span that joins the sender's trace (`headers`)."""
        attributes = {"agent.id": self.agent_id, "message.id": envelope.id,
                      "message.from": envelope.sender}  # fmt: skip
        name = f"{envelope.kind}.handle"
        with telemetry.span(name, headers, attributes, telemetry.SpanKind.SERVER):
            await self._handle_traced(envelope, reply_to)

    async def _handle_traced(self, envelope: Envelope, reply_to: str | None) -> None:
        message = Message(
            id=envelope.id,
            sender=envelope.sender,
            recipient=envelope.recipient,
            kind=MessageKind.REQUEST if envelope.kind == "ask" else MessageKind.NOTIFICATION,
            payload=envelope.payload,
        )
        loop = asyncio.get_running_loop()
        gives_up_at = loop.time() + envelope.deadline_s
        try:
            result = await asyncio.wait_for(self._handler(message), envelope.deadline_s)
            if result is None:
                result = {}
            if not isinstance(result, dict):
                raise LogicalError(
                    f"on_message must return a JSON object or None, got {type(result).__name__}"
                )
            _check_payload(result)
            reply = Reply(id=envelope.id, status="answered", payload=result)
        except asyncio.CancelledError:
            self._answers.pop(envelope.id, None)
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and loop.time() >= gives_up_at:
                # the sender stopped waiting and reports the ask timed out itself: an
                # answer racing its deadline must not make that the target's failure
                self._answers.pop(envelope.id, None)
                _log.info("agent %s: message %s: its sender's deadline passed",
                          self.agent_id, envelope.id)  # fmt: skip
                return
            if envelope.kind == "ask":
                _log.info("agent %s: message %s failed: %r", self.agent_id, envelope.id, exc)
            else:
                _log.warning("agent %s: told %s failed: %r", self.agent_id, envelope.id, exc)
            error = {"category": classify(exc), "type": type(exc).__name__, "reason": str(exc)}
            reply = Reply(id=envelope.id, status="failed", error=error)
        data = reply.model_dump_json().encode()
        if envelope.id in self._answers:
            self._answers[envelope.id] = data
        if envelope.kind == "ask":
            await self._respond(reply_to, data)

    async def _respond(self, reply_to: str | None, data: bytes) -> None:
        if reply_to and self._bus is not None:
            with contextlib.suppress(Exception):
                await self._bus.nc.publish(reply_to, data)


def _receipt(message_id: UUID) -> bytes:
    return Reply(id=message_id, status="received").model_dump_json().encode()
