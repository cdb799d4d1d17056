"""The orchestrator process: the imperative shell around the engine.

For each reply, one transaction: claim the message in the inbox, lock the instance row, `decide`,
write snapshot + history + timers + outbox. Then publish the outbox rows and ack the reply.
Due timers are fired the same way, the timer row (claimed with SKIP LOCKED and deleted in the
transaction) standing in for the inbox. Any number of orchestrators may run at once: the row
lock serialises the transitions of one instance, the inbox drops the copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

from orchestrator.definitions import CHILD_POOL
from orchestrator.engine import Phase, TimerFired, TimerKind
from orchestrator.errors import EventInvalid, MessageError, WarrenError
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.cloudevents import from_amqp
from orchestrator.messaging.consumer import Consumer, Delivery, envelope_batches, envelopes
from orchestrator.messaging.envelope import Reply, utcnow
from orchestrator.messaging.faults import crash_point
from orchestrator.messaging.relay import BreakerBoard, Relay
from orchestrator.messaging.versions import UPCASTERS, load_upcaster_modules
from orchestrator.observability import logs, metrics, tracing
from orchestrator.observability.middleware import compose
from orchestrator.persistence import instances, timers
from orchestrator.persistence.definitions import DefinitionCache
from orchestrator.service.breakers import evaluate as evaluate_breakers
from orchestrator.service.children import ChildOrders
from orchestrator.service.dead_letters import DeadLetterRecorder
from orchestrator.service.events import EventReceiver
from orchestrator.service.middleware import Batch, Handled, Metrics, observe_reply
from orchestrator.service.transitions import Incoming, apply_event, apply_events, reply_event
from orchestrator.storage.database import create_engine, patiently, transaction
from orchestrator.storage.wakeup import TIMERS_CHANNEL, Listener

if TYPE_CHECKING:
    from uuid import UUID

    from aio_pika.abc import AbstractIncomingMessage
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from orchestrator.config import Settings
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.persistence.timers import DueTimer

log = logging.getLogger(__name__)

INBOX_CONSUMER = "orchestrator"
BATCH_LANES = 1
"""Batches of replies in progress at once: the replies that arrive while one is handled make
the next. A second lane split them into smaller batches, for a third more of the
orchestrator's CPU per saga on two cores (docs/performance.md, round four); more throughput
comes from more orchestrators."""


class Orchestrator:
    def __init__(self, settings: Settings, *, engine: AsyncEngine | None = None) -> None:
        load_upcaster_modules(settings.upcasters)
        self.settings = settings
        self.topology = settings.topology
        self.engine = engine or create_engine(settings.database_url)
        self.broker = Broker(settings.amqp_url, self.topology)
        self.breakers = BreakerBoard()
        self.relay = Relay(
            self.engine,
            self.broker,
            grace_seconds=settings.outbox_grace_seconds,
            breakers=self.breakers,
            commands_exchange=self.topology.commands_exchange,
        )
        self.definitions = DefinitionCache()
        self._bound_types: frozenset[str] = frozenset()
        self.payloads = logs.PayloadLog(enabled=settings.log_payloads, redact=settings.log_redact)
        # Composed once (orchestrator.service.middleware); each reply of a batch also gets
        # `observe_reply` around its transition.
        self.handle_replies = compose([Metrics()], self._apply_replies)
        self.fire_timer = compose([Metrics()], self._fire_due_timer)
        self.consumer = Consumer(
            self.broker,
            self.topology.declare_orchestrator,
            envelopes(self.handle),
            prefetch=settings.prefetch,
            handle_batch=envelope_batches(self.handle_batch),
            batch_size=settings.batch_size,
            lanes=BATCH_LANES,
        )
        # The pool of the parents' ChildSaga nodes: each orchestrator serves it too.
        self.children = Consumer(
            self.broker,
            lambda channel: self.topology.declare_pool(channel, CHILD_POOL),
            envelopes(ChildOrders(self.engine, self.relay, self.topology, self.definitions).handle),
            prefetch=16,
        )
        # Domain events: the types the registered definitions listen to (`_run_events` binds).
        self.receiver = EventReceiver(self.engine, self.relay, self.topology, self.definitions)
        self.events = Consumer(
            self.broker,
            self.topology.declare_events,
            self._receive_event,
            prefetch=settings.prefetch,
            handle_batch=self._receive_events,
            batch_size=settings.batch_size,
            lanes=1,  # in the order received
        )
        self.dead_letters = Consumer(
            self.broker,
            self.topology.declare_dead_letters,
            DeadLetterRecorder(self.engine, self.relay, self.topology, self.definitions).record,
            prefetch=16,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Serve until `stopping` is set, then drain and close."""
        await self.broker.connect()
        await self.consumer.start()
        await self.children.start()
        # A database restarting now must not stop the process: wait for it, as for RabbitMQ.
        await patiently(self.bind_event_types, what="binding the event types")
        await self.events.start()
        await self.dead_letters.start()
        interval = self.settings.sweep_interval_seconds
        background = [
            asyncio.create_task(self.relay.run_sweeper(stopping, interval_seconds=interval)),
            asyncio.create_task(self._run_timers(stopping, interval)),
            asyncio.create_task(self._run_breakers(stopping, interval)),
            asyncio.create_task(self._run_events(stopping, interval)),
        ]
        log.info("orchestrator consuming %s", self.topology.orchestrator_queue)
        try:
            await stopping.wait()
        finally:
            grace = self.settings.shutdown_grace_seconds
            await asyncio.gather(
                self.consumer.stop(grace),
                self.children.stop(grace),
                self.events.stop(grace),
                self.dead_letters.stop(grace),
            )
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.relay.flush()
            await self.broker.close()
            await self.engine.dispose()

    # ---- replies ------------------------------------------------------------------------------

    async def handle(self, message: Envelope) -> None:
        """One reply (the consumer made its span)."""
        if not isinstance(message, Reply):
            raise MessageError(f"orchestrators take replies, not {type(message).__name__.lower()}s")
        UPCASTERS.check(message.command, message.payload_version)  # newer: dead-lettered
        await self.handle_replies(Batch(replies=[(message, None)]))

    async def handle_batch(self, deliveries: list[Delivery]) -> None:
        """Replies that arrived together: one transaction, one round of confirms."""
        replies: list[tuple[Reply, AbstractIncomingMessage | None]] = []
        for delivery in deliveries:
            if not isinstance(delivery.envelope, Reply):
                raise MessageError("orchestrators take replies only")
            # A reply in a version newer than known fails the batch; alone, it is parked.
            UPCASTERS.check(delivery.envelope.command, delivery.envelope.payload_version)
            replies.append((delivery.envelope, delivery.message))
        await self.handle_replies(Batch(replies=replies))

    async def _apply_replies(self, batch: Batch) -> Handled:
        """Claim the replies in the inbox and lock their instances (one statement, rows in id
        order: concurrent batches lock them in the same order), apply each to its instance,
        write it all (one more), commit, publish what they sent."""
        queue, replies = self.topology.orchestrator_queue, batch.replies
        with self.relay.forgetting() as published:
            async with transaction(self.engine) as conn:
                fresh, locked = await instances.claim_and_lock(
                    conn, INBOX_CONSUMER, [(r.id, r.instance_id) for r, _ in replies]
                )
                incoming = self._incoming(fresh, replies, queue)
                transitions, pending = await apply_events(
                    conn,
                    self.definitions,
                    self.topology,
                    incoming,
                    locked=locked,
                    forget=published,
                )
        crash_point("orchestrator.after_commit")
        await self.relay.publish_committed(pending)
        return Handled(transitions=transitions, pending=pending)

    def _incoming(
        self,
        fresh: set[UUID],
        replies: list[tuple[Reply, AbstractIncomingMessage | None]],
        queue: str,
    ) -> list[Incoming]:
        """The engine events of the replies seen for the first time, in instance order;
        copies are dropped."""
        incoming: list[Incoming] = []
        for reply, message in sorted(replies, key=lambda item: item[0].instance_id.bytes):
            if reply.id not in fresh:
                metrics.inbox_duplicates.labels(INBOX_CONSUMER).inc()
                log.info("duplicate reply %s dropped", reply.id)
                continue
            fresh.discard(reply.id)  # a second copy in the same batch is a duplicate too
            incoming.append(
                Incoming(
                    reply.instance_id,
                    reply_event(reply),
                    causation_id=reply.id,
                    traceparent=reply.traceparent,
                    around=partial(observe_reply, self.payloads, reply, message, queue),
                )
            )
        return incoming

    # ---- events -------------------------------------------------------------------------------

    async def _receive_event(self, message: AbstractIncomingMessage) -> None:
        await self._receive_events([message])

    async def _receive_events(self, messages: list[AbstractIncomingMessage]) -> None:
        """Domain events from the broker (CloudEvents binary mode), in the order received, in
        one transaction. One that cannot be read, of an unknown future version or that its
        schema refuses is poison (the batch is then handled one by one, to park it alone)."""
        read = [from_amqp(m.body, m.headers, m.content_type) for m in messages]
        try:
            events = await self.receiver.prepare_many(read)
        except EventInvalid as exc:
            raise MessageError(str(exc)) from exc
        await self.receiver.receive_many(events, via="broker")

    async def bind_event_types(self) -> None:
        """Bind the events queue to every type a registered definition listens to."""
        async with transaction(self.engine) as conn:
            await self.receiver.routes.refresh(conn)
        types = self.receiver.routes.types
        if types != self._bound_types:
            await self.broker.bind_event_types(types - self._bound_types)
            self._bound_types = types

    async def _run_events(self, stopping: asyncio.Event, interval: float) -> None:
        """Bind the types of definitions registered since; deliver kept events that missed
        their waits; forget events past their retention."""
        while not stopping.is_set():
            try:
                await self.bind_event_types()
                while await self.receiver.sweep(self.settings.event_retention_seconds) >= 100:
                    pass
            except WarrenError as exc:
                log.warning("event upkeep failed, will try again: %s", exc)
            except Exception:
                log.exception("event upkeep failed unexpectedly, will try again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)

    # ---- timers -------------------------------------------------------------------------------

    async def _run_timers(self, stopping: asyncio.Event, interval: float) -> None:
        """Fire what is due, then sleep until the next timer is due, a new timer is written
        (NOTIFY), or `interval` passes (the safety net), whichever comes first."""
        listener = Listener(self.settings.database_url, TIMERS_CHANNEL)
        listener.start()
        try:
            while not stopping.is_set():
                pause = interval
                try:
                    while await self.fire_due_timer():
                        pass
                    pause = min(interval, await self._seconds_to_next_timer())
                except WarrenError as exc:
                    log.warning("timer poll failed, will try again: %s", exc)
                except Exception:  # a bug must not stop the timers for good
                    log.exception("timer poll failed unexpectedly, will try again")
                await listener.wait(pause)
        finally:
            await listener.stop()

    async def _held_pool(self, conn: AsyncConnection, timer: DueTimer) -> str | None:
        """The pool of this timer's step phase, if its breaker holds its commands now."""
        await self.breakers.refresh(conn)
        held = self.breakers.held()
        if not held:
            return None
        saga = await instances.pinned(conn, timer.instance_id)
        if saga is None:
            return None
        definition = await self.definitions.get(conn, *saga)
        pool = definition.pool_of(timer.step, forward=timer.phase is Phase.FORWARD)
        return pool if pool in held else None

    async def _run_breakers(self, stopping: asyncio.Event, interval: float) -> None:
        while not stopping.is_set():
            try:
                async with transaction(self.engine) as conn:
                    await evaluate_breakers(conn, self.settings, utcnow())
            except WarrenError as exc:
                log.warning("circuit breaker evaluation failed, will try again: %s", exc)
            except Exception:
                log.exception("circuit breaker evaluation failed unexpectedly, will try again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)

    async def _seconds_to_next_timer(self) -> float:
        async with transaction(self.engine) as conn:
            due = await timers.next_due_at(conn)
        if due is None:
            return float("inf")
        seconds: float = (due - utcnow()).total_seconds()
        return max(seconds, 0.0)

    async def fire_due_timer(self) -> bool:
        """Fire one due timer, if any; True when one was fired."""
        return (await self.fire_timer(Batch())).found

    async def _fire_due_timer(self, _: Batch) -> Handled:
        async with transaction(self.engine) as conn:
            row = await timers.claim_due(conn, utcnow())
            if row is None:
                return Handled(found=False)
            crash_point("orchestrator.timer_claimed")
            held = await self._held_pool(conn, row) if row.kind is TimerKind.TIMEOUT else None
            if held is not None:
                # Its command waits in the outbox behind an open breaker: the clock waits too.
                policy = self.settings.breaker_for(held)
                await timers.postpone(
                    conn, row.id, utcnow() + timedelta(seconds=policy.open_seconds)
                )
                return Handled()
            event = TimerFired(kind=row.kind, step=row.step, phase=row.phase, attempt=row.attempt)
            transition, pending = await apply_event(
                conn,
                self.definitions,
                self.topology,
                row.instance_id,
                event,
                traceparent=row.traceparent,
                trace_parent=tracing.from_traceparent(row.traceparent),
            )
            await timers.delete(conn, row.id)
        await self.relay.publish_committed(pending)
        return Handled(transitions=[transition], pending=pending)
