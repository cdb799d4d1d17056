"""The worker process: consume a pool's commands, run handlers, reply exactly once.

One transaction per command (docs/architecture.md, "One transaction per message"):

    BEGIN
      inbox ← command ids, step_results ← idempotency keys      (one statement for the batch:
          a redelivered copy stops here, no effect; a later attempt of a phase that already
          succeeded replays the stored result instead of running again)
      for each command: SAVEPOINT (only if its handler uses ctx.session)
          the handler's own writes (ctx.session)
        RELEASE (or ROLLBACK TO SAVEPOINT when the handler failed: its writes vanish)
      step_results ← results, outbox ← replies                  (one statement for the batch)
    COMMIT → publish the replies → ack the commands
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.errors import MessageError, WarrenError
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.consumer import Consumer, Delivery, envelope_batches, envelopes
from orchestrator.messaging.envelope import Command, ReplyPayload
from orchestrator.messaging.failure import Failure, FailureType
from orchestrator.messaging.faults import crash_point
from orchestrator.messaging.outgoing import reply_to
from orchestrator.messaging.relay import Relay
from orchestrator.messaging.versions import UPCASTERS, Upcasters, load_upcaster_modules
from orchestrator.observability import logs, metrics, tracing
from orchestrator.observability.middleware import Middleware, compose
from orchestrator.persistence import step_results
from orchestrator.storage.database import create_engine, transaction_span, translate_errors
from workers.app import StepContext
from workers.check import check, log_report, registered_sagas
from workers.middleware import HandlerCall, NextHandler, call_handler
from workers.observability import CommandCall, Logs, MessageSpans, Metrics, Tracing

if TYPE_CHECKING:
    from uuid import UUID

    from aio_pika.abc import AbstractIncomingMessage
    from sqlalchemy.ext.asyncio import AsyncEngine

    from orchestrator.config import Settings
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.messaging.topology import Topology
    from orchestrator.persistence.outbox import OutboxMessage, PendingRow
    from workers.app import HandlerSpec, Worker

log = logging.getLogger(__name__)

BATCHED_CONCURRENCY = 2
"""Transactions at once, by default, for a pool whose commands are batched: one commits while
the next is handled, and what arrives meanwhile waits for the next batch. More lanes split the
arrivals into more, smaller transactions (docs/performance.md, round four)."""
ONE_BY_ONE_CONCURRENCY = 8
"""Commands at once, by default, for a pool handled one command at a time (a handler that is
not transactional, or WARREN_BATCH_SIZE=1): such handlers usually wait on other systems."""


class WorkerRunner:
    def __init__(
        self,
        app: Worker,
        settings: Settings,
        *,
        pools: list[str] | None = None,
        concurrency: int | None = None,
        check_definitions: bool = True,
    ) -> None:
        load_upcaster_modules(settings.upcasters)
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
        self.check_definitions = check_definitions
        self.payloads = logs.PayloadLog(enabled=settings.log_payloads, redact=settings.log_redact)
        # Composed once: a command goes through the built-ins, its handler call through the
        # built-in span and the app's own middlewares (workers.middleware).
        observe: list[Middleware[CommandCall, str]] = [Logs(self.payloads), Metrics()]
        self.handle_command = compose(observe, self._handle_command)
        # In a batch, each command gets the consumer span that, alone, the consumer opens.
        self.handle_batched = compose(
            [MessageSpans(self.topology.pool_queue), *observe], self._handle_command
        )
        self.call_handler = handler_chain(app)
        self.broker = Broker(settings.amqp_url, self.topology)
        self.engine: AsyncEngine | None = None
        if app.needs_database(self.pools):
            self.engine = create_engine(
                settings.business_database_url, pool_size=concurrency or ONE_BY_ONE_CONCURRENCY
            )
        self.relay = (
            Relay(self.engine, self.broker, grace_seconds=settings.outbox_grace_seconds)
            if self.engine is not None
            else None
        )
        self.consumers = [self._consumer(pool) for pool in self.pools]

    def _consumer(self, pool: str) -> Consumer:
        batched = self._batchable(pool) and self.settings.batch_size > 1
        lanes = self.concurrency or (BATCHED_CONCURRENCY if batched else ONE_BY_ONE_CONCURRENCY)
        return Consumer(
            self.broker,
            partial(self.topology.declare_pool, pool=pool),
            envelopes(partial(self.handle, pool)),
            # In hand at most: a full batch, or one command per lane (one by one: the
            # prefetch is the concurrency).
            prefetch=max(lanes, self.settings.batch_size) if batched else lanes,
            handle_batch=envelope_batches(partial(self.handle_batch, pool)),
            batch_size=self.settings.batch_size if batched else 1,
            lanes=lanes,
        )

    def _batchable(self, pool: str) -> bool:
        """Batches need one transaction for all: every handler of the pool transactional."""
        return self.engine is not None and self.app.all_transactional(pool)

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
        if self.check_definitions:
            background.append(asyncio.create_task(self._check_definitions()))
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
            if self.relay is not None:
                await self.relay.flush()
            await self.broker.close()
            if self.engine is not None:
                await self.engine.dispose()

    async def _check_definitions(self) -> None:
        """Warn about commands of the registered sagas, on the pools served here, that this
        app cannot handle. In the background: a worker serves even when Warren's database is
        out of its reach."""
        try:
            sagas = await registered_sagas(self.settings.database_url)
        except WarrenError as exc:
            log.info("handlers not checked against the registered sagas: %s", exc.message)
            return
        log_report(check(sagas, self.app, pools=self.pools), log)

    async def handle(self, pool: str, message: Envelope) -> None:
        """One command (the consumer made its span)."""
        if not isinstance(message, Command):
            raise MessageError(f"worker pools take commands, not {type(message).__name__.lower()}s")
        message = in_current_shape(message)
        spec = self.app.lookup(pool, message.command)
        if spec is not None and spec.transactional and self.engine is not None:
            await self._run_transactional(pool, [(message, spec, None)], self.engine)
            return
        await self.handle_command(CommandCall(command=message, pool=pool, spec=spec))

    async def handle_batch(self, pool: str, deliveries: list[Delivery]) -> None:
        """Commands that arrived together, all for transactional handlers: one transaction
        (each handler in a savepoint of its own), one round of confirms for the replies."""
        batch: list[tuple[Command, HandlerSpec, AbstractIncomingMessage | None]] = []
        for delivery in deliveries:
            command = delivery.envelope
            if not isinstance(command, Command):
                raise MessageError("worker pools take commands only")
            command = in_current_shape(command)
            spec = self.app.lookup(pool, command.command)
            if spec is None or not spec.transactional or self.engine is None:
                raise _OneByOne(f"{command.command!r} is not a transactional handler here")
            batch.append((command, spec, delivery.message))
        assert self.engine is not None
        await self._run_transactional(pool, batch, self.engine)

    async def _handle_command(self, call: CommandCall) -> str:
        """The end of the command chain: its effect and its reply; returns the outcome."""
        if call.session is None:
            return await self._run_directly(call.pool, call.spec, call.command)
        assert call.spec is not None
        assert call.replies is not None
        assert call.effects is not None
        ctx = step_context(call.command, call.session, pool=call.pool, topology=self.topology)
        payload = await _apply_effect(call.session, ctx, call.spec, self.call_handler, call.effects)
        # Inside the command's span: the reply continues its trace.
        call.replies.append(self._reply_message(call.command, payload))
        if call.events is not None:
            call.events.extend(ctx.written)  # committed with the reply, or not at all
        return _outcome(payload)

    async def _run_directly(self, pool: str, spec: HandlerSpec | None, message: Command) -> str:
        """The at-least-once path: no handler here, or one that is not transactional."""
        if spec is None:
            # A deployment error: retrying would only hide it (for the 15 minutes of a
            # compensation's budget). The step fails now, visibly; `warren retry` resumes a
            # failed compensation once the handler is deployed.
            log.warning(
                "no handler for command %r on pool %r (saga %s v%d, step %r, %s, instance %s): "
                "worker app %r replies UnknownCommand and the %s fails; add "
                "@worker.handler(%r, pool=%r) and deploy it (`warren check` lists them all)",
                message.command,
                pool,
                message.saga,
                message.saga_version,
                message.step,
                message.phase.value,
                message.instance_id,
                self.app.name,
                "step" if message.phase == "forward" else "compensation",
                message.command,
                pool,
            )
            failure = Failure(
                type=FailureType.UNKNOWN_COMMAND,
                message=f"no handler for {message.command!r} on pool {pool!r} in worker app "
                f"{self.app.name!r}",
                retryable=False,
            )
            await self._reply_directly(message, ReplyPayload(ok=False, failure=failure))
            return "unknown_command"
        ctx = step_context(message, None, pool=pool, topology=self.topology)
        payload = await run_handler(spec, ctx, pool, self.call_handler)
        await self._reply_directly(message, payload)
        return _outcome(payload)

    async def _run_transactional(
        self,
        pool: str,
        batch: list[tuple[Command, HandlerSpec, AbstractIncomingMessage | None]],
        engine: AsyncEngine,
    ) -> None:
        """BEGIN, claim every command in the inbox, apply each one's effect, write the
        replies, COMMIT; then publish the replies."""
        consumer = f"pool:{pool}"
        keys: dict[UUID, str] = {}
        for command, _, _ in batch:
            keys[command.id] = command.payload.idempotency_key
        if len(set(keys.values())) < len(keys):
            # Two attempts of one step phase: the second must see what the first did.
            raise _OneByOne("two commands of the batch apply the same step phase")
        replies: list[OutboxMessage] = []
        events: list[PendingRow] = []  # written by the handlers (ctx.publish_event)
        assert self.relay is not None
        with transaction_span(engine), self.relay.forgetting() as published:
            async with translate_errors(), AsyncSession(engine) as session, session.begin():
                conn = await session.connection()
                effects = await step_results.claim(conn, consumer, keys)
                for command, spec, message in batch:
                    if command.id not in effects.fresh:
                        metrics.inbox_duplicates.labels(consumer).inc()
                        log.info("duplicate command %s dropped", command.id)
                        continue
                    effects.fresh.discard(command.id)  # a second copy is a duplicate too
                    await (self.handle_command if message is None else self.handle_batched)(
                        CommandCall(
                            command=command,
                            pool=pool,
                            spec=spec,
                            session=session,
                            effects=effects,
                            replies=replies,
                            events=events,
                            delivery=message,
                        )
                    )
                pending = await step_results.settle(
                    conn, consumer, effects, replies, forget=published
                )
        crash_point("worker.after_commit")
        await self.relay.publish_committed([*pending, *events])

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
        return reply_to(
            command,
            payload,
            self.topology,
            traceparent=tracing.current_traceparent(command.traceparent),
        )


async def _apply_effect(
    session: AsyncSession,
    ctx: StepContext,
    spec: HandlerSpec,
    chain: NextHandler,
    effects: step_results.Effects,
) -> ReplyPayload:
    """Run the handler of a step phase whose effect this batch claimed, in a savepoint (its
    writes, and the events it wrote in `ctx.written`, vanish if it fails), or replay the
    result an earlier attempt stored. The savepoint costs nothing when the handler does not
    use the session: SQLAlchemy sends SAVEPOINT with the first statement inside it."""
    key = ctx.idempotency_key
    if key not in effects.claimed:
        return ReplyPayload(ok=True, result=effects.stored.get(key))
    savepoint = await session.begin_nested()
    payload = await run_handler(spec, ctx, spec.pool, chain)
    if not payload.ok:
        await savepoint.rollback()
        ctx.written.clear()  # rolled back with the handler's other writes
        effects.released.append(key)
        return payload
    await session.flush()
    await savepoint.commit()
    effects.results[key] = payload.result
    return payload


def in_current_shape(command: Command, registry: Upcasters = UPCASTERS) -> Command:
    """`command` with its input upcast to the shape this worker's handlers know (chained,
    `orchestrator.messaging.versions`). `UnknownVersion` (a `MessageError`: dead-lettered with
    that reason) when it was written in a version newer than any known here.

    The command keeps the version it was sent in: its reply echoes that version to the
    orchestrator that wrote it, which knows it."""
    if command.payload_version == registry.current(command.command):
        return command
    data, _ = registry.upcast(command.command, command.payload_version, command.payload.input)
    return msgspec.structs.replace(
        command, payload=msgspec.structs.replace(command.payload, input=data)
    )


def step_context(
    message: Command,
    session: AsyncSession | None,
    *,
    pool: str | None = None,
    topology: Topology | None = None,
) -> StepContext:
    """What a handler sees of `message` (the test harness builds it the same way)."""
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
        pool=pool,
        topology=topology,
    )


def _outcome(payload: ReplyPayload) -> str:
    if payload.ok:
        return "succeeded"
    return "failed" if payload.failure is None or payload.failure.retryable else "failed_for_good"


def handler_chain(app: Worker) -> NextHandler:
    """The chain every handler call of `app` goes through: the built-in span, then the app's
    middlewares in the order they were registered, then the handler."""
    return compose([Tracing(), *app.middlewares], call_handler)


_BARE = compose([Tracing()], call_handler)


async def run_handler(
    spec: HandlerSpec, ctx: StepContext, pool: str, chain: NextHandler = _BARE
) -> ReplyPayload:
    """Run the user's handler through `chain` (its span, the app's middlewares) and turn its
    outcome into a reply: failures travel as data. The test harness runs handlers through it
    too."""
    outcome = await chain(HandlerCall(ctx=ctx, pool=pool, handler=spec.fn))
    return outcome.reply()


class _OneByOne(WarrenError):
    """This batch cannot go in one transaction: the consumer handles its commands singly."""
