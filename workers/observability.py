"""The built-in middlewares of the worker runtime: tracing, logs and metrics.

`Tracing` opens each handler call's span, outermost in the app's handler chain
(`workers.runtime.handler_chain`). `MessageSpans`, `Logs` and `Metrics` run around the whole
handling of each command (`CommandCall`), handler or not: a replayed result and an unknown
command are logged and measured too. Loaded by the runtime only: ``import workers`` stays free
of the server libraries.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeAlias

import msgspec
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.messaging.consumer import message_span
from orchestrator.messaging.envelope import Command
from orchestrator.observability import logs, metrics, tracing
from orchestrator.observability.middleware import Next
from orchestrator.persistence import step_results
from orchestrator.persistence.outbox import OutboxMessage, PendingRow
from workers.app import HandlerSpec
from workers.middleware import HandlerCall, HandlerOutcome, NextHandler, log

if TYPE_CHECKING:
    from collections.abc import Callable


class Tracing:
    """Built in, outermost: the handler call's span (``step charge``, ``compensation
    refund``), with the saga's attributes; your spans, and your middlewares', nest inside."""

    async def __call__(self, call: HandlerCall, next: NextHandler, /) -> HandlerOutcome:
        ctx = call.ctx
        with tracing.span(
            f"{'step' if ctx.phase == 'forward' else 'compensation'} {ctx.command}",
            attributes=tracing.saga_attributes(
                saga=ctx.saga,
                version=ctx.saga_version,
                instance_id=ctx.instance_id,
                step=ctx.step,
                phase=ctx.phase.value,
                attempt=ctx.attempt,
                pool=call.pool,
            ),
        ) as span:
            try:
                outcome = await next(call)
            except Exception as exc:  # noqa: BLE001 - a middleware refused: the call failed
                outcome = HandlerOutcome.failed(exc, call)
            if outcome.exception is not None and outcome.failure is not None:
                span.record_exception(outcome.exception)
                tracing.mark_error(span, f"{outcome.failure.type}: {outcome.failure.message}")
            return outcome


# ---- the handling of a command (built in) -------------------------------------------------------
# Around the whole handling of one command, handler or not (a replayed result, an unknown
# command): what every command gets, whatever the app registered.


class CommandCall(msgspec.Struct, frozen=True, kw_only=True):
    """One command being handled by the worker runtime."""

    command: Command
    pool: str
    spec: HandlerSpec | None
    """Its handler here; None when the app has none."""
    session: AsyncSession | None = None
    """The batch's transaction, for a transactional handler."""
    effects: step_results.Effects | None = None
    """The batch's claims of step phases, and where the handling puts what to settle."""
    replies: list[OutboxMessage] | None = None
    """Where a transactional handling puts the reply, to be written with the batch."""
    events: list[PendingRow] | None = None
    """Where a transactional handling puts the events its handler wrote, to be published after
    the batch commits."""
    delivery: AbstractIncomingMessage | None = None
    """In a batch: the message, whose consumer span `MessageSpans` opens (alone: the consumer
    opened it, and the runtime's chain has no `MessageSpans`)."""


NextCommand: TypeAlias = Next[CommandCall, str]
"""Returns the outcome's metric label: succeeded, failed, failed_for_good, unknown_command."""


class MessageSpans:
    """The consumer span of each command of a batch: a child of the span that sent it."""

    def __init__(self, queue: Callable[[str], str]) -> None:
        self.queue = queue

    async def __call__(self, call: CommandCall, next: NextCommand, /) -> str:
        assert call.delivery is not None
        with message_span(call.delivery, self.queue(call.pool)):
            return await next(call)


class Logs:
    """The command's saga fields on every log line written while it is handled, and its
    payload (when `WARREN_LOG_PAYLOADS` asks for it)."""

    def __init__(self, payloads: logs.PayloadLog) -> None:
        self.payloads = payloads

    async def __call__(self, call: CommandCall, next: NextCommand, /) -> str:
        command = call.command
        with logs.bind(
            saga=command.saga,
            instance_id=command.instance_id,
            step=command.step,
            phase=command.phase.value,
            attempt=command.attempt,
        ):
            self.payloads.log(log, "command received", command.payload)
            return await next(call)


class Metrics:
    """The handling's duration, by outcome (``error`` when it raised)."""

    async def __call__(self, call: CommandCall, next: NextCommand, /) -> str:
        outcome = "error"
        started = time.perf_counter()
        try:
            outcome = await next(call)
            return outcome
        finally:
            command = call.command
            metrics.step_duration.labels(
                command.saga, command.step, call.pool, command.phase.value, outcome
            ).observe(time.perf_counter() - started)
