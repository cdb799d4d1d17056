"""The shared consumer on a real queue: what happens to a message whose handler has a bug, or
that cannot be parked yet, how batches handled in two lanes are acknowledged, and that a batch
held up holds up no message that arrives after it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from orchestrator.config import Settings
from orchestrator.errors import BrokerError, MessageError
from orchestrator.messaging.broker import Broker
from orchestrator.messaging.consumer import Consumer
from tests.support.probes import Probe
from tests.support.publish import publish
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def _consuming(
    broker: Broker, settings: Settings, pool: str, handler: Callable[..., Awaitable[None]]
) -> AsyncIterator[Consumer]:
    """A consumer of `pool`'s queue, one message at a time, stopped (and `broker` closed)
    at the end."""
    await broker.connect()
    consumer = Consumer(
        broker, partial(settings.topology.declare_pool, pool=pool), handler, prefetch=1
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop(grace_seconds=5)
        await broker.close()


async def _sent_and_parked(settings: Settings, probe: Probe, pool: str, body: bytes) -> None:
    """Publish `body` to `pool`; return once the dead-letter queue holds it."""
    message = aio_pika.Message(body, message_id=f"{pool}-1")
    await publish(settings.amqp_url, settings.topology.commands_exchange, pool, message)

    async def parked() -> int:
        return (await probe.queue(settings.topology.dead_letter_queue))[0]

    await wait_for(parked, lambda n: n == 1, timeout=20, what="the message to be dead-lettered")


@pytest.mark.warren_settings(delivery_limit=2)
async def test_a_handler_bug_hands_the_message_back_until_the_delivery_limit_parks_it(
    settings: Settings, probe: Probe
) -> None:
    deliveries = 0

    async def buggy(message: AbstractIncomingMessage) -> None:
        nonlocal deliveries
        deliveries += 1
        raise RuntimeError("a bug in the handler")

    broker = Broker(settings.amqp_url, settings.topology)
    async with _consuming(broker, settings, "buggy", buggy) as consumer:
        await _sent_and_parked(settings, probe, "buggy", b"{}")

        assert deliveries == 3  # the first delivery and two redeliveries: the limit is 2
        assert (await probe.queue(settings.topology.pool_queue("buggy")))[0] == 0
        assert consumer.in_flight == 0  # nothing wedged


async def test_batches_are_acked_with_one_multiple_ack_only_when_no_lower_tag_is_in_hand(
    settings: Settings, probe: Probe
) -> None:
    """Two lanes: the first batch is held until every later message is handled, so the later
    batches cannot ack with `multiple` (a lower tag is in hand) and the first one can. Every
    message is acked once: nothing comes back when the channel closes."""
    broker = Broker(settings.amqp_url, settings.topology)
    await broker.connect()
    total = 40
    handled: list[str] = []
    first_batch: list[int] = []
    release = asyncio.Event()

    async def alone(message: AbstractIncomingMessage) -> None:
        handled.append(str(message.message_id))

    async def batch(messages: list[AbstractIncomingMessage]) -> None:
        if not first_batch:
            first_batch.append(len(messages))
            await release.wait()
        handled.extend(str(m.message_id) for m in messages)

    await settings.topology.declare_pool(await broker.channel(prefetch=1), "batched")
    for index in range(total):  # all waiting before the consumer starts: batches form
        message = aio_pika.Message(b"{}", message_id=f"m-{index}")
        await publish(settings.amqp_url, settings.topology.commands_exchange, "batched", message)
    consumer = Consumer(
        broker,
        partial(settings.topology.declare_pool, pool="batched"),
        alone,
        prefetch=total,
        handle_batch=batch,
        batch_size=8,
        lanes=2,
    )
    await consumer.start()
    try:
        await wait_for(
            lambda: _value(len(handled)),
            lambda n: n >= total - first_batch[0] if first_batch else False,
            timeout=30,
            what="every message but the first batch to be handled",
        )
        release.set()
        await wait_for(lambda: _value(consumer.in_flight), lambda n: n == 0, what="all settled")
    finally:
        await consumer.stop(grace_seconds=5)
        await broker.close()
    assert sorted(handled) == sorted(f"m-{index}" for index in range(total))
    # Closed with nothing unacked: nothing went back to the queue.
    assert (await probe.queue(settings.topology.pool_queue("batched")))[0] == 0


async def _value(value: int) -> int:
    return value


class _ParkingFailsOnce(Broker):
    """The real broker, whose first dead-lettering fails as it does when the publisher's
    channel has just gone away (a broker restart, a closed connection)."""

    parks_tried = 0

    async def publish_dead_letter(
        self, body: bytes, *, message_id: str | None, headers: dict[str, Any]
    ) -> None:
        self.parks_tried += 1
        if self.parks_tried == 1:
            raise BrokerError(f"could not dead-letter message {message_id}: channel closed")
        await super().publish_dead_letter(body, message_id=message_id, headers=headers)


async def test_a_poison_message_that_cannot_be_parked_yet_is_handed_back_not_left_in_hand(
    settings: Settings, probe: Probe
) -> None:
    deliveries = 0

    async def refuses(message: AbstractIncomingMessage) -> None:
        nonlocal deliveries
        deliveries += 1
        raise MessageError("undecodable message: poison")

    broker = _ParkingFailsOnce(settings.amqp_url, settings.topology)
    async with _consuming(broker, settings, "poisoned", refuses) as consumer:
        await _sent_and_parked(settings, probe, "poisoned", b"poison")

        assert (deliveries, broker.parks_tried) == (2, 2)  # handed back once, parked the 2nd time
        assert (await probe.queue(settings.topology.pool_queue("poisoned")))[0] == 0
        assert consumer.in_flight == 0


async def test_a_batch_that_takes_long_holds_up_no_message_that_arrives_after_it(
    settings: Settings, probe: Probe
) -> None:
    """Two lanes: while the first batch is held, the messages published after it are handled
    by the other lane (an idle lane is woken for them), and all are acked in the end."""
    broker = Broker(settings.amqp_url, settings.topology)
    await broker.connect()
    later = 6
    held: list[str] = []
    handled: list[str] = []
    release = asyncio.Event()

    async def handle(messages: list[AbstractIncomingMessage]) -> None:
        ids = [str(m.message_id) for m in messages]
        if "first" in ids:
            held.extend(ids)
            await release.wait()
        handled.extend(ids)

    async def alone(message: AbstractIncomingMessage) -> None:
        await handle([message])

    consumer = Consumer(
        broker,
        partial(settings.topology.declare_pool, pool="lanes"),
        alone,
        prefetch=16,
        handle_batch=handle,
        batch_size=8,
        lanes=2,
    )
    await consumer.start()

    async def send(message_id: str) -> None:
        message = aio_pika.Message(b"{}", message_id=message_id)
        await publish(settings.amqp_url, settings.topology.commands_exchange, "lanes", message)

    try:
        await send("first")
        await wait_for(lambda: _value(len(held)), lambda n: n == 1, what="the first batch held")
        for index in range(later):
            await send(f"later-{index}")
        await wait_for(
            lambda: _value(len(handled)),
            lambda n: n == later,
            timeout=30,
            what="the later messages handled while the first batch is held",
        )
        assert held == ["first"]
        release.set()
        await wait_for(lambda: _value(consumer.in_flight), lambda n: n == 0, what="all settled")
    finally:
        release.set()
        await consumer.stop(grace_seconds=5)
        await broker.close()
    assert sorted(handled) == sorted(["first", *(f"later-{index}" for index in range(later))])
    assert (await probe.queue(settings.topology.pool_queue("lanes")))[0] == 0
