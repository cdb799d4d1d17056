"""Consuming one queue the same way on both sides.

Each delivery is decoded (poison is parked in the dead-letter queue with its reason, then acked),
handled by a callback that commits one transaction, and acked only after that. Transient
database or broker faults are retried in-process with backoff, bounded, so that a short outage
does not burn the queue's delivery limit. Any other error (a bug) hands the message back; if it
keeps failing, the queue's delivery limit dead-letters it, so no message is ever wedged.

With `handle_batch`, the messages that arrived while the previous batch was being handled are
taken together (up to `batch_size`, never waiting for more): one transaction, one round of
publisher confirms and one ack each for all of them. If a batch fails for any reason but a
transient one, its messages are handled one by one, so that one bad message costs only itself.

Stopping cancels the subscription first, lets the messages in hand finish, then closes the
channel (anything unacked goes back to the queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from aio_pika.abc import AbstractRobustChannel
from aio_pika.exceptions import AMQPError
from aiormq.exceptions import ChannelInvalidStateError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from orchestrator.errors import BrokerError, MessageError, WarrenError
from orchestrator.messaging.broker import close_quietly
from orchestrator.messaging.envelope import decode
from orchestrator.observability import metrics, tracing

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
    from opentelemetry.trace import Span

    from orchestrator.messaging.broker import Broker
    from orchestrator.messaging.envelope import Envelope

log = logging.getLogger(__name__)

T = TypeVar("T")


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, WarrenError) and exc.retryable


def envelopes(
    handle: Callable[[Envelope], Awaitable[None]],
) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    """Adapt an envelope handler: decode first (a `MessageError` makes the message poison)."""

    async def decode_then_handle(message: AbstractIncomingMessage) -> None:
        await handle(decode(message.body))

    return decode_then_handle


def envelope_batches(
    handle: Callable[[list[Delivery]], Awaitable[None]],
) -> Callable[[list[AbstractIncomingMessage]], Awaitable[None]]:
    """Adapt a batch handler: decode every message first (poison fails the batch, and the
    one-by-one path parks it)."""

    async def decode_then_handle(messages: list[AbstractIncomingMessage]) -> None:
        await handle([Delivery(m, decode(m.body)) for m in messages])

    return decode_then_handle


@dataclass(frozen=True, slots=True)
class Delivery:
    message: AbstractIncomingMessage
    envelope: Envelope


@contextlib.contextmanager
def message_span(message: AbstractIncomingMessage, queue: str) -> Iterator[Span]:
    """The consumer span of one message: a child of the span that published it."""
    with tracing.messaging_span("process", message, queue=queue) as span:
        yield span


class Consumer:
    """Consumes one queue with `handle(message)`; see the module docstring for the rules."""

    def __init__(
        self,
        broker: Broker,
        declare: Callable[[AbstractChannel], Awaitable[AbstractQueue]],
        handle: Callable[[AbstractIncomingMessage], Awaitable[None]],
        *,
        prefetch: int,
        retry_seconds: float = 60.0,
        handle_batch: Callable[[list[AbstractIncomingMessage]], Awaitable[None]] | None = None,
        batch_size: int = 1,
        lanes: int = 1,
    ) -> None:
        self.broker = broker
        self.declare = declare
        self.handle = handle
        self.prefetch = prefetch
        self.retry_seconds = retry_seconds
        self.handle_batch = handle_batch if batch_size > 1 else None
        self.batch_size = batch_size
        self.lanes = lanes
        """Batches handled at once (each its own transaction)."""
        self._arrived: list[AbstractIncomingMessage] = []
        self._has_arrived = asyncio.Event()
        self._channel_generation = 0
        """Counts the channels opened and closed: delivery tags start again on each channel."""
        self._unsettled: dict[int, tuple[int, int]] = {}
        """(channel generation, delivery tag) of each batched message in hand, by `id()`: a
        batch is acked with one multiple ack when no other message of its channel below its
        highest tag is in hand."""
        self._lanes: list[asyncio.Task[None]] = []
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queue_name(self) -> str:
        return self._queue.name if self._queue is not None else "?"

    async def start(self) -> None:
        """Declare the queue and subscribe, waiting out a connection lost meanwhile (the
        broker's set-up patience); a refusal or a longer outage is a `BrokerError`."""
        try:
            await self.broker.setting_up(self._subscribe)
        except (AMQPError, OSError, RuntimeError) as exc:
            raise BrokerError(f"cannot start consuming: {exc!r}") from exc
        if self.handle_batch is not None:
            self._lanes = [asyncio.create_task(self._run_lane()) for _ in range(self.lanes)]
        metrics.consumers.labels(self.queue_name).set(1)

    async def _subscribe(self) -> None:
        # A try that failed half-way left a channel open: close it, or aio-pika would restore
        # its declarations and subscription beside the new one.
        stale, self._channel, self._queue = self._channel, None, None
        await close_quietly(stale)
        channel = self._channel = await self.broker.channel(prefetch=self.prefetch)
        self._channel_generation += 1
        self._queue = await self.declare(channel)
        self._tag = await self._queue.consume(
            self._on_message if self.handle_batch is None else self._on_batched_message
        )
        # aio-pika restores the subscription after a reconnect: follow the channel's state.
        channel.close_callbacks.add(self._on_channel_closed)
        if isinstance(channel, AbstractRobustChannel):
            channel.reopen_callbacks.add(self._on_channel_reopened)

    def _on_channel_closed(self, *_: object) -> None:
        self._channel_generation += 1
        metrics.consumers.labels(self.queue_name).set(0)

    def _on_channel_reopened(self, *_: object) -> None:
        metrics.consumers.labels(self.queue_name).set(1)

    async def stop(self, grace_seconds: float) -> None:
        """Take no more messages, finish those in hand (up to `grace_seconds`), close."""
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except (AMQPError, OSError) as exc:
                log.warning("could not cancel the subscription cleanly: %s", exc)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace_seconds)
        except TimeoutError:
            log.warning(
                "%d messages still in hand after %.0fs; handing them back",
                self._in_flight,
                grace_seconds,
            )
        for lane in self._lanes:
            lane.cancel()
        if self._channel is not None and not self._channel.is_closed:
            if isinstance(self._channel, AbstractRobustChannel):
                self._channel.reopen_callbacks.discard(self._on_channel_reopened)
            await self._channel.close()
        metrics.consumers.labels(self.queue_name).set(0)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._in_flight += 1
        self._idle.clear()
        queue = self.queue_name
        metrics.in_flight.labels(queue).inc()
        try:
            await self._process_alone(message, queue)
        finally:
            self._settled(1)

    async def _process_alone(self, message: AbstractIncomingMessage, queue: str) -> None:
        with message_span(message, queue) as span:
            outcome = await self._process(message)
            if outcome != "acked":
                tracing.mark_error(span, f"message {outcome}")
        metrics.messages.labels(queue, outcome).inc()

    def _settled(self, count: int) -> None:
        metrics.in_flight.labels(self.queue_name).dec(count)
        self._in_flight -= count
        if self._in_flight == 0:
            self._idle.set()

    # ---- batches --------------------------------------------------------------------------------

    async def _on_batched_message(self, message: AbstractIncomingMessage) -> None:
        self._in_flight += 1
        self._idle.clear()
        metrics.in_flight.labels(self.queue_name).inc()
        self._unsettled[id(message)] = (self._channel_generation, _tag(message))
        self._arrived.append(message)
        self._has_arrived.set()

    async def _run_lane(self) -> None:
        """Take what has arrived (at least one message, at most `batch_size`), handle it."""
        while True:
            batch = await self._take()
            try:
                await self._process_batch(batch)
            except (AMQPError, ChannelInvalidStateError, OSError) as exc:
                # Settling failed (the channel went away): the broker redelivers them.
                log.warning("could not settle %d messages: %s", len(batch), exc)
            except Exception:
                log.exception("unexpected error settling %d messages", len(batch))
            finally:
                for message in batch:
                    self._unsettled.pop(id(message), None)
                self._settled(len(batch))

    async def _take(self) -> list[AbstractIncomingMessage]:
        """What has arrived, up to `batch_size` (never waiting for more). Every idle lane
        wakes when messages arrive, and the first to run takes them all: a burst delivered
        together makes one batch, not one per lane."""
        while not self._arrived:
            self._has_arrived.clear()
            await self._has_arrived.wait()
        batch = self._arrived[: self.batch_size]
        del self._arrived[: self.batch_size]
        return batch

    async def _process_batch(self, batch: list[AbstractIncomingMessage]) -> None:
        queue = self.queue_name
        if len(batch) == 1:
            await self._process_alone(batch[0], queue)
            return
        assert self.handle_batch is not None
        try:
            await self._retrying_transient(self.handle_batch, batch)
        except WarrenError as exc:
            if exc.retryable:
                log.error("giving %d messages back after repeated failures: %s", len(batch), exc)
                for message in batch:
                    await message.nack(requeue=True)
                metrics.messages.labels(queue, "requeued").inc(len(batch))
                return
            log.info("batch of %d failed (%s): handling them one by one", len(batch), exc)
            await self._one_by_one(batch, queue)
            return
        except Exception:
            log.exception("batch of %d failed: handling them one by one", len(batch))
            await self._one_by_one(batch, queue)
            return
        await self._ack_all(batch)
        metrics.messages.labels(queue, "acked").inc(len(batch))

    async def _ack_all(self, batch: list[AbstractIncomingMessage]) -> None:
        """One multiple ack for the whole batch when it covers exactly the messages in hand
        up to its highest tag (one frame, and one settlement in a quorum queue's log); else
        one ack each (another lane holds a lower tag, or the channel was reopened)."""
        held = {self._unsettled[id(m)] for m in batch}
        current = self._channel_generation
        top = max(batch, key=_tag)
        if all(generation == current for generation, _ in held) and all(
            delivery in held
            for delivery in self._unsettled.values()
            if delivery[0] == current and delivery[1] <= _tag(top)
        ):
            await top.ack(multiple=True)
            return
        for message in batch:
            await message.ack()

    async def _retrying_transient(
        self, handle: Callable[[T], Awaitable[None]], messages: T
    ) -> None:
        """Transient faults (a database or broker blip) are retried here, with backoff, for
        up to `retry_seconds`: a short outage does not burn the queue's delivery limit."""
        try:  # the first try without the retrying machinery: it costs on every message
            await handle(messages)
            return
        except WarrenError as exc:
            if not exc.retryable:
                raise
            log.info("transient failure, retrying with backoff: %s", exc)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=wait_exponential(multiplier=0.1, max=5.0),
            stop=stop_after_delay(self.retry_seconds),
            reraise=True,
        ):
            with attempt:
                await handle(messages)

    async def _one_by_one(self, batch: list[AbstractIncomingMessage], queue: str) -> None:
        for message in batch:
            await self._process_alone(message, queue)

    async def _process(self, message: AbstractIncomingMessage) -> str:
        """Handle, then settle the message; return how: acked, requeued or dead_lettered."""
        try:
            await self._retrying_transient(self.handle, message)
        except WarrenError as exc:
            if exc.retryable:
                log.error(
                    "giving message %s back after %.0fs of failures: %s",
                    message.message_id,
                    self.retry_seconds,
                    exc,
                )
                await message.nack(requeue=True)
                return "requeued"
            reason = str(exc) if isinstance(exc, MessageError) else f"{type(exc).__name__}: {exc}"
            try:
                await self._park(message, reason)
            except BrokerError as park_failed:
                # Not parked (the publisher's channel went away): hand it back, or it would
                # stay unacked on this live channel, never redelivered, never recorded.
                log.warning(
                    "could not dead-letter message %s, handing it back: %s",
                    message.message_id,
                    park_failed,
                )
                await message.nack(requeue=True)
                return "requeued"
            return "dead_lettered"
        except Exception:  # a bug must not wedge the message: hand it back
            # Redelivered; after the queue's delivery limit RabbitMQ dead-letters it.
            log.exception(
                "unexpected error handling message %s; handing it back", message.message_id
            )
            await message.nack(requeue=True)
            return "requeued"
        await message.ack()
        return "acked"

    async def _park(self, message: AbstractIncomingMessage, reason: str) -> None:
        """Dead-letter a message that can never succeed, with its reason and origin; ack it."""
        log.error(
            "dead-lettering message %s from %s: %s", message.message_id, message.routing_key, reason
        )
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-warren-reason": reason[:1000],
                "x-warren-origin-exchange": message.exchange or "",
                "x-warren-origin-routing-key": message.routing_key or "",
                "x-warren-origin-queue": self.queue_name,
            }
        )
        await self.broker.publish_dead_letter(
            message.body, message_id=message.message_id, headers=headers
        )
        await message.ack()


def _tag(message: AbstractIncomingMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None  # a consumed message always has one
    return tag
