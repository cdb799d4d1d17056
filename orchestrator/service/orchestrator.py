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
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update

from orchestrator.engine import Phase, StepReply, TimerFired, TimerKind
from orchestrator.errors import MessageError, WarrenError
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.consumer import Consumer, envelopes
from orchestrator.messaging.envelope import Reply, utcnow
from orchestrator.messaging.faults import crash_point
from orchestrator.observability import logs, metrics, tracing
from orchestrator.persistence.definitions import DefinitionCache
from orchestrator.service.breakers import evaluate as evaluate_breakers
from orchestrator.service.dead_letters import DeadLetterRecorder
from orchestrator.service.transitions import apply_event
from orchestrator.storage import inbox
from orchestrator.storage.breakers import BreakerBoard
from orchestrator.storage.database import create_engine, transaction
from orchestrator.storage.outbox import Relay
from orchestrator.storage.tables import instances, timers
from orchestrator.storage.wakeup import TIMERS_CHANNEL, Listener

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from orchestrator.config import Settings
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.storage.outbox import PendingRow

log = logging.getLogger(__name__)

INBOX_CONSUMER = "orchestrator"


class Orchestrator:
    def __init__(self, settings: Settings, *, engine: AsyncEngine | None = None) -> None:
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
        self.payloads = logs.PayloadLog(enabled=settings.log_payloads, redact=settings.log_redact)
        self.consumer = Consumer(
            self.broker,
            self.topology.declare_orchestrator,
            envelopes(self.handle),
            prefetch=settings.prefetch,
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
        await self.dead_letters.start()
        interval = self.settings.sweep_interval_seconds
        background = [
            asyncio.create_task(self.relay.run_sweeper(stopping, interval_seconds=interval)),
            asyncio.create_task(self._run_timers(stopping, interval)),
            asyncio.create_task(self._run_breakers(stopping, interval)),
        ]
        log.info("orchestrator consuming %s", self.topology.orchestrator_queue)
        try:
            await stopping.wait()
        finally:
            grace = self.settings.shutdown_grace_seconds
            await asyncio.gather(self.consumer.stop(grace), self.dead_letters.stop(grace))
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.broker.close()
            await self.engine.dispose()

    # ---- replies ------------------------------------------------------------------------------

    async def handle(self, message: Envelope) -> None:
        if not isinstance(message, Reply):
            raise MessageError(f"orchestrators take replies, not {type(message).__name__.lower()}s")
        with logs.bind(
            saga=message.saga,
            instance_id=message.instance_id,
            step=message.step,
            phase=message.phase.value,
            attempt=message.attempt,
        ):
            self.payloads.log(log, "reply received", message.payload)
            await self._apply_reply(message)

    async def _apply_reply(self, message: Reply) -> None:
        pending: list[PendingRow] = []
        async with transaction(self.engine) as conn:
            if not await inbox.claim(conn, INBOX_CONSUMER, message.id):
                metrics.inbox_duplicates.labels(INBOX_CONSUMER).inc()
                log.info("duplicate reply %s dropped", message.id)
                return
            event = StepReply(
                step=message.step,
                phase=message.phase,
                attempt=message.attempt,
                ok=message.payload.ok,
                result=message.payload.result,
                failure=message.payload.failure,
            )
            transition, pending = await apply_event(
                conn,
                self.definitions,
                self.topology,
                message.instance_id,
                event,
                causation_id=message.id,
                traceparent=message.traceparent,
            )
        metrics.observe_transition(transition)
        crash_point("orchestrator.after_commit")
        await self.relay.publish_committed(pending)

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
                await listener.wait(pause)
        finally:
            await listener.stop()

    async def _held_pool(self, conn: AsyncConnection, timer: Any) -> str | None:
        """The pool of this timer's step phase, if its breaker holds its commands now."""
        await self.breakers.refresh(conn)
        held = self.breakers.held()
        if not held:
            return None
        saga = (
            await conn.execute(
                select(instances.c.saga_name, instances.c.saga_version).where(
                    instances.c.id == timer.instance_id
                )
            )
        ).first()
        if saga is None:
            return None
        definition = await self.definitions.get(conn, saga.saga_name, saga.saga_version)
        step = next((s for s in definition.steps if s.name == timer.step), None)
        if step is None:
            return None
        forward = timer.phase == Phase.FORWARD.value
        pool = step.pool if forward or step.compensation is None else step.compensation_pool
        return pool if pool in held else None

    async def _run_breakers(self, stopping: asyncio.Event, interval: float) -> None:
        while not stopping.is_set():
            try:
                async with transaction(self.engine) as conn:
                    await evaluate_breakers(conn, self.settings, utcnow())
            except WarrenError as exc:
                log.warning("circuit breaker evaluation failed, will try again: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)

    async def _seconds_to_next_timer(self) -> float:
        async with transaction(self.engine) as conn:
            due = await conn.scalar(select(func.min(timers.c.due_at)))
        if due is None:
            return float("inf")
        seconds: float = (due - utcnow()).total_seconds()
        return max(seconds, 0.0)

    async def fire_due_timer(self) -> bool:
        """Fire one due timer, if any; True when one was fired."""
        async with transaction(self.engine) as conn:
            row = (
                await conn.execute(
                    select(timers)
                    .where(timers.c.due_at <= utcnow())
                    .order_by(timers.c.due_at)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            ).first()
            if row is None:
                return False
            crash_point("orchestrator.timer_claimed")
            held = await self._held_pool(conn, row) if row.kind == TimerKind.TIMEOUT else None
            if held is not None:
                # Its command waits in the outbox behind an open breaker: the clock waits too.
                policy = self.settings.breaker_for(held)
                await conn.execute(
                    update(timers)
                    .where(timers.c.id == row.id)
                    .values(due_at=utcnow() + timedelta(seconds=policy.open_seconds))
                )
                return True
            event = TimerFired(
                kind=TimerKind(row.kind), step=row.step, phase=Phase(row.phase), attempt=row.attempt
            )
            transition, pending = await apply_event(
                conn,
                self.definitions,
                self.topology,
                row.instance_id,
                event,
                traceparent=row.traceparent,
                trace_parent=tracing.from_traceparent(row.traceparent),
            )
            await conn.execute(delete(timers).where(timers.c.id == row.id))
        metrics.observe_transition(transition)
        await self.relay.publish_committed(pending)
        return True
