"""The dead-letter recorder: every message parked in the dead-letter queue is recorded in
Postgres with its reason and origin, then acked.

A dead-lettered *command* also fails its attempt (non-retryable `DeadLettered`), in the same
transaction: without a reply its saga would wait forever, so it compensates instead. Replaying
such a command later is recorded but changes nothing (that attempt is over). Replaying a
dead-lettered *reply* is what moves a stuck instance on.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrator.engine import StepReply
from orchestrator.errors import InstanceNotFound, MessageError
from orchestrator.messaging.envelope import Command, Reply, decode
from orchestrator.messaging.failure import Failure, FailureType
from orchestrator.observability import metrics
from orchestrator.persistence import dead_letters
from orchestrator.service.transitions import TransitionService, apply_event
from orchestrator.storage.database import transaction

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage
    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.engine import Transition
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.persistence.outbox import PendingRow

log = logging.getLogger(__name__)


class DeadLetterRecorder(TransitionService):
    async def record(self, message: AbstractIncomingMessage) -> None:
        headers = _jsonable(dict(message.headers or {}))
        reason, exchange, routing_key, queue = _origin(headers)
        try:
            envelope: Envelope | None = decode(message.body)
        except MessageError:
            envelope = None
        pending: list[PendingRow] = []
        transition: Transition | None = None
        async with transaction(self.engine) as conn:
            recorded = await dead_letters.record(
                conn,
                dead_letters.Parked(
                    message_id=message.message_id,
                    kind=_kind(envelope),
                    instance_id=envelope.instance_id if envelope else None,
                    reason=reason,
                    origin_exchange=exchange,
                    origin_routing_key=routing_key,
                    origin_queue=queue,
                    body=message.body,
                    headers=headers,
                    replay_of=_replay_of(headers),
                ),
            )
            if recorded and isinstance(envelope, Command):
                transition, pending = await self._fail_attempt(conn, envelope, reason)
        if not recorded:
            log.info("dead letter %s is recorded already (a copy): acked", message.message_id)
            return
        log.warning("dead letter recorded: %s (%s)", message.message_id, reason)
        metrics.dead_letters.labels(queue or routing_key or "unknown").inc()
        if transition is not None:
            metrics.observe_transition(transition)
        await self.relay.publish_committed(pending)

    async def _fail_attempt(
        self, conn: AsyncConnection, command: Command, reason: str
    ) -> tuple[Transition | None, list[PendingRow]]:
        failure = Failure(type=FailureType.DEAD_LETTERED, message=reason, retryable=False)
        event = StepReply(
            step=command.step,
            phase=command.phase,
            attempt=command.attempt,
            ok=False,
            failure=failure,
            seq=command.seq,
        )
        try:
            return await apply_event(
                conn,
                self.definitions,
                self.topology,
                command.instance_id,
                event,
                causation_id=command.id,
            )
        except InstanceNotFound:
            return None, []


def _kind(envelope: Envelope | None) -> str | None:
    if isinstance(envelope, Command):
        return "command"
    if isinstance(envelope, Reply):
        return "reply"
    return None


def _origin(headers: dict[str, Any]) -> tuple[str, str | None, str | None, str | None]:
    """Reason and origin (exchange, routing key, queue): ours when Warren parked it, else
    RabbitMQ's latest `x-death` record. The default exchange is `""`, an address like any
    other (routing key = the queue), so it is kept, never turned into null."""
    if "x-warren-reason" in headers:
        exchange = _text(headers.get("x-warren-origin-exchange"))
        routing_key = _text(headers.get("x-warren-origin-routing-key")) or None
        queue = _text(headers.get("x-warren-origin-queue")) or None
        if exchange == "" and queue is None:
            queue = routing_key  # parked before the queue was recorded
        return str(headers["x-warren-reason"]), exchange, routing_key, queue
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        death = deaths[0]  # the most recent death comes first
        keys = death.get("routing-keys") or []
        why = str(death.get("reason", "unknown"))
        queue = _text(death.get("queue")) or None
        text = (
            f"{why} in queue {queue}"
            if why != "delivery_limit"
            else (f"delivered too many times (delivery limit) from queue {queue}")
        )
        return text, _text(death.get("exchange")), _text(keys[0]) if keys else None, queue
    return "dead-lettered (no reason given)", None, None, None


def _replay_of(headers: dict[str, Any]) -> int | None:
    """The dead letter a replayed message replays (see `dead_letters.replay`)."""
    value = headers.get(dead_letters.REPLAY_OF)
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) < 19 else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _jsonable(value: Any) -> Any:
    """AMQP header values as JSON: bytes become text, times ISO strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
