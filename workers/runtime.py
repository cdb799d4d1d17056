"""The worker process: consume a pool's commands, run handlers, reply exactly once.

One transaction per command (DESIGN.md, the core rule):

    BEGIN
      inbox   ← command id            (a redelivered copy stops here: ack, no effect)
      SAVEPOINT
        step_results ← idempotency key (a later attempt of a phase that already succeeded
                                        replays the stored result instead of running again)
        the handler's own writes       (ctx.session)
      RELEASE  (or ROLLBACK TO SAVEPOINT when the handler raised: its writes vanish)
      outbox  ← the reply
    COMMIT → publish the reply → ack the command
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.errors import MessageError, WarrenError
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.consumer import Consumer, envelopes
from orchestrator.messaging.envelope import Command, ReplyPayload, encode, reply_to
from orchestrator.messaging.failure import Failure
from orchestrator.messaging.faults import crash_point
from orchestrator.messaging.topology import REPLY_ROUTING_KEY
from orchestrator.observability import logs, metrics, tracing
from orchestrator.storage import inbox
from orchestrator.storage.database import create_engine, transaction_span, translate_errors
from orchestrator.storage.outbox import OutboxMessage, PendingRow, Relay, enqueue
from orchestrator.storage.tables import step_results
from workers.app import StepContext, StepFailed

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from orchestrator.config import Settings
    from orchestrator.messaging.envelope import Envelope
    from workers.app import HandlerSpec, Worker

log = logging.getLogger(__name__)


class WorkerRunner:
    def __init__(
        self,
        app: Worker,
        settings: Settings,
        *,
        pools: list[str] | None = None,
        concurrency: int = 8,
    ) -> None:
        self.app = app
        self.settings = settings
        self.topology = settings.topology
        self.pools = pools or app.pools
        unknown = sorted(set(self.pools) - set(app.pools))
        if unknown:
            raise WarrenError(
                f"worker app {app.name!r} has no handlers for pool(s) {', '.join(unknown)}; "
                f"it serves: {', '.join(app.pools) or 'nothing'}"
            )
        self.concurrency = concurrency
        self.payloads = logs.PayloadLog(enabled=settings.log_payloads, redact=settings.log_redact)
        self.broker = Broker(settings.amqp_url, self.topology)
        self.engine: AsyncEngine | None = None
        if app.needs_database(self.pools):
            self.engine = create_engine(settings.business_database_url, pool_size=concurrency)
        self.relay = (
            Relay(self.engine, self.broker, grace_seconds=settings.outbox_grace_seconds)
            if self.engine is not None
            else None
        )
        self.consumers = [
            Consumer(
                self.broker,
                partial(self.topology.declare_pool, pool=pool),
                envelopes(partial(self.handle, pool)),
                prefetch=concurrency,
            )
            for pool in self.pools
        ]

    async def run(self, stopping: asyncio.Event) -> None:
        await self.broker.connect()
        if self.engine is not None:
            for hook in self.app.startup_hooks:
                await hook(self.engine)
        for consumer in self.consumers:
            await consumer.start()
        background: list[asyncio.Task[None]] = []
        if self.relay is not None:
            interval = self.settings.sweep_interval_seconds
            background.append(
                asyncio.create_task(self.relay.run_sweeper(stopping, interval_seconds=interval))
            )
        log.info("worker %r serving pools %s", self.app.name, ", ".join(self.pools))
        try:
            await stopping.wait()
        finally:
            # Stop taking commands, finish those in hand, then close: unacked ones go back.
            await asyncio.gather(
                *(c.stop(self.settings.shutdown_grace_seconds) for c in self.consumers)
            )
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.broker.close()
            if self.engine is not None:
                await self.engine.dispose()

    async def handle(self, pool: str, message: Envelope) -> None:
        if not isinstance(message, Command):
            raise MessageError(f"worker pools take commands, not {type(message).__name__.lower()}s")
        with logs.bind(
            saga=message.saga,
            instance_id=message.instance_id,
            step=message.step,
            phase=message.phase.value,
            attempt=message.attempt,
        ):
            self.payloads.log(log, "command received", message.payload)
            started = time.perf_counter()
            outcome = "error"
            try:
                outcome = await self._handle_command(pool, message)
            finally:
                metrics.step_duration.labels(
                    message.saga, message.step, pool, message.phase.value, outcome
                ).observe(time.perf_counter() - started)

    async def _handle_command(self, pool: str, message: Command) -> str:
        """Run the command's handler and reply; return the outcome for the metrics."""
        spec = self.app.lookup(pool, message.command)
        if spec is None:
            # Likely a deploy in progress: retryable, so a newer worker may pick it up.
            failure = Failure(
                type="UnknownCommand",
                message=f"no handler for {message.command!r} on pool {pool!r}",
                retryable=True,
            )
            await self._reply_directly(message, ReplyPayload(ok=False, failure=failure))
            return "unknown_command"
        if spec.transactional and self.engine is not None:
            outcome, pending = await self._run_transactional(pool, spec, message, self.engine)
            crash_point("worker.after_commit")
            assert self.relay is not None
            await self.relay.publish_committed(pending)
            return outcome
        payload = await _run_handler(spec, _context(message, None), pool)
        await self._reply_directly(message, payload)
        return _outcome(payload)

    async def _run_transactional(
        self, pool: str, spec: HandlerSpec, message: Command, engine: AsyncEngine
    ) -> tuple[str, list[PendingRow]]:
        with transaction_span(engine):
            return await self._transact(pool, spec, message, engine)

    async def _transact(
        self, pool: str, spec: HandlerSpec, message: Command, engine: AsyncEngine
    ) -> tuple[str, list[PendingRow]]:
        consumer = f"pool:{pool}"
        async with translate_errors(), AsyncSession(engine) as session, session.begin():
            conn = await session.connection()
            if not await inbox.claim(conn, consumer, message.id):
                metrics.inbox_duplicates.labels(consumer).inc()
                log.info("duplicate command %s dropped", message.id)
                return "duplicate", []
            key = message.payload.idempotency_key
            savepoint = await session.begin_nested()
            # Ask the session again: that emits the SAVEPOINT before the claim is written.
            conn = await session.connection()
            stored = await _claim_effect(conn, consumer, key)
            if stored is not None:
                await savepoint.commit()
                payload = ReplyPayload(ok=True, result=stored.result)
            else:
                payload = await _run_handler(spec, _context(message, session), pool)
                if payload.ok:
                    await session.flush()
                    await conn.execute(
                        update(step_results)
                        .where(
                            step_results.c.consumer == consumer,
                            step_results.c.idempotency_key == key,
                        )
                        .values(result=payload.result)
                    )
                    await savepoint.commit()
                else:
                    await savepoint.rollback()
            pending = await enqueue(conn, [self._reply_message(message, payload)])
            return _outcome(payload), pending

    async def _reply_directly(self, command: Command, payload: ReplyPayload) -> None:
        """At-least-once path (no database): publish the reply, confirmed, before the ack."""
        reply = self._reply_message(command, payload)
        await self.broker.publish(
            reply.exchange,
            reply.routing_key,
            reply.body,
            message_id=reply.message_id,
            headers=reply.headers,
        )

    def _reply_message(self, command: Command, payload: ReplyPayload) -> OutboxMessage:
        # The reply continues the trace from this worker's handling of the command.
        reply = reply_to(
            command, payload, traceparent=tracing.current_traceparent(command.traceparent)
        )
        return OutboxMessage(
            message_id=reply.id,
            exchange=self.topology.replies_exchange,
            routing_key=REPLY_ROUTING_KEY,
            body=encode(reply),
            headers={"traceparent": reply.traceparent} if reply.traceparent else {},
        )


class _StoredResult(msgspec.Struct, frozen=True):
    result: Any


async def _claim_effect(conn: AsyncConnection, consumer: str, key: str) -> _StoredResult | None:
    """Claim the right to apply this step phase's effect; None when claimed, else the stored
    result of the attempt that already applied it. A concurrent attempt waits on the key."""
    inserted = await conn.execute(
        insert(step_results)
        .values(consumer=consumer, idempotency_key=key)
        .on_conflict_do_nothing()
        .returning(step_results.c.idempotency_key)
    )
    if inserted.first() is not None:
        return None
    result = await conn.scalar(
        select(step_results.c.result).where(
            step_results.c.consumer == consumer, step_results.c.idempotency_key == key
        )
    )
    return _StoredResult(result)


def _context(message: Command, session: AsyncSession | None) -> StepContext:
    return StepContext(
        instance_id=message.instance_id,
        saga=message.saga,
        saga_version=message.saga_version,
        step=message.step,
        command=message.command,
        phase=message.phase,
        attempt=message.attempt,
        input=message.payload.input,
        results=message.payload.results,
        idempotency_key=message.payload.idempotency_key,
        message_id=message.id,
        correlation_id=message.correlation_id,
        db=session,
    )


def _outcome(payload: ReplyPayload) -> str:
    if payload.ok:
        return "succeeded"
    return "failed" if payload.failure is None or payload.failure.retryable else "failed_for_good"


async def _run_handler(spec: HandlerSpec, ctx: StepContext, pool: str) -> ReplyPayload:
    """Run the user's handler in a span of its own (theirs nest inside) and turn its outcome
    into a reply: failures travel as data."""
    kind = "step" if ctx.phase == "forward" else "compensation"
    with tracing.span(
        f"{kind} {ctx.command}",
        attributes=tracing.saga_attributes(
            saga=ctx.saga,
            version=ctx.saga_version,
            instance_id=ctx.instance_id,
            step=ctx.step,
            phase=ctx.phase.value,
            attempt=ctx.attempt,
            pool=pool,
        ),
    ) as span:
        try:
            result = await spec.fn(ctx)
            msgspec.json.encode(result)  # the result must travel as JSON
        except StepFailed as exc:
            span.record_exception(exc)
            tracing.mark_error(span, f"{exc.type}: {exc.message}")
            return ReplyPayload(
                ok=False, failure=Failure(type=exc.type, message=exc.message, retryable=False)
            )
        except Exception as exc:
            span.record_exception(exc)
            tracing.mark_error(span, f"{type(exc).__name__}: {exc}")
            log.exception("handler for %s failed (attempt %d)", spec.command, ctx.attempt)
            return ReplyPayload(ok=False, failure=Failure.from_exception(exc, retryable=True))
        return ReplyPayload(ok=True, result=result)
