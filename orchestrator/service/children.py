"""Child sagas: the orchestrators serve the pool a parent's `ChildSaga` nodes send to.

A parent's node is a task like a step: its orders are commands in the outbox, to the pool
`warren.children`, consumed here, each once (inbox), each in one transaction:

    saga:<name>, forward      start the child (id from the parent and node: it starts once)
    saga:<name>, compensate   undo the child that completed (the engine's `Undo`)
    warren.cancel             the parent stopped going forward: cancel the child

No reply is sent to the order itself: the child answers when it ends (`outgoing.reply_to_parent`,
written with its last transition), or at once when it cannot start (unknown saga, bad input).
Every transaction touches one instance, so parents and children never wait on each other.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from orchestrator.definitions import CHILD_POOL, ChildSaga
from orchestrator.definitions.model import CANCEL_CHILD_COMMAND
from orchestrator.engine import Cancel, Failure, ParentLink, Phase, Undo
from orchestrator.engine.state import child_instance_id
from orchestrator.errors import InputInvalid, InstanceNotFound, MessageError, SagaNotFound
from orchestrator.messaging.envelope import Command, ReplyPayload
from orchestrator.messaging.outgoing import reply_to
from orchestrator.observability import metrics, tracing
from orchestrator.persistence import inbox, instances
from orchestrator.persistence.outbox import enqueue
from orchestrator.service import transitions
from orchestrator.service.starter import SagaStarter
from orchestrator.storage.database import transaction

if TYPE_CHECKING:
    from uuid import UUID

    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.engine import Event
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.persistence.outbox import PendingRow

log = logging.getLogger(__name__)

INBOX_CONSUMER = f"pool:{CHILD_POOL}"


def cannot_start(exc: SagaNotFound | InputInvalid) -> Failure:
    """Why a child did not start, as its parent's node fails with it."""
    details = f": {'; '.join(exc.errors)}" if isinstance(exc, InputInvalid) else ""
    return Failure(type=type(exc).__name__, message=f"{exc}{details}", retryable=False)


def parent_link(order: Command) -> ParentLink:
    """What a child keeps of the order that started it, to answer its parent when it ends."""
    return ParentLink(
        instance_id=order.instance_id,
        saga=order.saga,
        saga_version=order.saga_version,
        step=order.step,
        command=order.command,
        attempt=order.attempt,
        seq=order.seq,
    )


class ChildOrders(SagaStarter):
    """Handles the orders of `warren.children` (a starter: a child's input is validated as
    an API start's is)."""

    async def handle(self, message: Envelope) -> None:
        if not isinstance(message, Command):
            raise MessageError(f"{CHILD_POOL} takes commands, not {type(message).__name__}s")
        async with transaction(self.engine) as conn:
            if not await inbox.claim_many(conn, INBOX_CONSUMER, [message.id]):
                metrics.inbox_duplicates.labels(INBOX_CONSUMER).inc()
                return
            pending = await self._order(conn, message)
        await self.relay.publish_committed(pending)

    async def _order(self, conn: AsyncConnection, order: Command) -> list[PendingRow]:
        child_id = child_instance_id(order.instance_id, order.step)
        if order.command == CANCEL_CHILD_COMMAND:
            reason = f"its parent {order.instance_id} stopped going forward"
            return await self._apply(conn, order, Cancel(reason=reason))
        if order.phase is Phase.COMPENSATE:
            return await self._apply(conn, order, Undo(attempt=order.attempt, seq=order.seq))
        return await self._start_child(conn, order, child_id)

    async def _start_child(
        self, conn: AsyncConnection, order: Command, child_id: UUID
    ) -> list[PendingRow]:
        parent = await self.definitions.get(conn, order.saga, order.saga_version)
        node = parent.find(order.step)
        try:
            if not isinstance(node, ChildSaga):
                raise SagaNotFound(f"{order.step!r} of saga {order.saga!r} is not a ChildSaga")
            definition = await self.definitions.get_latest_or(conn, node.saga, node.version)
            self.validate_input(definition, order.payload.input)
        except (SagaNotFound, InputInvalid) as exc:
            # The child cannot start: the parent's node fails now, and the parent compensates.
            payload = ReplyPayload(ok=False, failure=cannot_start(exc))
            answer = reply_to(order, payload, self.topology)
            return await enqueue(conn, [answer])
        link = parent_link(order)
        # The child's trace is its own saga's, started as a child of the parent's order.
        with tracing.span("saga.start") as current:
            if current.is_recording():
                current.set_attributes(
                    tracing.saga_attributes(
                        saga=definition.name, version=definition.version, instance_id=child_id
                    )
                    | {"warren.parent.id": str(order.instance_id)}
                )
            try:
                transition, pending = await transitions.start(
                    conn,
                    self.topology,
                    definition,
                    child_id,
                    order.payload.input,
                    instances.NewInstance(
                        traceparent=tracing.current_traceparent(fallback=order.traceparent)
                    ),
                    parent=link,
                    definitions=self.definitions,
                )
            except instances.AlreadyStarted:
                return []  # started by an earlier copy of this order
        metrics.sagas_started.labels(definition.name).inc()
        metrics.observe_transition(transition)
        return pending

    async def _apply(self, conn: AsyncConnection, order: Command, event: Event) -> list[PendingRow]:
        child_id = child_instance_id(order.instance_id, order.step)
        try:
            transition, pending = await transitions.apply_event(
                conn,
                self.definitions,
                self.topology,
                child_id,
                event,
                causation_id=order.id,
                traceparent=order.traceparent,
            )
        except InstanceNotFound:
            # A cancel that overtook the start: the child will still start, run, and answer;
            # the parent, stopping, undoes it then.
            log.info(
                "%s for child %s, which has not started: nothing to do", order.command, child_id
            )
            return []
        metrics.observe_transition(transition)
        return pending
