"""Consumers come back after a lost broker connection (found by the chaos run, seed 7).

On a private RabbitMQ node behind our proxy: the shared server's connections are never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, TypeVar

import pytest

from orchestrator.messaging.broker import Broker
from orchestrator.messaging.consumer import Consumer
from orchestrator.messaging.topology import Topology
from tests.chaos.proxy import FaultyProxy
from tests.chaos.servers import Cleanup, PrivateRabbitMQ
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

pytestmark = pytest.mark.e2e

T = TypeVar("T")


@pytest.fixture(scope="module")
def private_rabbit() -> Iterator[PrivateRabbitMQ]:
    cleanup = Cleanup()
    try:
        rabbit = PrivateRabbitMQ(cleanup)
        rabbit.start()
        yield rabbit
    finally:
        cleanup.run()


@pytest.fixture
async def proxy(private_rabbit: PrivateRabbitMQ) -> AsyncIterator[FaultyProxy]:
    proxy = FaultyProxy("amqp", private_rabbit.port)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.mark.timeout(120)
async def test_the_dead_letter_consumer_is_restored_after_a_reconnect(
    proxy: FaultyProxy, private_rabbit: PrivateRabbitMQ
) -> None:
    topology = Topology(namespace="reconnect")
    broker = Broker(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", topology)
    await broker.connect()
    seen: list[str | None] = []

    async def record(message: AbstractIncomingMessage) -> None:
        seen.append(message.message_id)

    consumer = Consumer(broker, topology.declare_dead_letters, record, prefetch=4)
    await consumer.start()

    async def consumers() -> int:
        queues = await asyncio.to_thread(private_rabbit.list_queues)
        return queues.get(topology.dead_letter_queue, (0, 0, 0))[2]

    try:
        await wait_for(consumers, lambda n: n == 1, timeout=20, what="the consumer")
        accepted = proxy.connections_accepted
        proxy.reset()  # the connection is lost; aio-pika reconnects and restores consumers

        async def reconnected() -> bool:
            return proxy.connections_accepted > accepted and bool(proxy.links)

        await wait_for(reconnected, timeout=30, what="a new connection")
        await wait_for(consumers, lambda n: n == 1, timeout=30, what="the consumer to come back")
        await broker.publish_dead_letter(b"x", message_id="after-reconnect", headers={})
        await wait_for(lambda: _now(seen), timeout=30, what="the message after the reconnect")
        assert seen == ["after-reconnect"]
    finally:
        await consumer.stop(1.0)
        await broker.close()


@pytest.mark.timeout(120)
async def test_a_consumer_started_while_the_connection_is_down_subscribes_once_it_is_back(
    proxy: FaultyProxy, private_rabbit: PrivateRabbitMQ
) -> None:
    """A process (re)starting its consumers just as the connection is reset waits for aio-pika
    to reconnect instead of stopping (found by the chaos run: a worker restarted just before an
    AMQP reset exited with 'cannot open a channel')."""
    topology = Topology(namespace="late-start")
    broker = Broker(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", topology)
    await broker.connect()
    seen: list[str | None] = []

    async def record(message: AbstractIncomingMessage) -> None:
        seen.append(message.message_id)

    consumer = Consumer(broker, topology.declare_dead_letters, record, prefetch=4)
    try:
        proxy.reset()
        await wait_for(
            lambda: _now(not broker.connection.connected.is_set()),
            timeout=30,
            what="the client to notice the reset",
        )
        await consumer.start()  # before the fix: BrokerError, the channel could not open

        async def consumers() -> int:
            queues = await asyncio.to_thread(private_rabbit.list_queues)
            return queues.get(topology.dead_letter_queue, (0, 0, 0))[2]

        await wait_for(consumers, lambda n: n >= 1, timeout=30, what="the consumer")
        await broker.publish_dead_letter(b"x", message_id="after-start", headers={})
        await wait_for(lambda: _now(seen), timeout=30, what="the message")
        assert seen == ["after-start"]
        assert await consumers() == 1  # the failed try left no second subscription behind
    finally:
        await consumer.stop(1.0)
        await broker.close()


async def _now(value: T) -> T:
    return value
